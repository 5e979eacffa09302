#!/usr/bin/env bash
# iapi_tokens benchmark: one command, one throw-away cluster.
#
#   bash bench/run.sh                          the real run: 1,000,000 tokens
#   TOKENS=20000 DURATION=3 ROUNDS=2 bash bench/run.sh     a quick check
#
# Assumes the extension is installed (make install).  Installs nothing itself,
# except postgresql-contrib when pgcrypto is missing.  Results go to
# bench/out/results.txt (git-ignored); see bench/README.md.  It reports
# figures and ratios and never fails on them.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

export TOKENS=${TOKENS:-1000000}	# active tokens, 2 per source
export STEADY=${STEADY:-$((TOKENS / 2))}	# tokens warmed up; the rest are never used before (a0)
export DURATION=${DURATION:-15}		# pgbench -T, seconds, for every test
export ROUNDS=${ROUNDS:-3}		# runs per test; the report shows the median
export CLIENTS=${CLIENTS:-2}		# pgbench -c
export THREADS=${THREADS:-$CLIENTS}	# pgbench -j
export HOT_CLIENTS=${HOT_CLIENTS:-4}	# pgbench -c and -j of (h) and (r)
export SETUP_JOBS=${SETUP_JOBS:-$(nproc)}	# parallel loaders
export FRESH=${FRESH:-auto}		# empty sources for (e); auto sizes from the load rate
export OUT_DIR=${OUT_DIR:-$BENCH_DIR/out}
PG_VERSION=${PG_VERSION:-15}
SHARED_BUFFERS=${SHARED_BUFFERS:-512MB}
FSYNC=${FSYNC:-on}			# on: durable commits, as in production (pg_virtualenv alone says off)

export PG_CONFIG=/usr/lib/postgresql/$PG_VERSION/bin/pg_config
[ -x "$PG_CONFIG" ] || { echo "PostgreSQL $PG_VERSION is not installed" >&2; exit 1; }
extdir=$("$PG_CONFIG" --sharedir)/extension
[ -f "$extdir/iapi_tokens.control" ] ||
	{ echo "iapi_tokens is not installed: run make install first" >&2; exit 1; }
if [ ! -f "$extdir/pgcrypto.control" ]; then
	echo "pgcrypto is missing; installing postgresql-contrib" >&2
	apt-get install -y postgresql-contrib
fi
if ((TOKENS < 2)); then echo "TOKENS must be at least 2" >&2; exit 1; fi
if ((STEADY < 1 || TOKENS - STEADY < ROUNDS * CLIENTS)); then
	echo "STEADY must leave at least ROUNDS x CLIENTS never-used tokens for (a0)" >&2
	exit 1
fi

# -t: a cluster in a temporary directory even as root, so that this never
# collides with another pg_virtualenv cluster (such as a test run's).
# checkpoint_timeout and max_wal_size keep checkpoints out of the measurements.
# shared_preload_libraries: verify_token records use in shared memory and the
# flush worker applies it, the design the benchmark measures.
# track_functions=pl: the time the flush worker spends in apply_usage().
# usage_buffer_size: room for a deferred run's uses (see (ad) in bench.sh).
exec pg_virtualenv -t -v "$PG_VERSION" \
	-o "shared_preload_libraries=iapi_tokens" \
	-o "iapi_tokens.usage_buffer_size=1048576" \
	-o "track_functions=pl" \
	-o "shared_buffers=$SHARED_BUFFERS" \
	-o "fsync=$FSYNC" \
	-o "max_wal_size=16GB" \
	-o "checkpoint_timeout=1h" \
	bash "$BENCH_DIR/lib/bench.sh"
