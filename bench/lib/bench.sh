#!/usr/bin/env bash
# Runs inside the throw-away cluster that bench/run.sh starts with
# pg_virtualenv: loads the data, runs pgbench, prints and saves the report.
# It reports; it never fails on a timing or a ratio.  Run bench/run.sh, not
# this file.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)

: "${TOKENS:?run bench/run.sh}" "${DURATION:?}" "${ROUNDS:?}" "${CLIENTS:?}" \
  "${THREADS:?}" "${SETUP_JOBS:?}" "${FRESH:?}" "${OUT_DIR:?}"
SETUP_BATCH=${SETUP_BATCH:-5000}	# sources per generate_token statement
WARM_BATCH=${WARM_BATCH:-5000}		# tokens per warm-up statement
DB=iapi_bench

mkdir -p "$OUT_DIR"
RESULTS=$OUT_DIR/results.txt
RAW=$OUT_DIR/raw.tsv
LOG=$OUT_DIR/pgbench.log
EXPLAIN=$OUT_DIR/explain.txt
: >"$LOG"
printf 'test\tround\ttps\tlatency_ms\ttransactions\trows_written\tpgbench_rc\n' >"$RAW"

WORK=$(mktemp -d /tmp/iapi_bench.XXXXXX)
chmod 755 "$WORK"
trap 'rm -rf "$WORK"' EXIT

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

q -d postgres -c "CREATE DATABASE $DB"
export PGDATABASE=$DB

# --- Setup -------------------------------------------------------------------
SOURCES=$(((TOKENS + 1) / 2))
say "setup: $SOURCES sources, $TOKENS tokens through generate_token ($SETUP_JOBS workers)"
t_setup=$(now)
q -f "$BENCH_DIR/lib/schema.sql"

t=$(now)
q -c "INSERT INTO iapi_tokens.sources (id, name, display_name)
      SELECT g, 'bench_' || g, 'Bench source ' || g
        FROM generate_series(1, $SOURCES) g"
secs_sources=$(since "$t")

# Token i is the k-th (k = 1, 2) token of source s = (i + 1) / 2.  Batches go
# round-robin to the workers; each statement is its own transaction.
for ((w = 0; w < SETUP_JOBS; w++)); do : >"$WORK/gen_$w.sql"; done
b=0
for ((lo = 1; lo <= SOURCES; lo += SETUP_BATCH)); do
	hi=$((lo + SETUP_BATCH - 1 < SOURCES ? lo + SETUP_BATCH - 1 : SOURCES))
	cat >>"$WORK/gen_$((b % SETUP_JOBS)).sql" <<-EOF
	INSERT INTO bench.plain (i, token)
	SELECT 2 * (s - 1) + k, g.access_token
	  FROM generate_series($lo, $hi) s, generate_series(1, 2) k,
	       LATERAL iapi_tokens.generate_token(s) g
	 WHERE 2 * (s - 1) + k <= $TOKENS;
	EOF
	b=$((b + 1))
done
t=$(now)
pids=()
for ((w = 0; w < SETUP_JOBS; w++)); do
	q -f "$WORK/gen_$w.sql" &
	pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
secs_tokens=$(since "$t")
loaded=$(qv "SELECT count(*) FROM bench.plain")
[ "$loaded" = "$TOKENS" ] || { echo "setup: loaded $loaded tokens, expected $TOKENS" >&2; exit 1; }
gen_rate=$(awk -v n="$TOKENS" -v s="$secs_tokens" 'BEGIN { printf "%.0f", n / (s > 0 ? s : 1) }')

t=$(now)
q -c "ALTER TABLE bench.plain ADD PRIMARY KEY (i)"

# Fresh, empty sources for (e), ids contiguous after the loaded ones.  The
# default sizes them from the load rate: 1.5 times what (e) could use at the
# bulk rate (a single call per transaction is slower), and at least 200,000.
if [ "$FRESH" = auto ]; then
	FRESH=$(awk -v r="$gen_rate" -v d="$DURATION" -v n="$ROUNDS" \
		'BEGIN { f = 1.5 * r * d * n; if (f < 200000) f = 200000; printf "%d", f }')
fi
FRESH_FIRST=$((SOURCES + 1))
FRESH_LAST=$((SOURCES + FRESH))
q -c "INSERT INTO iapi_tokens.sources (id, name, display_name)
      SELECT g, 'fresh_' || g, 'Fresh source ' || g
        FROM generate_series($FRESH_FIRST, $FRESH_LAST) g" \
  -c "CREATE SEQUENCE bench.fresh_src AS bigint
        START WITH $FRESH_FIRST MINVALUE $FRESH_FIRST MAXVALUE $FRESH_LAST" \
  -c "SELECT setval('iapi_tokens.source_id_seq', $FRESH_LAST)" >/dev/null
