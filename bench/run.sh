#!/usr/bin/env bash
# iapi_tokens benchmark: one command, one throw-away cluster.
#
#   bash bench/run.sh                          the real run: 1,000,000 tokens
#   TOKENS=20000 DURATION=5 ROUNDS=1 bash bench/run.sh     a quick check
#
# Assumes the extension is installed (make install).  Installs nothing itself,
# except postgresql-contrib when pgcrypto is missing.  Results go to
# bench/out/results.txt (git-ignored); see bench/README.md.  It reports
# figures and ratios and never fails on them.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

export TOKENS=${TOKENS:-1000000}	# active tokens, 2 per source
export DURATION=${DURATION:-15}		# pgbench -T, seconds, for every test
export ROUNDS=${ROUNDS:-3}		# runs per test; the report shows the median
export CLIENTS=${CLIENTS:-2}		# pgbench -c
export THREADS=${THREADS:-$CLIENTS}	# pgbench -j
export SETUP_JOBS=${SETUP_JOBS:-$(nproc)}	# parallel loaders
export FRESH=${FRESH:-auto}		# empty sources for (e); auto sizes from the load rate
export OUT_DIR=${OUT_DIR:-$BENCH_DIR/out}
PG_VERSION=${PG_VERSION:-15}
SHARED_BUFFERS=${SHARED_BUFFERS:-512MB}
FSYNC=${FSYNC:-on}			# on: durable commits, as in production (pg_virtualenv alone says off)

PG_CONFIG=/usr/lib/postgresql/$PG_VERSION/bin/pg_config
[ -x "$PG_CONFIG" ] || { echo "PostgreSQL $PG_VERSION is not installed" >&2; exit 1; }
extdir=$("$PG_CONFIG" --sharedir)/extension
[ -f "$extdir/iapi_tokens.control" ] ||
	{ echo "iapi_tokens is not installed: run make install first" >&2; exit 1; }
if [ ! -f "$extdir/pgcrypto.control" ]; then
	echo "pgcrypto is missing; installing postgresql-contrib" >&2
	apt-get install -y postgresql-contrib
fi
if ((TOKENS < 2)); then echo "TOKENS must be at least 2" >&2; exit 1; fi

# -t: a cluster in a temporary directory even as root, so that this never
# collides with another pg_virtualenv cluster (such as a test run's).
# checkpoint_timeout and max_wal_size keep checkpoints out of the measurements.
exec pg_virtualenv -t -v "$PG_VERSION" \
	-o "shared_buffers=$SHARED_BUFFERS" \
	-o "fsync=$FSYNC" \
	-o "max_wal_size=16GB" \
	-o "checkpoint_timeout=1h" \
	bash "$BENCH_DIR/lib/bench.sh"
