#!/usr/bin/env bash
# Runs inside the throw-away cluster that bench/run.sh starts with
# pg_virtualenv: loads the data, runs pgbench, prints and saves the report.
# It reports; it never fails on a timing or a ratio.  Run bench/run.sh, not
# this file.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)

: "${TOKENS:?run bench/run.sh}" "${STEADY:?}" "${DURATION:?}" "${ROUNDS:?}" "${CLIENTS:?}" \
  "${THREADS:?}" "${HOT_CLIENTS:?}" "${SETUP_JOBS:?}" "${FRESH:?}" "${OUT_DIR:?}"
SETUP_BATCH=${SETUP_BATCH:-5000}	# sources per generate_token statement
WARM_BATCH=${WARM_BATCH:-5000}		# tokens per warm-up CALL
DB=iapi_bench

mkdir -p "$OUT_DIR"
RESULTS=$OUT_DIR/results.txt
RAW=$OUT_DIR/raw.tsv
LOG=$OUT_DIR/pgbench.log
EXPLAIN=$OUT_DIR/explain.txt
: >"$LOG"
printf 'test\tround\tclients\ttps\tlatency_ms\ttransactions\tsecs\tserver_cpu_s\tpending_at_end\tdrain_s\tpgbench_rc\trows_written\trows_updated\thot_updates\twal_bytes\tapply_ms\tuses_applied\tuses_dropped\n' >"$RAW"

WORK=$(mktemp -d /tmp/iapi_bench.XXXXXX)
chmod 755 "$WORK"
trap 'rm -rf "$WORK"' EXIT

. "$BENCH_DIR/lib/common.sh"

# The commit and the library the server loaded at its start (a later commit
# or make install does not change what this run measures).
commit=$(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git -C "$REPO_DIR" status --porcelain -- src sql 2>/dev/null)" ]; then
	commit="$commit (src/ or sql/ modified)"
fi
libfile=$("${PG_CONFIG:-pg_config}" --pkglibdir 2>/dev/null || echo '$libdir')/iapi_tokens.so
libinfo="$libfile, installed $(date -u -r "$libfile" '+%Y-%m-%d %H:%M UTC' 2>/dev/null || echo '?')"

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