secs_fresh=$(since "$t")

t=$(now)
q -c "VACUUM (ANALYZE)"
secs_vacuum=$(since "$t")
secs_setup=$(since "$t_setup")
say "setup done in ${secs_setup}s"

q >"$EXPLAIN" <<EOF
\\echo '-- (b) floor'
EXPLAIN (COSTS OFF) SELECT id, source_id, created_at, expires_at, last_used_at
  FROM iapi_tokens.tokens
 WHERE token_hash = sha256(convert_to((SELECT token FROM bench.plain WHERE i = 1), 'UTF8'))
   AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now());
\\echo '-- (c) the UPDATE inside bench.verify_plpgsql'
EXPLAIN (COSTS OFF) UPDATE iapi_tokens.tokens t SET last_used_at = now()
 WHERE t.token_hash = public.digest('x', 'sha256') AND t.revoked_at IS NULL
   AND (t.expires_at IS NULL OR t.expires_at > now())
RETURNING t.id;
\\echo '-- sizes'
SELECT c.oid::regclass AS relation, pg_size_pretty(pg_relation_size(c.oid)) AS size
  FROM pg_class c
 WHERE c.oid IN ('iapi_tokens.tokens'::regclass, 'iapi_tokens.tokens_token_hash_key'::regclass,
                 'iapi_tokens.sources'::regclass, 'bench.plain'::regclass, 'bench.plain_pkey'::regclass);
EOF

# --- Warm-up: verify every token once ----------------------------------------
# Each first verification writes last_used_at, so afterwards every token was
# used within last_used_interval and (a) measures the steady state.
say "warm-up: verifying all $TOKENS tokens once"
# bench.warm commits every 32 verifications; those commits need not wait for
# the disk.
for ((w = 0; w < SETUP_JOBS; w++)); do
	echo "SET synchronous_commit = off;" >"$WORK/warm_$w.sql"
done
b=0
for ((lo = 1; lo <= TOKENS; lo += WARM_BATCH)); do
	hi=$((lo + WARM_BATCH - 1))
	echo "CALL bench.warm($lo, $hi);" >>"$WORK/warm_$((b % SETUP_JOBS)).sql"
	b=$((b + 1))
done
t_warm=$(now)
pids=()
for ((w = 0; w < SETUP_JOBS; w++)); do
	"${AS[@]}" psql -X -q -At -v ON_ERROR_STOP=1 -f "$WORK/warm_$w.sql" >"$WORK/warm_$w.out" &
	pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
secs_warm=$(since "$t_warm")
verified=$(cat "$WORK"/warm_*.out | awk '{ s += $1 } END { print s + 0 }')
never_used=$(qv "SELECT count(*) FROM iapi_tokens.tokens WHERE last_used_at IS NULL")
t=$(now)
q -c "VACUUM (ANALYZE) iapi_tokens.tokens" -c "CHECKPOINT"
secs_warm_vacuum=$(since "$t")
warm_done=$(now)
say "warm-up done in ${secs_warm}s (+${secs_warm_vacuum}s vacuum and checkpoint)"

# --- Measurements ------------------------------------------------------------
writes() {
	qv "SELECT n_tup_ins + n_tup_upd FROM pg_stat_user_tables
	     WHERE relid = 'iapi_tokens.tokens'::regclass"
}

# run LABEL ROUND SCRIPT [PGOPTIONS]
run() {
	local label=$1 round=$2 script=$3 opts=${4:-} out rc w0 w1 tps lat xacts
	w0=$(writes)
	rc=0
	out=$(PGOPTIONS="$opts" "${AS[@]}" pgbench -n -M prepared -c "$CLIENTS" -j "$THREADS" \
		-T "$DURATION" -D n="$TOKENS" -f "$BENCH_DIR/scripts/$script" 2>&1) || rc=$?
	sleep 1		# backends flush their statistics as they exit
	w1=$(writes)
	{
		echo "### ($label) round $round: $script PGOPTIONS='$opts' exit=$rc"
		echo "$out"
		echo
	} >>"$LOG"
	tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' <<<"$out" | tail -n 1)
	lat=$(sed -n 's/^latency average = \([0-9.]*\) ms.*/\1/p' <<<"$out" | tail -n 1)
	xacts=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out" | tail -n 1)
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$round" "${tps:-0}" "${lat:-0}" \
		"${xacts:-0}" "$((w1 - w0))" "$rc" >>"$RAW"
	if [ "$rc" = 0 ]; then
		say "($label) round $round: ${tps:-?} tps"
	else
		say "($label) round $round: ${tps:-?} tps (pgbench exit $rc, see $LOG)"
	fi
}

