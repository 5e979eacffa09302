# Helpers every benchmark uses inside its throw-away cluster (sourced by
# bench/lib/bench.sh, bench/scopes.sh and bench/ratelimit.sh): timing, the
# connection, waiting for the usage flush, server CPU, the flush interval.

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
say() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }

# --- Connection --------------------------------------------------------------
# pg_virtualenv hands us TCP to localhost.  As root we prefer the Unix socket
# (peer authentication as postgres): it takes the network stack out of every
# figure, which makes the ratios stricter, not looser.  BENCH_TCP=1 keeps TCP.
AS=()
CONN="TCP (localhost)"
if [ "$(id -u)" = 0 ] && [ "${BENCH_TCP:-0}" != 1 ]; then
	sockdir=$(psql -X -d postgres -Atc 'SHOW unix_socket_directories' | cut -d, -f1 | xargs)
	if [ -n "$sockdir" ] &&
		runuser -u postgres -- env PGHOST="$sockdir" psql -X -d postgres -Atc 'SELECT 1' >/dev/null 2>&1; then
		export PGHOST=$sockdir
		AS=(runuser -u postgres --)
		CONN="Unix socket ($sockdir)"
	fi
fi
q() { "${AS[@]}" psql -X -q -v ON_ERROR_STOP=1 "$@"; }
qv() { "${AS[@]}" psql -X -q -At -v ON_ERROR_STOP=1 -c "$1"; }

# --- Use recording -----------------------------------------------------------
pending() { qv "SELECT uses_pending FROM iapi_tokens.usage_stats()"; }
# wait_drained [TIMEOUT]: until the flush worker has applied every pending use
wait_drained() {
	local until=$(($(date +%s) + ${1:-120}))
	while [ "$(pending)" != 0 ]; do
		(($(date +%s) < until)) || { say "WARNING: uses still pending after ${1:-120}s"; return 0; }
		sleep 0.1
	done
}
uses_total() { qv "SELECT coalesce(sum(use_count), 0) FROM iapi_tokens.tokens"; }

# flush_every INTERVAL: the flush worker's interval, by reload.  A deferred
# test sets 1h for its pgbench run, so that verification is measured without
# the worker applying its uses on the same two cores meanwhile, and 1s after.
flush_every() {
	qv "ALTER SYSTEM SET iapi_tokens.usage_flush_interval = '$1'" >/dev/null
	qv "SELECT pg_reload_conf()" >/dev/null
	sleep 0.5
}

# --- Server CPU --------------------------------------------------------------
# CPU seconds of the server processes that exited: the postmaster's reaped
# children (the run's backends, the flush workers, autovacuum workers).
PM_PID=$(head -n 1 "$(qv 'SHOW data_directory')/postmaster.pid" 2>/dev/null || echo)
TICKS=$(getconf CLK_TCK)
server_cpu() {
	if [ -n "$PM_PID" ] && [ -r "/proc/$PM_PID/stat" ]; then
		# fields 16, 17 (cutime, cstime), counted after the ")" of comm
		sed 's/.*) //' "/proc/$PM_PID/stat" | awk -v t="$TICKS" '{ printf "%.2f", ($14 + $15) / t }'
	else
		echo 0
	fi
}
