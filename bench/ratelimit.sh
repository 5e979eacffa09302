#!/usr/bin/env bash
# What does a rate limit cost verify_token?  One throw-away cluster, TOKENS
# tokens, two per source: each source's first token has a rate limit that
# is never reached (1,000,000 per day), its second none.  One more source
# holds two hot tokens: one limited to 1,000,000 per second (more than any
# client here can send in a second), one unlimited.  pgbench measures
#   (l)  verify_token on random limited tokens, all nine columns returned,
#   (u)  the same statement on random unlimited tokens,
#   (lh) HOT_CLIENTS clients on the one hot limited token,
#   (uh) HOT_CLIENTS clients on the one hot unlimited token,
# in alternating order within each round, and reports the median tps of each
# and l/u and lh/uh against the target >= 0.9.  It also checks with
# rate_limit_stats() that no verification was refused (a refusal returns no
# row and skips the use, so it would make the limited side cheaper) and that
# the limited tests' transactions were each admitted once.  It reports; it
# never fails on a figure.
#
#   bash bench/ratelimit.sh                                     200,000 tokens
#   TOKENS=2000 DURATION=2 ROUNDS=1 bash bench/ratelimit.sh     a quick check
#
# Tunables: TOKENS, DURATION, ROUNDS, CLIENTS, THREADS, HOT_CLIENTS,
# SETUP_JOBS, OUT_DIR, RATE_SLOTS, SHARED_BUFFERS, FSYNC, BENCH_TCP (as
# bench/scopes.sh's and bench/run.sh's).
#
# Assumes make install (1.5 or newer); installs nothing.  Results:
# bench/out/ratelimit.txt (git-ignored), with ratelimit.raw.tsv and
# ratelimit.pgbench.log beside it.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)

export TOKENS=${TOKENS:-200000}		# tokens, 2 per source: half limited, half not
export DURATION=${DURATION:-10}		# pgbench -T, seconds, per test and round
export ROUNDS=${ROUNDS:-3}		# rounds; each runs (l), (u), (lh) and (uh)
export CLIENTS=${CLIENTS:-2}		# pgbench -c of (l) and (u)
export THREADS=${THREADS:-$CLIENTS}	# pgbench -j of (l) and (u)
export HOT_CLIENTS=${HOT_CLIENTS:-4}	# pgbench -c and -j of (lh) and (uh)
export SETUP_JOBS=${SETUP_JOBS:-$(nproc)}	# parallel loaders
export OUT_DIR=${OUT_DIR:-$BENCH_DIR/out}
# iapi_tokens.rate_limit_max_tokens: a day-long window keeps every limited
# token's slot for the whole run, so there must be a slot for each of them
# (TOKENS / 2 + 1), or the newcomers would be refused as overflows.
export RATE_SLOTS=${RATE_SLOTS:-$((TOKENS + 2 > 65536 ? TOKENS + 2 : 65536))}
export PG_VERSION=${PG_VERSION:-15}
SHARED_BUFFERS=${SHARED_BUFFERS:-512MB}
FSYNC=${FSYNC:-on}

# --- Outside: start the throw-away cluster and run this script inside it ----
if [ -z "${IAPI_RATELIMIT_BENCH_INSIDE:-}" ]; then
	export PG_CONFIG=/usr/lib/postgresql/$PG_VERSION/bin/pg_config
	[ -x "$PG_CONFIG" ] || { echo "PostgreSQL $PG_VERSION is not installed" >&2; exit 1; }
	[ -f "$("$PG_CONFIG" --sharedir)/extension/iapi_tokens.control" ] ||
		{ echo "iapi_tokens is not installed: run make install first" >&2; exit 1; }
	((TOKENS >= 2)) || { echo "TOKENS must be at least 2" >&2; exit 1; }
	((RATE_SLOTS > TOKENS / 2)) ||
		{ echo "RATE_SLOTS must exceed TOKENS / 2 (a slot per limited token)" >&2; exit 1; }
	export IAPI_RATELIMIT_BENCH_INSIDE=1
	# As bench/scopes.sh: -t, a cluster in a temporary directory; the library
	# preloaded, so verify_token counts the limits and records uses in shared
	# memory and the flush worker applies the uses; track_functions=pl for
	# the worker's apply_usage().
	exec pg_virtualenv -t -v "$PG_VERSION" \
		-o "shared_preload_libraries=iapi_tokens" \
		-o "iapi_tokens.rate_limit_max_tokens=$RATE_SLOTS" \
		-o "track_functions=pl" \
		-o "shared_buffers=$SHARED_BUFFERS" \
		-o "fsync=$FSYNC" \
		-o "max_wal_size=16GB" \
		-o "checkpoint_timeout=1h" \
		bash "$BENCH_DIR/ratelimit.sh"