# Every round runs every test, forwards in odd rounds and backwards in even
# ones, so that the runs a ratio compares are minutes apart at most and no
# test always runs first or last; the ratios are taken per round.  The
# starred tests repeat a writing one with synchronous_commit=off: the same
# work without waiting for the WAL flush, i.e. the CPU side of its cost.
# All runs of (a) must end within last_used_interval (10 minutes) of the
# warm-up; the report says how long after it the last one ended.
say "measuring: $ROUNDS rounds x 9 tests x ${DURATION}s, $CLIENTS clients"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
t_measure=$(now)
tests="d f b a a0 c a0s cs e"	# a0s, cs: printed as (a0*), (c*)
for ((r = 1; r <= ROUNDS; r++)); do
	if ((r % 2)); then order=$tests; else order=$(tr ' ' '\n' <<<"$tests" | tac | xargs); fi
	for x in $order; do
		case $x in
		d) run d "$r" select1.sql ;;
		f) run f "$r" lookup.sql ;;
		b) run b "$r" floor.sql ;;
		a)
			run a "$r" verify.sql
			secs_a_window=$(since "$warm_done")
			;;
		a0) run a0 "$r" verify.sql "-c iapi_tokens.last_used_interval=0" ;;
		c) run c "$r" plpgsql.sql ;;
		a0s) run a0s "$r" verify.sql "-c iapi_tokens.last_used_interval=0 -c synchronous_commit=off" ;;
		cs) run cs "$r" plpgsql.sql "-c synchronous_commit=off" ;;
		e) run e "$r" generate.sql ;;
		esac
	done
done
secs_measure=$(since "$t_measure")
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
fresh_used=$(qv "SELECT CASE WHEN is_called THEN last_value - $FRESH_FIRST + 1 ELSE 0 END FROM bench.fresh_src")