# --- Warm-up: verify the steady-state tokens once ----------------------------
# Tokens 1..STEADY are verified once each; STEADY+1..TOKENS stay never used,
# for (a0).  verify_token writes nothing itself: each use waits in shared
# memory until the flush worker applies it (bench.warm keeps the buffer under
# half full, so no use is dropped).  The warm-up then waits for the buffer
# to drain, checks that each warmed-up token got exactly one use, and
# VACUUMs away the row versions the flushes left, so that every test starts
# from a clean table; it also brings the tables and indexes into
# shared_buffers and checks verify_token accepts every token.
say "warm-up: verifying tokens 1..$STEADY once; $((TOKENS - STEADY)) stay never used"
preloaded=$(qv "SELECT preloaded FROM iapi_tokens.usage_stats()")
[ "$preloaded" = t ] || say "WARNING: iapi_tokens is not in shared_preload_libraries"
for ((w = 0; w < SETUP_JOBS; w++)); do : >"$WORK/warm_$w.sql"; done
b=0
for ((lo = 1; lo <= STEADY; lo += WARM_BATCH)); do
	hi=$((lo + WARM_BATCH - 1 < STEADY ? lo + WARM_BATCH - 1 : STEADY))
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
secs_warm_verify=$(since "$t_warm")
wait_drained
secs_warm=$(since "$t_warm")
verified=$(cat "$WORK"/warm_*.out | awk '{ s += $1 } END { print s + 0 }')
# used, their total use_count, never used
read -r warm_used warm_uses never_used < <(qv "SELECT count(*) FILTER (WHERE use_count > 0),
		coalesce(sum(use_count), 0), count(*) FILTER (WHERE use_count = 0)
	  FROM iapi_tokens.tokens" | tr '|' ' ')
warm_dropped=$(qv "SELECT uses_dropped FROM iapi_tokens.usage_stats()")
t=$(now)
q -c "VACUUM (ANALYZE) iapi_tokens.tokens" -c "CHECKPOINT"
secs_warm_vacuum=$(since "$t")
say "warm-up done in ${secs_warm}s (+${secs_warm_vacuum}s vacuum and checkpoint)"

# Every test starts with all of the lookup's pages in shared_buffers.  The
# warm-up read only the steady tokens' pages (VACUUM reads through a small
# ring), so without this (a0) would read the never-used tokens' pages from
# the kernel and (b), on warmed-up tokens, would not: (a0)/(b) would then
# measure the buffer cache, not the first use.
q -c "CREATE EXTENSION IF NOT EXISTS pg_prewarm" >/dev/null
read -r prewarm_mb buffers_mb < <(qv "SELECT (sum(pg_prewarm(c.oid)) * current_setting('block_size')::int / 1048576)::bigint,
		pg_size_bytes(current_setting('shared_buffers')) / 1048576
	  FROM pg_class c
	 WHERE c.oid IN ('iapi_tokens.tokens'::regclass, 'bench.plain'::regclass)
	    OR c.oid IN (SELECT indexrelid FROM pg_index
	                  WHERE indrelid IN ('iapi_tokens.tokens'::regclass, 'bench.plain'::regclass))" | tr '|' ' ')
say "prewarmed ${prewarm_mb} MB of tables and indexes into ${buffers_mb} MB of shared_buffers"
((prewarm_mb < buffers_mb * 9 / 10)) ||
	say "WARNING: the tables and indexes do not fit in shared_buffers; raise SHARED_BUFFERS"

# --- Measurements ------------------------------------------------------------
# The counters run() takes before and after a test, space-separated: rows
# inserted + updated, rows updated, of which HOT, WAL bytes, ms in
# apply_usage(), uses applied, uses dropped.
counters() {
	qv "SELECT concat_ws(' ', s.n_tup_ins + s.n_tup_upd, s.n_tup_upd, s.n_tup_hot_upd,
	                     pg_current_wal_insert_lsn() - '0/0',
	                     (SELECT round(coalesce(sum(f.total_time), 0))
	                        FROM pg_stat_user_functions f
	                       WHERE f.schemaname = 'iapi_tokens' AND f.funcname = 'apply_usage'),
	                     u.uses_applied, u.uses_dropped)
	      FROM pg_stat_user_tables s, iapi_tokens.usage_stats() u
	     WHERE s.relid = 'iapi_tokens.tokens'::regclass"
}

# run LABEL ROUND CLIENTS SCRIPT PGOPTIONS [pgbench arguments: -T or -t, -D ...]
# After pgbench, waits for the flush worker to apply the run's uses, so that
# none of them is left for the next test and the run's counters hold them.
run() {
	local label=$1 round=$2 clients=$3 script=$4 opts=$5 threads out rc
	local k0 k1 c0 c1 t0 secs pend t1 drain tps lat xacts
	shift 5
	threads=$THREADS
	[ "$clients" = "$CLIENTS" ] || threads=$clients
	k0=$(counters); c0=$(server_cpu)
	rc=0
	t0=$(now)
	out=$(PGOPTIONS="$opts" "${AS[@]}" pgbench -n -M prepared -c "$clients" -j "$threads" \
		"$@" -f "$BENCH_DIR/scripts/$script" 2>&1) || rc=$?
	secs=$(since "$t0")
	pend=$(pending)
	# A deferred test's flushes happen now, after pgbench: back to 1 s.
	[ -z "${DEFERRED:-}" ] || flush_every 1s
	t1=$(now)
	wait_drained 60
	drain=$(since "$t1")
	sleep 1		# backends and workers flush their statistics as they exit
	k1=$(counters); c1=$(server_cpu)
	{
		echo "### ($label) round $round: $script $* PGOPTIONS='$opts' exit=$rc"
		echo "$out"
		echo
	} >>"$LOG"
	tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' <<<"$out" | tail -n 1)
	lat=$(sed -n 's/^latency average = \([0-9.]*\) ms.*/\1/p' <<<"$out" | tail -n 1)
	xacts=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out" | tail -n 1)
	# the counters' differences, in counters()'s order
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
		"$label" "$round" "$clients" "${tps:-0}" "${lat:-0}" "${xacts:-0}" "$secs" \
		"$(awk -v a="$c0" -v b="$c1" 'BEGIN { printf "%.2f", b - a }')" "$pend" "$drain" "$rc" \
		"$(awk -v a="$k0" -v b="$k1" 'BEGIN {
			n = split(a, x, " "); split(b, y, " ")
			for (i = 1; i <= n; i++) printf "%s%.0f", (i > 1 ? "\t" : ""), y[i] - x[i] }')" >>"$RAW"
	if [ "$rc" = 0 ]; then
		say "($label) round $round: ${tps:-?} tps, $pend uses pending at the end, drained in ${drain}s"
	else
		say "($label) round $round: ${tps:-?} tps (pgbench exit $rc, see $LOG)"
	fi
}