fi

# --- Inside the cluster ------------------------------------------------------
SOURCES=$((TOKENS / 2))
TOKENS=$((2 * SOURCES))
HOT_SOURCE=$((SOURCES + 1))	# its tokens: i = TOKENS + 1 (limited), TOKENS + 2
ALL=$((TOKENS + 2))		# every token, the two hot ones included
SETUP_BATCH=5000	# sources per generate_token statement
WARM_BATCH=5000		# tokens per warm-up CALL
RATE_LIMIT=1000000	# the most a limit may be
RATE_WINDOW='1 day'	# of the random limited tokens: the longest window
HOT_WINDOW='1 second'	# of the hot limited token: 1,000,000 a second is out of reach
DB=iapi_bench

mkdir -p "$OUT_DIR"
RESULTS=$OUT_DIR/ratelimit.txt
RAW=$OUT_DIR/ratelimit.raw.tsv
LOG=$OUT_DIR/ratelimit.pgbench.log
: >"$LOG"
printf 'test\tround\tclients\ttps\ttransactions\tsecs\tserver_cpu_s\tpending_at_end\tdrain_s\tpgbench_rc\tapply_ms\tuses_applied\tuses_dropped\trl_admitted\trl_refused\trl_overflows\n' >"$RAW"

WORK=$(mktemp -d /tmp/iapi_ratelimit_bench.XXXXXX)
chmod 755 "$WORK"
trap 'rm -rf "$WORK"' EXIT

. "$BENCH_DIR/lib/common.sh"

commit=$(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git -C "$REPO_DIR" status --porcelain -- src sql 2>/dev/null)" ]; then
	commit="$commit (src/ or sql/ modified)"
fi
libfile=$("$PG_CONFIG" --pkglibdir)/iapi_tokens.so
libinfo="$libfile, installed $(date -u -r "$libfile" '+%Y-%m-%d %H:%M UTC' 2>/dev/null || echo '?')"
# The commit above is the tree's; the library measured is whatever make
# install last put in place.  Say so when the tree has a different build.
if [ -f "$REPO_DIR/iapi_tokens.so" ] && ! cmp -s "$REPO_DIR/iapi_tokens.so" "$libfile"; then
	libinfo="$libinfo; NOT the tree's build ($REPO_DIR/iapi_tokens.so, $(date -u -r "$REPO_DIR/iapi_tokens.so" '+%H:%M UTC'))"
fi

q -d postgres -c "CREATE DATABASE $DB"
export PGDATABASE=$DB

# --- Setup -------------------------------------------------------------------
say "setup: $HOT_SOURCE sources, $ALL tokens ($SOURCES limited + $SOURCES unlimited, 2 hot)"
t_setup=$(now)
q >/dev/null <<SQL
SET client_min_messages = warning;
CREATE EXTENSION iapi_tokens;
CREATE SCHEMA bench;
-- The plaintexts, throw-away database only.  Source s has the limited token
-- i = 2s - 1 and the unlimited token i = 2s; the last source, $HOT_SOURCE,
-- the two hot ones.  Primary key added after the load.
CREATE UNLOGGED TABLE bench.plain (i int NOT NULL, token text);
-- The warm-up, as bench/scopes.sh's: verify tokens lo..hi once each, 1,000
-- per statement, waiting while more than half of the usage buffer is pending
-- so that no use is dropped.  Also counts the rows that came back for a
-- token with a rate limit.
CREATE PROCEDURE bench.warm(lo int, hi int, INOUT verified bigint DEFAULT 0,
                            INOUT limited bigint DEFAULT 0)