# --- Report ------------------------------------------------------------------
server_version=$(qv "SELECT version()")
settings=$(qv "SELECT string_agg(name || '=' || current_setting(name), ', ' ORDER BY name)
                 FROM pg_settings
                WHERE name IN ('shared_buffers', 'fsync', 'synchronous_commit', 'max_wal_size',
                               'autovacuum', 'iapi_tokens.last_used_interval')")
commit=$(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git -C "$REPO_DIR" status --porcelain -- src sql 2>/dev/null)" ]; then
	commit="$commit (src/ or sql/ modified)"
fi

report() {
	echo "iapi_tokens benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo
	echo "machine   : $(nproc) CPUs ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n 1)), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM"
	echo "load avg  : $load_before before measuring, $load_after after (1/5/15 min)"
	echo "server    : $server_version"
	echo "settings  : $settings"
	echo "extension : commit $commit"
	echo "pgbench   : -n -M prepared -c $CLIENTS -j $THREADS -T $DURATION, $ROUNDS rounds, over a $CONN"
	echo
	printf 'setup     : %ss total: %d sources in %ss, %d tokens through generate_token in %ss (%d/s, %d workers),\n' \
		"$secs_setup" "$SOURCES" "$secs_sources" "$TOKENS" "$secs_tokens" "$gen_rate" "$SETUP_JOBS"
	printf '            primary key + %d fresh sources in %ss, VACUUM ANALYZE in %ss\n' \
		"$FRESH" "$secs_fresh" "$secs_vacuum"
	printf 'warm-up   : %d of %d tokens verified in %ss (%d/s, every call writes last_used_at), %d never used;\n' \
		"$verified" "$TOKENS" "$secs_warm" \
		"$(awk -v n="$verified" -v s="$secs_warm" 'BEGIN { printf "%.0f", n / (s > 0 ? s : 1) }')" "$never_used"
	printf '            then VACUUM + CHECKPOINT in %ss; (a) finished %ss after the warm-up ended\n' \
		"$secs_warm_vacuum" "$secs_a_window"
	printf 'measuring : %ss\n' "$secs_measure"
	echo
	awk -F'\t' -v clients="$CLIENTS" '
		NR == 1 { next }
		{
			n[$1]++; tps[$1, $2] = $3; rounds[$2] = 1
			xacts[$1] += $5; wr[$1] += $6; if ($7 != 0) bad[$1]++
		}
		# median of v[1..m], which it sorts; sets LO and HI
		function median(v, m,    i, j, t) {
			for (i = 2; i <= m; i++)
				for (j = i; j > 1 && v[j - 1] > v[j]; j--) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
			LO = v[1]; HI = v[m]
			return (m % 2) ? v[(m + 1) / 2] : (v[m / 2] + v[m / 2 + 1]) / 2
		}
		function us(k) { return T[k] > 0 ? 1e6 * clients / T[k] : 0 }
		# the median over the rounds of x/y, each round its own pair
		function ratio(x, y, target, what,    r, m, v, med, name) {
			m = 0
			for (r in rounds)
				if (tps[x, r] > 0 && tps[y, r] > 0) v[++m] = tps[x, r] / tps[y, r]
			name = disp[x] "/" disp[y]
			if (m == 0) { printf "  %-7s n/a\n", name; return }
			med = median(v, m)
			printf "  %-7s = %5.2f  %-16s", name, med, sprintf("(%.2f .. %.2f)", LO, HI)
			if (target > 0)
				printf "  target >= %-3s %-15s %s\n", target,
					(med >= target) ? "met" : sprintf("MISSED by %.0f%%", 100 * (target - med) / target), what
			else
				printf "  %-29s %s\n", "", what
		}
		END {
			nk = split("a a0 a0s b c cs d e f", order, " ")
			for (i = 1; i <= nk; i++) disp[order[i]] = order[i]
			disp["a0s"] = "a0*"; disp["cs"] = "c*"
			desc["a"]   = "verify_token, steady state"
			desc["a0"]  = "verify_token, first use (interval=0)"
			desc["a0s"] = "  same, synchronous_commit=off"
			desc["b"]   = "floor: prepared plain SELECT"
			desc["c"]   = "PL/pgSQL + pgcrypto, UPDATE per call"
			desc["cs"]  = "  same, synchronous_commit=off"
			desc["d"]   = "SELECT 1"
			desc["e"]   = "generate_token, fresh source"
			desc["f"]   = "bare lookup (the shared subquery)"
			for (k in n) {
				m = 0
				for (r in rounds) if ((k, r) in tps) v[++m] = tps[k, r] + 0
				T[k] = median(v, m); TLO[k] = LO; THI[k] = HI
				delete v
			}
			printf "%-6s %-38s %9s %19s %8s %9s %7s\n", "", "test", "tps", "(min .. max)", "us/call", "vs (f) us", "writes"
			printf "%-6s %-38s %9s %19s %8s %9s %7s\n", "", "----", "---", "------------", "-------", "---------", "------"
			for (i = 1; i <= nk; i++) {
				k = order[i]
				if (!(k in n)) continue
				printf "%-6s %-38s %9.0f %19s %8.1f %+9.1f %7.3f%s\n", "(" disp[k] ")", desc[k], T[k],
					sprintf("(%.0f .. %.0f)", TLO[k], THI[k]), us(k), us(k) - us("f"),
					xacts[k] ? wr[k] / xacts[k] : 0,
					(k in bad) ? "  pgbench failed in " bad[k] " round(s), see pgbench.log" : ""
			}
			print ""
			print "ratios of tps, median over the rounds of each round'"'"'s own ratio (min .. max);"
			print "reported, never asserted:"
			ratio("a", "b",   0.9, "verify_token vs the plain SELECT floor")
			ratio("a", "c",   4,   "verify_token vs the hand-written PL/pgSQL")
			ratio("a", "cs",  0,   "the same, had (c) not waited for the WAL flush")
			ratio("a", "d",   0,   "verify_token vs SELECT 1")
			ratio("a0", "c",  0,   "a first use vs the hand-written PL/pgSQL")
			ratio("a0s", "cs", 0,  "the same without the WAL flush wait")
		}' "$RAW"
	echo
	echo "tps: median of the rounds; us/call: $CLIENTS clients / tps, i.e. the average time one"
	echo "client waits per call; vs (f) us: that minus the bare lookup's, i.e. what the test adds"
	echo "on top of fetching the plaintext; writes: rows inserted or updated in iapi_tokens.tokens"
	echo "per call (pg_stat_user_tables)."
	if [ "$fresh_used" -ge "$FRESH" ]; then
		echo "WARNING: (e) used all $FRESH fresh sources; its figure is cut short (raise FRESH)."
	else
		echo "(e) used $fresh_used of $FRESH fresh sources."
	fi
	if [ "$verified" != "$TOKENS" ]; then
		echo "WARNING: in the warm-up verify_token returned a row for $verified of $TOKENS valid tokens."
		echo "         Every token is real and unrevoked, so each missing row is a valid token that"
		echo "         verify_token rejected."
	fi
	if [ "$never_used" != 0 ]; then
		echo "WARNING: after the warm-up $never_used tokens have no last_used_at, so (a) is not a steady"
		echo "         state: those calls write."
	fi
	echo "raw figures: $RAW (a0s, cs there are (a0*), (c*) here)"
	echo "pgbench output: $LOG; plans and sizes: $EXPLAIN"
}

report | tee "$RESULTS"
