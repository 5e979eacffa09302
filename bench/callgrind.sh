#!/usr/bin/env bash
# Instructions per call of verify_token and of its floor, counted by
# valgrind's callgrind in the backend that serves pgbench: the same figures
# every run, whatever else the machine is doing, where bench/run.sh's tps
# move by 10-30 % from run to run on a shared machine.
#
#   bash bench/callgrind.sh                 10,000 tokens, 1,000 and 3,000 calls
#   BASELINE=1.4 SCRIPTS="verify floor" bash bench/callgrind.sh
#
# Two databases of one cluster: one with the installed default version of
# the extension, one with BASELINE (default 1.5, made through the update
# scripts), both served by the installed library.  For each script of
# bench/scripts/ and each database, the server runs under callgrind twice,
# serving `pgbench -n -M prepared -c 1 -t N` for N = CALLS_LOW and CALLS_HIGH;
# a call costs the difference of the backend's totals over the difference
# of N, which takes out connection start and exit.  Assumes make install;
# writes bench/out/callgrind.txt and keeps the profiles in
# bench/out/callgrind/ for callgrind_annotate.  Reports, never asserts.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
TOKENS=${TOKENS:-10000}
CALLS_LOW=${CALLS_LOW:-1000}
CALLS_HIGH=${CALLS_HIGH:-3000}
SCRIPTS=${SCRIPTS:-verify floor}
BASELINE=${BASELINE:-1.5}
OUT_DIR=${OUT_DIR:-$BENCH_DIR/out}
BIN=$("$PG_CONFIG" --bindir)
PORT=${PORT:-54399}

command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 1; }
[ -f "$("$PG_CONFIG" --sharedir)/extension/iapi_tokens.control" ] ||
	{ echo "iapi_tokens is not installed: run make install first" >&2; exit 1; }

# PostgreSQL refuses to run as root.
AS=()
[ "$(id -u)" != 0 ] || AS=(runuser -u postgres --)
WORK=$(mktemp -d /tmp/iapi_callgrind.XXXXXX)
chmod 755 "$WORK"
[ "$(id -u)" != 0 ] || chown postgres "$WORK"
mkdir -p "$OUT_DIR/callgrind"
trap '"${AS[@]}" "$BIN/pg_ctl" -D "$WORK/data" -w stop -m immediate >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
say() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
q() { "${AS[@]}" psql -X -q -v ON_ERROR_STOP=1 -h "$WORK" -p "$PORT" "$@"; }

say "cluster in $WORK: $TOKENS tokens in each of databases current and baseline ($BASELINE)"
"${AS[@]}" "$BIN/initdb" -D "$WORK/data" -A trust >/dev/null
cat >>"$WORK/data/postgresql.conf" <<EOF
shared_preload_libraries = 'iapi_tokens'
listen_addresses = ''
unix_socket_directories = '$WORK'
port = $PORT
shared_buffers = 256MB
iapi_tokens.usage_flush_interval = '200ms'
EOF
"${AS[@]}" "$BIN/pg_ctl" -D "$WORK/data" -l "$WORK/server.log" -w start >/dev/null
for db in current baseline; do
	q -d postgres -c "CREATE DATABASE $db"
	version=""
	[ "$db" = current ] || version="VERSION '$BASELINE'"
	q -d "$db" >/dev/null <<EOF
SET client_min_messages = warning;
CREATE EXTENSION iapi_tokens $version;
CREATE SCHEMA bench;
INSERT INTO iapi_tokens.sources (id, name, display_name)
SELECT g, 'bench_' || g, 'Bench source ' || g FROM generate_series(1, ($TOKENS + 1) / 2) g;
CREATE TABLE bench.plain AS
SELECT 2 * (s - 1) + k AS i, g.access_token AS token
  FROM generate_series(1, ($TOKENS + 1) / 2) s, generate_series(1, 2) k,
	   LATERAL iapi_tokens.generate_token(s) g
 WHERE 2 * (s - 1) + k <= $TOKENS;