LANGUAGE plpgsql
AS \$\$
DECLARE
	half bigint := coalesce(current_setting('iapi_tokens.usage_buffer_size', true), '65536')::bigint / 2;
	c int;
	n bigint;
	l bigint;
BEGIN
	FOR c IN SELECT generate_series(lo, hi, 1000)
	LOOP
		WHILE (SELECT tokens_pending FROM iapi_tokens.usage_stats()) > half
		LOOP
			PERFORM pg_sleep(0.01);
		END LOOP;
		SELECT count(*), count(*) FILTER (WHERE t.rate_limit IS NOT NULL)
		  INTO n, l
		  FROM bench.plain p
		 CROSS JOIN LATERAL iapi_tokens.verify_token(p.token) v
		  JOIN iapi_tokens.tokens t ON t.id = v.token_id
		 WHERE p.i BETWEEN c AND least(c + 999, hi);
		verified := verified + n;
		limited := limited + l;
	END LOOP;
END
\$\$;
INSERT INTO iapi_tokens.sources (id, name, display_name)
SELECT g, 'bench_' || g, 'Bench source ' || g
  FROM generate_series(1, $HOT_SOURCE) g;
SELECT setval('iapi_tokens.source_id_seq', $HOT_SOURCE);
INSERT INTO bench.plain (i, token)
SELECT $TOKENS + k, g.access_token
  FROM generate_series(1, 2) k,
       LATERAL iapi_tokens.generate_token($HOT_SOURCE,
           rate_limit => CASE WHEN k = 1 THEN $RATE_LIMIT END,
           rate_window => CASE WHEN k = 1 THEN interval '$HOT_WINDOW' END) g;
SQL