# Before each test that a verify/floor ratio compares: the flush worker's
# dead row versions pruned (VACUUM), so that no test pays for the writes of
# the one before it: the test after a deferred flush (up to 300,000 row
# updates) otherwise prunes as it reads.  Before the tests that write
# nothing while they run, the dirty pages are written too (CHECKPOINT).  Not
# before (a) and (a0): their flushes would then write a full-page image at
# the first change of every page, a checkpoint's worst case, where a server
# checkpointing every 5 minutes writes one for a small share of its updates.
settle() {
	wait_drained 60
	qv "VACUUM iapi_tokens.tokens" >/dev/null
	[ "${1:-}" != checkpoint ] || qv "CHECKPOINT" >/dev/null
}

# Every round runs every test, forwards in odd rounds and backwards in even
# ones, so that the runs a ratio compares are minutes apart at most and no
# test always runs first or last; the ratios are taken per round.  The
# random tests draw from the warmed-up tokens (n = STEADY).  (a0) walks the
# never-used tokens, a fixed share of them per round and client (-t), so it
# never runs out; (h) and (r) use HOT_CLIENTS clients.
FIRST_PER_CLIENT=$(((TOKENS - STEADY) / (2 * ROUNDS * CLIENTS)))	# (a0) and (a0d)
tests="d f b a a0 ad b0 a0d h r c cs e"	# cs: printed as (c*)
say "measuring: $ROUNDS rounds x $(wc -w <<<"$tests") tests x ${DURATION}s ((a0): $FIRST_PER_CLIENT first uses per client)"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
uses_before=$(uses_total)
autovacuum_count() {
	qv "SELECT autovacuum_count FROM pg_stat_user_tables WHERE relid = 'iapi_tokens.tokens'::regclass"
}
autovacuums=$(autovacuum_count)
dropped_before=$(qv "SELECT uses_dropped FROM iapi_tokens.usage_stats()")
t_measure=$(now)
T=(-T "$DURATION" -D n="$STEADY")
for ((r = 1; r <= ROUNDS; r++)); do
	if ((r % 2)); then order=$tests; else order=$(tr ' ' '\n' <<<"$tests" | tac | xargs); fi
	for x in $order; do
		case $x in
		d) run d "$r" "$CLIENTS" select1.sql "" "${T[@]}" ;;
		f) run f "$r" "$CLIENTS" lookup.sql "" "${T[@]}" ;;
		b) settle checkpoint
			run b "$r" "$CLIENTS" floor.sql "" "${T[@]}" ;;
		a) settle
			run a "$r" "$CLIENTS" verify.sql "" "${T[@]}" ;;
		a0) settle
			run a0 "$r" "$CLIENTS" first_use.sql "" -t "$FIRST_PER_CLIENT" -D k=0 -D nclients="$CLIENTS" \
			-D first=$((STEADY + 1)) -D pool=$((TOKENS - STEADY)) -D offset=$(((2 * r - 2) * FIRST_PER_CLIENT * CLIENTS)) ;;
		ad) settle checkpoint
			flush_every 1h
			DEFERRED=1 run ad "$r" "$CLIENTS" verify.sql "" "${T[@]}" ;;
		b0) settle checkpoint
			run b0 "$r" "$CLIENTS" floor_first.sql "" -t "$FIRST_PER_CLIENT" -D k=0 -D nclients="$CLIENTS" \
			-D first=$((STEADY + 1)) -D pool=$((TOKENS - STEADY)) -D offset=$(((2 * r - 1) * FIRST_PER_CLIENT * CLIENTS)) ;;
		a0d) settle checkpoint
			flush_every 1h
			DEFERRED=1 run a0d "$r" "$CLIENTS" first_use.sql "" -t "$FIRST_PER_CLIENT" -D k=0 -D nclients="$CLIENTS" \
			-D first=$((STEADY + 1)) -D pool=$((TOKENS - STEADY)) -D offset=$(((2 * r - 1) * FIRST_PER_CLIENT * CLIENTS)) ;;
		h) run h "$r" "$HOT_CLIENTS" verify.sql "" -T "$DURATION" -D n=1 ;;
		r) run r "$r" "$HOT_CLIENTS" verify.sql "" "${T[@]}" ;;
		c) run c "$r" "$CLIENTS" plpgsql.sql "" "${T[@]}" ;;
		cs) run cs "$r" "$CLIENTS" plpgsql.sql "-c synchronous_commit=off" "${T[@]}" ;;
		e) run e "$r" "$CLIENTS" generate.sql "" "${T[@]}" ;;
		esac
	done