ALTER TABLE bench.plain ADD PRIMARY KEY (i);
-- Every token used once, so that the random calls are steady-state ones.
SELECT count(*) FROM bench.plain p, LATERAL iapi_tokens.verify_token(p.token) v;
EOF
	# Applied and vacuumed, so that every run reads the same pages.
	q -d "$db" -c "DO \$\$ BEGIN
		FOR i IN 1..600 LOOP
			EXIT WHEN (SELECT uses_pending FROM iapi_tokens.usage_stats()) = 0;
			PERFORM pg_sleep(0.1);
		END LOOP; END \$\$" -c "VACUUM ANALYZE" -c "CHECKPOINT" >/dev/null
	echo "$db: iapi_tokens $(q -d "$db" -At -c "SELECT extversion FROM pg_extension WHERE extname = 'iapi_tokens'")"
done >"$WORK/versions.txt"
"${AS[@]}" "$BIN/pg_ctl" -D "$WORK/data" -w stop >/dev/null

# backend_instructions DB SCRIPT CALLS: the largest total of the run's
# processes, which is the backend that served pgbench.
backend_instructions() {
	local db=$1 script=$2 calls=$3 profiles="$WORK/cg_${1}_${2}_$3"
	mkdir -p "$profiles"
	[ "$(id -u)" != 0 ] || chown postgres "$profiles"
	# No flush while pgbench runs: the figures are the backend's alone.
	"${AS[@]}" valgrind -q --tool=callgrind --callgrind-out-file="$profiles/%p.out" \
		"$BIN/postgres" -D "$WORK/data" -c iapi_tokens.usage_flush_interval=1h \
		>"$WORK/valgrind.log" 2>&1 &
	for _ in $(seq 120); do
		"$BIN/pg_isready" -q -h "$WORK" -p "$PORT" && break
		sleep 1
	done
	"${AS[@]}" "$BIN/pgbench" -n -M prepared -c 1 -t "$calls" -D n="$TOKENS" \
		-h "$WORK" -p "$PORT" -f "$BENCH_DIR/scripts/$script.sql" "$db" >"$WORK/pgbench.log" 2>&1 ||
		{ cat "$WORK/pgbench.log" >&2; exit 1; }
	"${AS[@]}" "$BIN/pg_ctl" -D "$WORK/data" -w stop -m fast >/dev/null
	wait
	local best="" most=0 total
	for f in "$profiles"/*.out; do
		total=$(sed -n 's/^totals: //p' "$f")
		if ((total > most)); then most=$total; best=$f; fi
	done
	cp "$best" "$OUT_DIR/callgrind/$db.$script.$calls.out"
	echo "$most"
}

{
	echo "iapi_tokens: instructions per call (valgrind --tool=callgrind), $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "extension : commit $(git -C "$BENCH_DIR" rev-parse --short HEAD 2>/dev/null || echo '?'); $("$BIN/postgres" --version)"
	sed 's/^/            /' "$WORK/versions.txt"
	echo "method    : pgbench -n -M prepared -c 1, -t $CALLS_LOW and -t $CALLS_HIGH, $TOKENS tokens, each used once before;"
	echo "            per call = (backend total at $CALLS_HIGH - at $CALLS_LOW) / $((CALLS_HIGH - CALLS_LOW))"
	echo
	printf '%-14s %12s %12s %16s\n' script current baseline current/baseline
} >"$OUT_DIR/callgrind.txt"
declare -A per_call
for s in $SCRIPTS; do
	for db in current baseline; do
		say "$db: $s, $CALLS_LOW and $CALLS_HIGH calls"
		low=$(backend_instructions "$db" "$s" "$CALLS_LOW")
		high=$(backend_instructions "$db" "$s" "$CALLS_HIGH")
		per_call[$db.$s]=$(((high - low) / (CALLS_HIGH - CALLS_LOW)))
	done
	awk -v s="$s" -v c="${per_call[current.$s]}" -v b="${per_call[baseline.$s]}" \
		'BEGIN { printf "%-14s %12d %12d %16.3f\n", s, c, b, c / b }' >>"$OUT_DIR/callgrind.txt"
done
if [ -n "${per_call[current.verify]:-}" ] && [ -n "${per_call[current.floor]:-}" ]; then
	for db in current baseline; do
		awk -v db="$db" -v v="${per_call[$db.verify]}" -v f="${per_call[$db.floor]}" \
			'BEGIN { printf "%-8s verify / floor instructions: %.3f (floor / verify, as a tps ratio: %.3f)\n", db, v / f, f / v }'
	done >>"$OUT_DIR/callgrind.txt"
fi
cat "$OUT_DIR/callgrind.txt"