for ((w = 0; w < SETUP_JOBS; w++)); do : >"$WORK/gen_$w.sql"; done
b=0
for ((lo = 1; lo <= SOURCES; lo += SETUP_BATCH)); do
	hi=$((lo + SETUP_BATCH - 1 < SOURCES ? lo + SETUP_BATCH - 1 : SOURCES))
	cat >>"$WORK/gen_$((b % SETUP_JOBS)).sql" <<-EOF
	INSERT INTO bench.plain (i, token)
	SELECT 2 * (s - 1) + k, g.access_token
	  FROM generate_series($lo, $hi) s, generate_series(1, 2) k,
	       LATERAL iapi_tokens.generate_token(s,
	           rate_limit => CASE WHEN k = 1 THEN $RATE_LIMIT END,
	           rate_window => CASE WHEN k = 1 THEN interval '$RATE_WINDOW' END) g;
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
read -r loaded limited unlimited hot_ok < <(qv "SELECT count(*),
		count(*) FILTER (WHERE rate_limit = $RATE_LIMIT AND rate_window = interval '$RATE_WINDOW'),
		count(*) FILTER (WHERE rate_limit IS NULL AND rate_window IS NULL),
		count(*) FILTER (WHERE source_id = $HOT_SOURCE
		                   AND (rate_limit IS NULL OR rate_window = interval '$HOT_WINDOW'))
	  FROM iapi_tokens.tokens" | tr '|' ' ')
if [ "$loaded" != "$ALL" ] || [ "$limited" != "$SOURCES" ] || [ "$unlimited" != "$((SOURCES + 1))" ] ||
	[ "$hot_ok" != 2 ]; then
	echo "setup: $loaded tokens ($limited limited per day, $unlimited unlimited, $hot_ok hot)," \
		"expected $ALL ($SOURCES, $((SOURCES + 1)), 2)" >&2
	exit 1
fi
[ "$(qv "SELECT count(*) FROM bench.plain")" = "$ALL" ] || { echo "setup: bench.plain is short" >&2; exit 1; }
q -c "ALTER TABLE bench.plain ADD PRIMARY KEY (i)" -c "VACUUM (ANALYZE)"
secs_setup=$(since "$t_setup")
row_sizes=$(qv "SELECT string_agg(x, ', ' ORDER BY x)
	  FROM (SELECT format('%s %s B', CASE WHEN rate_limit IS NULL THEN 'unlimited' ELSE 'limited' END,
	                      round(avg(pg_column_size(t.*)))) AS x
	          FROM iapi_tokens.tokens t GROUP BY rate_limit IS NULL) r")
say "setup done in ${secs_setup}s ($secs_tokens s for the tokens); average row: $row_sizes"

# --- Warm-up: verify every token once ----------------------------------------
# admitted refused overflows evictions tracked in_window, from rate_limit_stats()
rl_stats() {
	qv "SELECT concat_ws(' ', requests_admitted, requests_refused, overflows, evictions,
	                     tokens_tracked, tokens_in_window)
	      FROM iapi_tokens.rate_limit_stats()"
}
say "warm-up: verifying all $ALL tokens once"
preloaded=$(qv "SELECT preloaded FROM iapi_tokens.usage_stats()")
[ "$preloaded" = t ] || say "WARNING: iapi_tokens is not in shared_preload_libraries"
rl_preloaded=$(qv "SELECT preloaded FROM iapi_tokens.rate_limit_stats()")
read -r rl_warm_a0 rl_warm_r0 _ < <(rl_stats)
for ((w = 0; w < SETUP_JOBS; w++)); do : >"$WORK/warm_$w.sql"; done
b=0
for ((lo = 1; lo <= ALL; lo += WARM_BATCH)); do
	hi=$((lo + WARM_BATCH - 1 < ALL ? lo + WARM_BATCH - 1 : ALL))
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
wait_drained
secs_warm=$(since "$t_warm")
read -r verified warm_limited < <(cat "$WORK"/warm_*.out |
	awk -F'|' '{ v += $1; l += $2 } END { print v + 0, l + 0 }')
read -r warm_used warm_uses < <(qv "SELECT count(*) FILTER (WHERE use_count = 1), coalesce(sum(use_count), 0)
	  FROM iapi_tokens.tokens" | tr '|' ' ')
warm_dropped=$(qv "SELECT uses_dropped FROM iapi_tokens.usage_stats()")
read -r rl_warm_a1 rl_warm_r1 _ < <(rl_stats)
q -c "VACUUM (ANALYZE) iapi_tokens.tokens" -c "CHECKPOINT"
secs_warm_all=$(since "$t_warm")
say "warm-up done: $verified verified ($warm_limited limited, $((rl_warm_a1 - rl_warm_a0)) admitted," \
	"$((rl_warm_r1 - rl_warm_r0)) refused), uses applied in ${secs_warm}s;" \
	"with VACUUM and CHECKPOINT ${secs_warm_all}s"

# --- Measurements ------------------------------------------------------------
# All four scripts run the same statement as bench/scripts/verify.sql and
# bench/scopes.sh, all nine columns.  n = SOURCES: (l) draws the odd tokens
# 1 .. TOKENS - 1, (u) the even ones 2 .. TOKENS; (lh) and (uh) always take
# TOKENS + 1 and TOKENS + 2.
for t in l u lh uh; do
	case $t in
	l) expr='2 * random(1, :n) - 1'; what='random limited tokens (i odd)' ;;
	u) expr='2 * random(1, :n)'; what='random unlimited tokens (i even)' ;;
	lh) expr='2 * :n + 1'; what='the hot limited token' ;;
	uh) expr='2 * :n + 2'; what='the hot unlimited token' ;;
	esac
	cat >"$WORK/$t.sql" <<-EOF
	-- ($t) verify_token on $what
	\\set i $expr
	SELECT * FROM iapi_tokens.verify_token((SELECT token FROM bench.plain WHERE i = :i));
	EOF
	chmod 644 "$WORK/$t.sql"
done

# ms in apply_usage(), uses applied, uses dropped, requests admitted,
# refused, overflows
counters() {
	qv "SELECT concat_ws(' ',
	                     (SELECT round(coalesce(sum(f.total_time), 0))
	                        FROM pg_stat_user_functions f
	                       WHERE f.schemaname = 'iapi_tokens' AND f.funcname = 'apply_usage'),
	                     u.uses_applied, u.uses_dropped,
	                     r.requests_admitted, r.requests_refused, r.overflows)
	      FROM iapi_tokens.usage_stats() u, iapi_tokens.rate_limit_stats() r"
}