done
secs_measure=$(since "$t_measure")
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
fresh_used=$(qv "SELECT CASE WHEN is_called THEN last_value - $FRESH_FIRST + 1 ELSE 0 END FROM bench.fresh_src")
# Every verification of (a), (a0), (h) and (r) is a valid token's use: the
# use_count total must have grown by their transactions, less any dropped.
wait_drained
uses_counted=$(($(uses_total) - uses_before))
uses_dropped=$(($(qv "SELECT uses_dropped FROM iapi_tokens.usage_stats()") - dropped_before))
verifications=$(awk -F'\t' '$1 ~ /^(a|a0|ad|a0d|h|r)$/ { s += $6 } END { print s + 0 }' "$RAW")
autovacuums=$(($(autovacuum_count) - autovacuums))

# --- Report ------------------------------------------------------------------
server_version=$(qv "SELECT version()")
settings=$(qv "SELECT string_agg(name || '=' || current_setting(name), ', ' ORDER BY name)
                 FROM pg_settings
                WHERE name IN ('shared_buffers', 'fsync', 'synchronous_commit', 'max_wal_size',
                               'autovacuum', 'shared_preload_libraries',
                               'iapi_tokens.usage_flush_interval', 'iapi_tokens.usage_buffer_size')")

report() {
	echo "iapi_tokens benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo
	echo "machine   : $(nproc) CPUs ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n 1)), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM"
	echo "load avg  : $load_before before measuring, $load_after after (1/5/15 min)"
	echo "server    : $server_version"
	echo "settings  : $settings"
	echo "extension : commit $commit; library $libinfo"
	echo "pgbench   : -n -M prepared -c $CLIENTS -j $THREADS -T $DURATION, $ROUNDS rounds, over a $CONN;"
	echo "            (a0) -t $FIRST_PER_CLIENT per client, (h) and (r) -c $HOT_CLIENTS -j $HOT_CLIENTS"
	echo
	printf 'setup     : %ss total: %d sources in %ss, %d tokens through generate_token in %ss (%d/s, %d workers),\n' \
		"$secs_setup" "$SOURCES" "$secs_sources" "$TOKENS" "$secs_tokens" "$gen_rate" "$SETUP_JOBS"
	printf '            primary key + %d fresh sources in %ss, VACUUM ANALYZE in %ss\n' \
		"$FRESH" "$secs_fresh" "$secs_vacuum"
	printf 'warm-up   : %d of %d tokens verified in %ss, all their uses applied %ss after the start;\n' \
		"$verified" "$STEADY" "$secs_warm_verify" "$secs_warm"
	printf '            %d tokens with use_count > 0 (total %d), %d never used, %d uses dropped;\n' \
		"$warm_used" "$warm_uses" "$never_used" "$warm_dropped"
	printf '            then VACUUM + CHECKPOINT in %ss; %s MB prewarmed into %s MB of shared_buffers\n' \
		"$secs_warm_vacuum" "$prewarm_mb" "$buffers_mb"
	printf 'measuring : %ss\n' "$secs_measure"
	echo
	awk -F'\t' -v main="$CLIENTS" '
		NR == 1 { next }
		{
			n[$1]++; tps[$1, $2] = $4; rounds[$2] = 1; cl[$1] = $3
			xacts[$1] += $6; secs[$1] += $7 + $10; cpu[$1] += $8
			if ($9 > pend[$1]) pend[$1] = $9
			if ($10 > drain[$1]) drain[$1] = $10
			if ($11 != 0) bad[$1]++
			wr[$1] += $12; upd[$1] += $13; hot[$1] += $14; wal[$1] += $15
			apply[$1] += $16; applied[$1] += $17; dropped[$1] += $18
		}
		# median of v[1..m], which it sorts; sets LO and HI
		function median(v, m,    i, j, t) {
			for (i = 2; i <= m; i++)
				for (j = i; j > 1 && v[j - 1] > v[j]; j--) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
			LO = v[1]; HI = v[m]
			return (m % 2) ? v[(m + 1) / 2] : (v[m / 2] + v[m / 2 + 1]) / 2
		}
		function us(k) { return T[k] > 0 ? 1e6 * cl[k] / T[k] : 0 }
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
			nk = split("a a0 ad a0d b b0 h r c cs d e f", order, " ")
			for (i = 1; i <= nk; i++) disp[order[i]] = order[i]
			disp["cs"] = "c*"
			desc["a"]   = "verify_token, steady state"
			desc["a0"]  = "verify_token, first use of the token"
			desc["ad"]  = "(a), flushed after the run"
			desc["a0d"] = "(a0), flushed after the run"
			desc["b"]   = "floor: prepared plain SELECT"
			desc["b0"]  = "(b) on (a0d)'"'"'s tokens, driven as (a0d)"
			desc["h"]   = "verify_token, one hot token"
			desc["r"]   = "verify_token, random tokens"
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
			printf "%-5s %-37s %2s %7s %17s %8s %9s %7s %7s %6s\n", "", "test", "c", "tps", "(min .. max)",
				"us/call", "vs (f) us", "cpu us", "writes", "WAL B"
			printf "%-5s %-37s %2s %7s %17s %8s %9s %7s %7s %6s\n", "", "----", "-", "---", "------------",
				"-------", "---------", "------", "------", "-----"
			for (i = 1; i <= nk; i++) {
				k = order[i]
				if (!(k in n)) continue
				printf "%-5s %-37s %2d %7.0f %17s %8.1f %9s %7.1f %7.3f %6.0f%s\n", "(" disp[k] ")", desc[k],
					cl[k], T[k], sprintf("(%.0f .. %.0f)", TLO[k], THI[k]), us(k),
					(cl[k] == cl["f"]) ? sprintf("%+9.1f", us(k) - us("f")) : "",
					xacts[k] ? 1e6 * cpu[k] / xacts[k] : 0, xacts[k] ? wr[k] / xacts[k] : 0,
					xacts[k] ? wal[k] / xacts[k] : 0,
					(k in bad) ? "  pgbench failed in " bad[k] " round(s), see pgbench.log" : ""
			}
			print ""
			print "ratios of tps, median over the rounds of each round'"'"'s own ratio (min .. max);"
			print "reported, never asserted:"
			ratio("a", "b",   0.9, "steady-state verify_token vs the plain SELECT floor")
			ratio("a0", "b",  0.9, "a first use vs the plain SELECT floor")
			ratio("ad", "b",  0.9, "steady state, the request path alone (flushed after the run)")
			ratio("a0d", "b", 0.9, "a first use, the request path alone (flushed after the run)")
			ratio("a0d", "b0", 0.9, "the same against the floor on the same tokens, driven the same way")
			ratio("a0", "b0", 0,  "a first use, flush included, against that floor")
			ratio("h", "r",   0,   "one hot token vs random tokens, " cl["h"] " clients (1: no serialising)")
			ratio("a", "c",   4,   "verify_token vs the hand-written PL/pgSQL")
			ratio("a", "cs",  0,   "the same, had (c) not waited for the WAL flush")
			ratio("a", "d",   0,   "verify_token vs SELECT 1")
			ratio("a0", "c",  0,   "a first use vs the hand-written PL/pgSQL")
			print ""
			print "use recording, all rounds: uses the flush worker applied per call; its time in"
			print "apply_usage() per second of the tests (share of a core) and per row it updated;"
			print "the share of HOT updates; the most uses pending when pgbench ended, the longest wait"
			print "until the worker had applied them; uses dropped because the buffer was full:"
			printf "%-5s %8s %11s %7s %6s %8s %8s %8s\n", "", "applied", "apply_usage", "us/row",
				"HOT", "pending", "drained", "dropped"
			nv = split("a a0 ad a0d h r", vo, " ")
			for (i = 1; i <= nv; i++) {
				k = vo[i]
				if (!(k in n)) continue
				printf "%-5s %8.3f %10.1f%% %7.0f %5.0f%% %8d %7.1fs %8d\n", "(" disp[k] ")",
					xacts[k] ? applied[k] / xacts[k] : 0, secs[k] ? apply[k] / 10 / secs[k] : 0,
					upd[k] ? 1000 * apply[k] / upd[k] : 0, upd[k] ? 100 * hot[k] / upd[k] : 0,
					pend[k], drain[k], dropped[k]
			}
		}' "$RAW"
	echo
	echo "c: clients; tps: median of the rounds; us/call: clients / tps, the average time one"
	echo "client waits per call; vs (f) us: that minus the bare lookup's, i.e. what the test adds"
	echo "on top of fetching the plaintext; cpu us: CPU time of the server processes (backends,"
	echo "flush workers, autovacuum) per call; writes: rows inserted or updated in"
	echo "iapi_tokens.tokens per call, by the call or by the flush worker (pg_stat_user_tables);"
	echo "WAL B: WAL bytes per call, whoever wrote them.  Autovacuum runs on iapi_tokens.tokens"
	echo "during the measurements: $autovacuums."
	printf 'use_count : grew by %d; (a), (a0), (ad), (a0d), (h) and (r) made %d verifications (difference %d),\n' \
		"$uses_counted" "$verifications" "$((uses_counted - verifications))"
	printf '            %d uses dropped; (a0) used %d of the %d never-used tokens\n' \
		"$uses_dropped" "$(awk -F'\t' '$1 == "a0" || $1 == "a0d" { s += $6 } END { print s + 0 }' "$RAW")" "$((TOKENS - STEADY))"
	if [ "$fresh_used" -ge "$FRESH" ]; then
		echo "WARNING: (e) used all $FRESH fresh sources; its figure is cut short (raise FRESH)."
	else
		echo "(e) used $fresh_used of $FRESH fresh sources."
	fi
	if [ "$preloaded" != t ]; then
		echo "WARNING: iapi_tokens is not in shared_preload_libraries: verify_token wrote in the"
		echo "         caller's transaction, which is not the design measured here."
	fi
	if [ "$verified" != "$STEADY" ]; then
		echo "WARNING: in the warm-up verify_token returned a row for $verified of $STEADY valid tokens."
		echo "         Every token is real and unrevoked, so each missing row is a valid token that"
		echo "         verify_token rejected."
	fi
	if [ "$warm_used" != "$STEADY" ] || [ "$warm_uses" != "$STEADY" ] || [ "$warm_dropped" != 0 ]; then
		echo "WARNING: after the warm-up $warm_used tokens had a use_count (total $warm_uses), not $STEADY:"
		echo "         the flush worker lost or dropped uses."
	fi
	if [ "$uses_dropped" != 0 ]; then
		echo "WARNING: $uses_dropped uses were dropped during the measurements: the buffer was full."
	fi
	echo "raw figures: $RAW (cs there is (c*) here)"
	echo "pgbench output: $LOG; plans and sizes: $EXPLAIN"
}

report | tee "$RESULTS"