# run TEST ROUND: pgbench, then wait until the worker has applied the test's
# uses, so none is left for the next test and its counters hold them.  As
# in bench/scopes.sh, the flush worker runs during the test (it flushes
# every second) and each test pays for the flushes of its own uses; the
# tail left pending when pgbench ends is applied outside the timing.  (l)
# and (u) draw uniformly from the same number of tokens, and (lh) and (uh)
# each use one token, so both sides of a ratio give the worker the same
# work.
run() {
	local t=$1 r=$2 c j k0 k1 c0 c1 t0 secs pend t1 drain out rc=0 tps xacts
	case $t in l | u) c=$CLIENTS; j=$THREADS ;; *) c=$HOT_CLIENTS; j=$HOT_CLIENTS ;; esac
	k0=$(counters); c0=$(server_cpu)
	t0=$(now)
	out=$("${AS[@]}" pgbench -n -M prepared -c "$c" -j "$j" -T "$DURATION" \
		-D n="$SOURCES" -f "$WORK/$t.sql" 2>&1) || rc=$?
	secs=$(since "$t0")
	pend=$(pending)
	t1=$(now)
	wait_drained 60
	drain=$(since "$t1")
	sleep 1.5	# the flush worker exits after an idle round; stats flush at exit
	k1=$(counters); c1=$(server_cpu)
	printf '### (%s) round %s exit=%s\n%s\n\n' "$t" "$r" "$rc" "$out" >>"$LOG"
	tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' <<<"$out" | tail -n 1)
	xacts=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out" | tail -n 1)
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$r" "$c" "${tps:-0}" "${xacts:-0}" "$secs" \
		"$(awk -v a="$c0" -v b="$c1" 'BEGIN { printf "%.2f", b - a }')" "$pend" "$drain" "$rc" \
		"$(awk -v a="$k0" -v b="$k1" 'BEGIN {
			n = split(a, x, " "); split(b, y, " ")
			for (i = 1; i <= n; i++) printf "%s%.0f", (i > 1 ? "\t" : ""), y[i] - x[i] }')" >>"$RAW"
	if [ "$rc" = 0 ]; then
		say "($t) round $r: ${tps:-?} tps, $pend uses pending at the end, drained in ${drain}s"
	else
		say "($t) round $r: ${tps:-?} tps (pgbench exit $rc, see $LOG)"
	fi
}

say "measuring: $ROUNDS rounds x (l, u, lh, uh) x ${DURATION}s"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
uses_before=$(uses_total)
read -r rl_a0 rl_r0 rl_o0 rl_e0 _ < <(rl_stats)
t_measure=$(now)
for ((r = 1; r <= ROUNDS; r++)); do
	# l u lh uh in odd rounds, uh lh u l in even ones: within each pair
	# neither always runs first, and no test always runs first or last
	if ((r % 2)); then order="l u lh uh"; else order="uh lh u l"; fi
	for t in $order; do run "$t" "$r"; done
done
secs_measure=$(since "$t_measure")
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
wait_drained
read -r rl_a1 rl_r1 rl_o1 rl_e1 rl_tracked rl_in_window < <(rl_stats)
uses_counted=$(($(uses_total) - uses_before))
verifications=$(awk -F'\t' 'NR > 1 { s += $5 } END { print s + 0 }' "$RAW")
limited_xacts=$(awk -F'\t' 'NR > 1 && ($1 == "l" || $1 == "lh") { s += $5 } END { print s + 0 }' "$RAW")
admitted=$((rl_a1 - rl_a0))
refused=$((rl_r1 - rl_r0))

# --- Report ------------------------------------------------------------------
server_version=$(qv "SELECT version()")
settings=$(qv "SELECT string_agg(name || '=' || current_setting(name), ', ' ORDER BY name)
                 FROM pg_settings
                WHERE name IN ('shared_buffers', 'fsync', 'synchronous_commit',
                               'shared_preload_libraries', 'iapi_tokens.rate_limit_max_tokens',
                               'iapi_tokens.usage_flush_interval', 'iapi_tokens.usage_buffer_size')")

report() {
	echo "iapi_tokens benchmark: rate limits, $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo
	echo "machine   : $(nproc) CPUs ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n 1)), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM"
	echo "load avg  : $load_before before measuring, $load_after after (1/5/15 min)"
	echo "server    : $server_version"
	echo "settings  : $settings"
	echo "extension : commit $commit; library $libinfo"
	echo "pgbench   : -n -M prepared -T $DURATION, (l) and (u) -c $CLIENTS -j $THREADS, (lh) and (uh)" \
		"-c $HOT_CLIENTS -j $HOT_CLIENTS;"
	echo "            $ROUNDS rounds (l u lh uh, uh lh u l, ...), over a $CONN"
	echo "statement : SELECT * FROM iapi_tokens.verify_token((SELECT token FROM bench.plain WHERE i = :i))"
	echo
	printf 'setup     : %ss: %d sources, %d tokens through generate_token in %ss;\n' \
		"$secs_setup" "$HOT_SOURCE" "$ALL" "$secs_tokens"
	printf '            %d limited to %d per %s, %d unlimited; hot: one limited to %d per %s, one unlimited;\n' \
		"$limited" "$RATE_LIMIT" "$RATE_WINDOW" "$SOURCES" "$RATE_LIMIT" "$HOT_WINDOW"
	printf '            average row (pg_column_size): %s\n' "$row_sizes"
	printf 'warm-up   : %d of %d tokens verified, %d of them limited; %d admitted, %d refused;\n' \
		"$verified" "$ALL" "$warm_limited" "$((rl_warm_a1 - rl_warm_a0))" "$((rl_warm_r1 - rl_warm_r0))"
	printf '            uses applied %ss after the start, %d tokens with use_count 1, %d uses dropped;\n' \
		"$secs_warm" "$warm_used" "$warm_dropped"
	printf '            with VACUUM ANALYZE and CHECKPOINT %ss\n' "$secs_warm_all"
	printf 'measuring : %ss\n' "$secs_measure"
	echo
	awk -F'\t' '
		NR == 1 { next }
		{
			tps[$1, $2] = $4; rounds[$2] = 1; n[$1]++; cl[$1] = $3
			xacts[$1] += $5; cpu[$1] += $7; apply[$1] += $11; applied[$1] += $12; dropped[$1] += $13
			adm[$1] += $14; ref[$1] += $15
			if ($8 > pend[$1]) pend[$1] = $8
			if ($10 != 0) bad[$1]++
		}
		function median(v, m,    i, j, t) {
			for (i = 2; i <= m; i++)
				for (j = i; j > 1 && v[j - 1] > v[j]; j--) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
			LO = v[1]; HI = v[m]
			return (m % 2) ? v[(m + 1) / 2] : (v[m / 2] + v[m / 2 + 1]) / 2
		}
		function ratio(a, b, what,    m, r, med, per) {
			m = 0; per = ""
			for (r = 1; (r in rounds); r++)
				if (tps[a, r] > 0 && tps[b, r] > 0) {
					v[++m] = tps[a, r] / tps[b, r]
					per = per sprintf("%s%.3f", (m > 1 ? ", " : ""), v[m])
				}
			if (m == 0) { printf "%s/%s = n/a\n", a, b; return }
			med = median(v, m)
			delete v
			printf "%-5s = %.3f (%.3f .. %.3f)  target >= 0.9: %s   %s\n", a "/" b, med, LO, HI,
				(med >= 0.9) ? "met" : sprintf("MISSED by %.1f%%", 100 * (0.9 - med) / 0.9), what
			printf "        per round: %s; ratio of the medians: %.3f\n", per,
				(T[b] > 0 ? T[a] / T[b] : 0)
		}
		END {
			desc["l"] = "verify_token, random limited tokens"
			desc["u"] = "verify_token, random unlimited tokens"
			desc["lh"] = "verify_token, one hot limited token"
			desc["uh"] = "verify_token, one hot unlimited token"
			split("l u lh uh", keys, " ")
			printf "%-5s %-38s %2s %7s %17s %8s %7s %10s %8s %8s %9s %8s\n", "", "test", "c", "tps",
				"(min .. max)", "us/call", "cpu us", "worker us", "pending", "dropped", "admitted", "refused"
			printf "%-5s %-38s %2s %7s %17s %8s %7s %10s %8s %8s %9s %8s\n", "", "----", "--", "---",
				"------------", "-------", "------", "---------", "-------", "-------", "--------", "-------"
			for (i = 1; i <= 4; i++) {
				k = keys[i]
				if (!(k in n)) continue
				m = 0
				for (r in rounds) if ((k, r) in tps) v[++m] = tps[k, r] + 0
				T[k] = median(v, m)
				delete v
				printf "%-5s %-38s %2d %7.0f %17s %8.1f %7.1f %10.1f %8d %8d %9d %8d%s\n", "(" k ")", desc[k],
					cl[k], T[k], sprintf("(%.0f .. %.0f)", LO, HI), (T[k] > 0 ? 1e6 * cl[k] / T[k] : 0),
					(xacts[k] ? 1e6 * cpu[k] / xacts[k] : 0), (applied[k] ? 1000 * apply[k] / applied[k] : 0),
					pend[k], dropped[k], adm[k], ref[k],
					(k in bad) ? "  pgbench failed in " bad[k] " round(s)" : ""
			}
			print ""
			ratio("l", "u", "random tokens, " cl["l"] " clients")
			ratio("lh", "uh", "one hot token, " cl["lh"] " clients")
		}' "$RAW"
	echo
	echo "c: pgbench clients; us/call: clients / tps; cpu us: CPU time of the server processes"
	echo "that exited during the test (backends, flush workers, autovacuum) per call; worker us:"
	echo "the flush worker's time in apply_usage() per use it applied; pending: the most uses"
	echo "pending when pgbench ended; dropped: uses dropped because the buffer was full (must be"
	echo "0); admitted, refused: the growth of rate_limit_stats()' counters during the test."
	echo "Each ratio is the median of the rounds' own ratios."
	printf 'rate limit: %d admitted during the measurements, against %d transactions of (l) and (lh)\n' \
		"$admitted" "$limited_xacts"
	printf '            (difference %d); %d refused, %d overflows, %d evictions (all must be 0);\n' \
		"$((admitted - limited_xacts))" "$refused" "$((rl_o1 - rl_o0))" "$((rl_e1 - rl_e0))"
	printf '            afterwards %d limited tokens tracked, %d in a live window, of %d slots\n' \
		"$rl_tracked" "$rl_in_window" "$RATE_SLOTS"
	printf 'use_count : grew by %d during the measurements; pgbench made %d verifications (difference %d)\n' \
		"$uses_counted" "$verifications" "$((uses_counted - verifications))"
	if [ "$preloaded" != t ] || [ "$rl_preloaded" != t ]; then
		echo "WARNING: iapi_tokens is not in shared_preload_libraries: every limited token is refused."
	fi
	if [ "$refused" != 0 ] || [ "$admitted" != "$limited_xacts" ]; then
		echo "WARNING: a limited verification was refused, or not every limited transaction was admitted"
		echo "         once: the limited side did not do the same work as the unlimited one, and its"
		echo "         figures are not comparable."
	fi
	if [ "$verified" != "$ALL" ] || [ "$warm_limited" != "$((SOURCES + 1))" ] ||
		[ "$((rl_warm_r1 - rl_warm_r0))" != 0 ]; then
		echo "WARNING: the warm-up verified $verified of $ALL tokens, $warm_limited limited"
		echo "         (expected $((SOURCES + 1))), $((rl_warm_r1 - rl_warm_r0)) refused."
	fi
	if [ "$warm_used" != "$ALL" ] || [ "$warm_uses" != "$ALL" ] || [ "$warm_dropped" != 0 ]; then
		echo "WARNING: after the warm-up $warm_used tokens had use_count 1 (total $warm_uses), not $ALL."
	fi
	echo "raw figures: $RAW; pgbench output: $LOG"
}

report | tee "$RESULTS"
