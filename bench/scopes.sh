#!/usr/bin/env bash
# What do scopes and metadata cost verify_token?  One throw-away cluster,
# TOKENS tokens, two per source: each source's first token has three scopes
# and a metadata object, its second neither.  pgbench measures
#   (s) verify_token on random scoped tokens, all nine columns returned,
#   (p) the same statement on random plain tokens,
#   (sd), (pd) the same two with the usage flush deferred until pgbench has
#        ended (as bench/run.sh's (ad)): verification alone, without the
#        worker writing the used rows, wider for scoped tokens, meanwhile,
# alternating within each round, and reports the median tps of each, s/p
# and sd/pd against the target >= 0.95.  It reports; it never fails on a
# figure.
#
#   bash bench/scopes.sh                                     200,000 tokens
#   TOKENS=2000 DURATION=2 ROUNDS=1 bash bench/scopes.sh     a quick check
#   VERIFY_COLUMNS=token_id bash bench/scopes.sh    without returning the two
#
# Tunables: TOKENS, DURATION, ROUNDS, CLIENTS, THREADS, SETUP_JOBS, OUT_DIR,
# VERIFY_COLUMNS, SHARED_BUFFERS, FSYNC, BENCH_TCP (as bench/run.sh's).
#
# Assumes make install; installs nothing.  Results: bench/out/scopes.txt
# (git-ignored), with scopes.raw.tsv and scopes.pgbench.log beside it.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)

export TOKENS=${TOKENS:-200000}		# tokens, 2 per source: half scoped, half plain
export DURATION=${DURATION:-10}		# pgbench -T, seconds, per test and round
export ROUNDS=${ROUNDS:-3}		# rounds; each runs (s) and (p)
export CLIENTS=${CLIENTS:-2}		# pgbench -c
export THREADS=${THREADS:-$CLIENTS}	# pgbench -j
export SETUP_JOBS=${SETUP_JOBS:-$(nproc)}	# parallel loaders
export OUT_DIR=${OUT_DIR:-$BENCH_DIR/out}
# what both tests select from verify_token: * (all nine columns, the default),
# or e.g. token_id to leave out the output of scopes and metadata
export VERIFY_COLUMNS=${VERIFY_COLUMNS:-*}
export PG_VERSION=${PG_VERSION:-15}
SHARED_BUFFERS=${SHARED_BUFFERS:-512MB}
FSYNC=${FSYNC:-on}

# --- Outside: start the throw-away cluster and run this script inside it ----
if [ -z "${IAPI_SCOPES_BENCH_INSIDE:-}" ]; then
	export PG_CONFIG=/usr/lib/postgresql/$PG_VERSION/bin/pg_config
	[ -x "$PG_CONFIG" ] || { echo "PostgreSQL $PG_VERSION is not installed" >&2; exit 1; }
	[ -f "$("$PG_CONFIG" --sharedir)/extension/iapi_tokens.control" ] ||
		{ echo "iapi_tokens is not installed: run make install first" >&2; exit 1; }
	((TOKENS >= 2)) || { echo "TOKENS must be at least 2" >&2; exit 1; }
	export IAPI_SCOPES_BENCH_INSIDE=1
	# As bench/run.sh: -t, a cluster in a temporary directory; the library
	# preloaded, so verify_token records uses in shared memory and the flush
	# worker applies them; track_functions=pl for the worker's apply_usage().
	exec pg_virtualenv -t -v "$PG_VERSION" \
		-o "shared_preload_libraries=iapi_tokens" \
		-o "track_functions=pl" \
		-o "shared_buffers=$SHARED_BUFFERS" \
		-o "iapi_tokens.usage_buffer_size=1048576" \
		-o "fsync=$FSYNC" \
		-o "max_wal_size=16GB" \
		-o "checkpoint_timeout=1h" \
		bash "$BENCH_DIR/scopes.sh"
fi

# --- Inside the cluster ------------------------------------------------------
SOURCES=$((TOKENS / 2))
TOKENS=$((2 * SOURCES))
SETUP_BATCH=5000	# sources per generate_token statement
WARM_BATCH=5000		# tokens per warm-up CALL
SCOPES="ARRAY['sources:read', 'sources:write', 'tokens:read']"
DB=iapi_bench

mkdir -p "$OUT_DIR"
RESULTS=$OUT_DIR/scopes.txt
RAW=$OUT_DIR/scopes.raw.tsv
LOG=$OUT_DIR/scopes.pgbench.log
: >"$LOG"
printf 'test\tround\ttps\ttransactions\tsecs\tserver_cpu_s\tpending_at_end\tdrain_s\tpgbench_rc\tapply_ms\tuses_applied\tuses_dropped\n' >"$RAW"

WORK=$(mktemp -d /tmp/iapi_scopes_bench.XXXXXX)
chmod 755 "$WORK"
trap 'rm -rf "$WORK"' EXIT

. "$BENCH_DIR/lib/common.sh"

commit=$(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git -C "$REPO_DIR" status --porcelain -- src sql 2>/dev/null)" ]; then
	commit="$commit (src/ or sql/ modified)"
fi
libfile=$("$PG_CONFIG" --pkglibdir)/iapi_tokens.so
libinfo="$libfile, installed $(date -u -r "$libfile" '+%Y-%m-%d %H:%M UTC' 2>/dev/null || echo '?')"

q -d postgres -c "CREATE DATABASE $DB"
export PGDATABASE=$DB

# --- Setup -------------------------------------------------------------------
say "setup: $SOURCES sources, $TOKENS tokens ($SOURCES scoped, $SOURCES plain)"
t_setup=$(now)
q >/dev/null <<SQL
SET client_min_messages = warning;
CREATE EXTENSION iapi_tokens;
SELECT iapi_tokens.define_scope(s) FROM unnest($SCOPES) s;
CREATE SCHEMA bench;
-- The plaintexts, throw-away database only.  Source s has the scoped token
-- i = 2s - 1 and the plain token i = 2s.  Primary key added after the load.
CREATE UNLOGGED TABLE bench.plain (i int NOT NULL, token text);
-- The warm-up, as bench/lib/schema.sql's bench.warm: verify tokens lo..hi
-- once each, 1,000 per statement, waiting while more than half of the usage
-- buffer is pending so that no use is dropped.  Also counts the rows that
-- came back with both scopes and metadata.
CREATE PROCEDURE bench.warm(lo int, hi int, INOUT verified bigint DEFAULT 0,
                            INOUT with_scopes bigint DEFAULT 0)
LANGUAGE plpgsql
AS \$\$
DECLARE
	half bigint := coalesce(current_setting('iapi_tokens.usage_buffer_size', true), '65536')::bigint / 2;
	c int;
	n bigint;
	w bigint;
BEGIN
	FOR c IN SELECT generate_series(lo, hi, 1000)
	LOOP
		WHILE (SELECT tokens_pending FROM iapi_tokens.usage_stats()) > half
		LOOP
			PERFORM pg_sleep(0.01);
		END LOOP;
		SELECT count(*), count(*) FILTER (WHERE v.scopes IS NOT NULL AND v.metadata IS NOT NULL)
		  INTO n, w
		  FROM bench.plain p
		 CROSS JOIN LATERAL iapi_tokens.verify_token(p.token) v
		 WHERE p.i BETWEEN c AND least(c + 999, hi);
		verified := verified + n;
		with_scopes := with_scopes + w;
	END LOOP;
END
\$\$;
INSERT INTO iapi_tokens.sources (id, name, display_name)
SELECT g, 'bench_' || g, 'Bench source ' || g
  FROM generate_series(1, $SOURCES) g;
SELECT setval('iapi_tokens.source_id_seq', $SOURCES);
SQL

for ((w = 0; w < SETUP_JOBS; w++)); do : >"$WORK/gen_$w.sql"; done
b=0
for ((lo = 1; lo <= SOURCES; lo += SETUP_BATCH)); do
	hi=$((lo + SETUP_BATCH - 1 < SOURCES ? lo + SETUP_BATCH - 1 : SOURCES))
	cat >>"$WORK/gen_$((b % SETUP_JOBS)).sql" <<-EOF
	INSERT INTO bench.plain (i, token)
	SELECT 2 * (s - 1) + k, g.access_token
	  FROM generate_series($lo, $hi) s, generate_series(1, 2) k,
	       LATERAL iapi_tokens.generate_token(s, NULL, NULL,
	           CASE WHEN k = 1 THEN $SCOPES END,
	           CASE WHEN k = 1 THEN jsonb_build_object('plan', 'pro', 'customer', 10000 + s,
	                                                   'region', 'eu-west-1') END) g;
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
read -r loaded scoped plain < <(qv "SELECT count(*),
		count(*) FILTER (WHERE scopes IS NOT NULL AND metadata IS NOT NULL),
		count(*) FILTER (WHERE scopes IS NULL AND metadata IS NULL)
	  FROM iapi_tokens.tokens" | tr '|' ' ')
if [ "$loaded" != "$TOKENS" ] || [ "$scoped" != "$SOURCES" ] || [ "$plain" != "$SOURCES" ]; then
	echo "setup: $loaded tokens ($scoped scoped, $plain plain), expected $TOKENS ($SOURCES each)" >&2
	exit 1
fi
[ "$(qv "SELECT count(*) FROM bench.plain")" = "$TOKENS" ] || { echo "setup: bench.plain is short" >&2; exit 1; }
q -c "ALTER TABLE bench.plain ADD PRIMARY KEY (i)" -c "VACUUM (ANALYZE)"
secs_setup=$(since "$t_setup")
row_sizes=$(qv "SELECT string_agg(x, ', ' ORDER BY x DESC)
	  FROM (SELECT format('%s %s B', CASE WHEN scopes IS NULL THEN 'plain' ELSE 'scoped' END,
	                      round(avg(pg_column_size(t.*)))) AS x
	          FROM iapi_tokens.tokens t GROUP BY scopes IS NULL) r")
say "setup done in ${secs_setup}s ($secs_tokens s for the tokens); average row: $row_sizes"

# --- Warm-up: verify every token once ----------------------------------------
say "warm-up: verifying all $TOKENS tokens once"
preloaded=$(qv "SELECT preloaded FROM iapi_tokens.usage_stats()")
[ "$preloaded" = t ] || say "WARNING: iapi_tokens is not in shared_preload_libraries"
for ((w = 0; w < SETUP_JOBS; w++)); do : >"$WORK/warm_$w.sql"; done
b=0
for ((lo = 1; lo <= TOKENS; lo += WARM_BATCH)); do
	hi=$((lo + WARM_BATCH - 1 < TOKENS ? lo + WARM_BATCH - 1 : TOKENS))
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
read -r verified with_scopes < <(cat "$WORK"/warm_*.out |
	awk -F'|' '{ v += $1; w += $2 } END { print v + 0, w + 0 }')
read -r warm_used warm_uses < <(qv "SELECT count(*) FILTER (WHERE use_count = 1), coalesce(sum(use_count), 0)
	  FROM iapi_tokens.tokens" | tr '|' ' ')
warm_dropped=$(qv "SELECT uses_dropped FROM iapi_tokens.usage_stats()")
q -c "VACUUM (ANALYZE) iapi_tokens.tokens" -c "CHECKPOINT"
secs_warm_all=$(since "$t_warm")
say "warm-up done: $verified verified ($with_scopes with scopes and metadata), uses applied in ${secs_warm}s;" \
	"with VACUUM and CHECKPOINT ${secs_warm_all}s"

# --- Measurements ------------------------------------------------------------
# By default both scripts run the same statement as bench/scripts/verify.sql,
# all nine columns, so the scoped tokens' text[] and jsonb also go through
# their output functions and over the wire, as an application that reads them
# would have them (VERIFY_COLUMNS=token_id leaves that out).  n = SOURCES:
# (s) draws the odd tokens, (p) the even ones.
for t in s p; do
	if [ "$t" = s ]; then expr='2 * random(1, :n) - 1'; what='scoped tokens (i odd)'
	else expr='2 * random(1, :n)'; what='plain tokens (i even)'; fi
	cat >"$WORK/$t.sql" <<-EOF
	-- ($t) verify_token on random $what
	\\set i $expr
	SELECT $VERIFY_COLUMNS FROM iapi_tokens.verify_token((SELECT token FROM bench.plain WHERE i = :i));
	EOF
	chmod 644 "$WORK/$t.sql"
done

# ms in apply_usage(), uses applied, uses dropped
counters() {
	qv "SELECT concat_ws(' ',
	                     (SELECT round(coalesce(sum(f.total_time), 0))
	                        FROM pg_stat_user_functions f
	                       WHERE f.schemaname = 'iapi_tokens' AND f.funcname = 'apply_usage'),
	                     u.uses_applied, u.uses_dropped)
	      FROM iapi_tokens.usage_stats() u"
}

# run TEST ROUND: pgbench, then wait until the worker has applied the test's
# uses, so none is left for the next test and its counters hold them.  A
# test whose name ends in d runs the statement of its first letter with the
# flush deferred until pgbench has ended.
run() {
	local t=$1 r=$2 k0 k1 c0 c1 t0 secs pend t1 drain out rc=0 tps xacts
	k0=$(counters); c0=$(server_cpu)
	[ "$t" = "${t%d}" ] || flush_every 1h
	t0=$(now)
	out=$("${AS[@]}" pgbench -n -M prepared -c "$CLIENTS" -j "$THREADS" -T "$DURATION" \
		-D n="$SOURCES" -f "$WORK/${t%d}.sql" 2>&1) || rc=$?
	secs=$(since "$t0")
	pend=$(pending)
	[ "$t" = "${t%d}" ] || flush_every 1s
	t1=$(now)
	wait_drained 60
	drain=$(since "$t1")
	sleep 1.5	# the flush worker exits after an idle round; stats flush at exit
	k1=$(counters); c1=$(server_cpu)
	printf '### (%s) round %s exit=%s\n%s\n\n' "$t" "$r" "$rc" "$out" >>"$LOG"
	tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' <<<"$out" | tail -n 1)
	xacts=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out" | tail -n 1)
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$r" "${tps:-0}" "${xacts:-0}" "$secs" \
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

say "measuring: $ROUNDS rounds x (s, p, sd, pd) x ${DURATION}s"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
uses_before=$(uses_total)
t_measure=$(now)
for ((r = 1; r <= ROUNDS; r++)); do
	# forwards in odd rounds, backwards in even ones: none always runs first
	if ((r % 2)); then order="s p sd pd"; else order="pd sd p s"; fi
	for t in $order; do run "$t" "$r"; done
done
secs_measure=$(since "$t_measure")
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
wait_drained
uses_counted=$(($(uses_total) - uses_before))
verifications=$(awk -F'\t' 'NR > 1 { s += $4 } END { print s + 0 }' "$RAW")

# --- Report ------------------------------------------------------------------
server_version=$(qv "SELECT version()")
settings=$(qv "SELECT string_agg(name || '=' || current_setting(name), ', ' ORDER BY name)
                 FROM pg_settings
                WHERE name IN ('shared_buffers', 'fsync', 'synchronous_commit',
                               'shared_preload_libraries',
                               'iapi_tokens.usage_flush_interval', 'iapi_tokens.usage_buffer_size')")

report() {
	echo "iapi_tokens benchmark: scopes and metadata, $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo
	echo "machine   : $(nproc) CPUs ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n 1)), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM"
	echo "load avg  : $load_before before measuring, $load_after after (1/5/15 min)"
	echo "server    : $server_version"
	echo "settings  : $settings"
	echo "extension : commit $commit; library $libinfo"
	echo "pgbench   : -n -M prepared -c $CLIENTS -j $THREADS -T $DURATION, $ROUNDS rounds (s p, p s, ...), over a $CONN"
	echo "statement : SELECT $VERIFY_COLUMNS FROM iapi_tokens.verify_token((SELECT token FROM bench.plain WHERE i = :i))"
	echo
	printf 'setup     : %ss: %d sources, %d tokens through generate_token in %ss;\n' \
		"$secs_setup" "$SOURCES" "$TOKENS" "$secs_tokens"
	printf '            %d with scopes %s and metadata {plan, customer, region}, %d with neither;\n' \
		"$scoped" "{sources:read,sources:write,tokens:read}" "$plain"
	printf '            average row (pg_column_size): %s\n' "$row_sizes"
	printf 'warm-up   : %d of %d tokens verified, %d of them returned scopes and metadata;\n' \
		"$verified" "$TOKENS" "$with_scopes"
	printf '            uses applied %ss after the start, %d tokens with use_count 1, %d uses dropped;\n' \
		"$secs_warm" "$warm_used" "$warm_dropped"
	printf '            with VACUUM ANALYZE and CHECKPOINT %ss\n' "$secs_warm_all"
	printf 'measuring : %ss\n' "$secs_measure"
	echo
	awk -F'\t' -v clients="$CLIENTS" '
		NR == 1 { next }
		{
			tps[$1, $2] = $3; rounds[$2] = 1; n[$1]++
			xacts[$1] += $4; cpu[$1] += $6; apply[$1] += $10; applied[$1] += $11; dropped[$1] += $12
			if ($7 > pend[$1]) pend[$1] = $7
			if ($8 > drain[$1]) drain[$1] = $8
			if ($9 != 0) bad[$1]++
		}
		function median(v, m,    i, j, t) {
			for (i = 2; i <= m; i++)
				for (j = i; j > 1 && v[j - 1] > v[j]; j--) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
			LO = v[1]; HI = v[m]
			return (m % 2) ? v[(m + 1) / 2] : (v[m / 2] + v[m / 2 + 1]) / 2
		}
		END {
			desc["s"] = "verify_token, scoped (3 scopes + metadata)"
			desc["p"] = "verify_token, plain (neither)"
			desc["sd"] = "(s), flushed after the run"
			desc["pd"] = "(p), flushed after the run"
			printf "%-4s %-43s %7s %17s %8s %7s %11s %8s %8s\n", "", "test", "tps", "(min .. max)",
				"us/call", "cpu us", "worker us", "pending", "dropped"
			printf "%-4s %-43s %7s %17s %8s %7s %11s %8s %8s\n", "", "----", "---", "------------",
				"-------", "------", "---------", "-------", "-------"
			split("s p sd pd", order, " ")
			for (i = 1; i <= 4; i++) {
				k = order[i]
				if (!(k in n)) continue
				m = 0
				for (r in rounds) if ((k, r) in tps) v[++m] = tps[k, r] + 0
				T[k] = median(v, m)
				delete v
				printf "%-4s %-43s %7.0f %17s %8.1f %7.1f %11.1f %8d %8d%s\n", "(" k ")", desc[k],
					T[k], sprintf("(%.0f .. %.0f)", LO, HI), (T[k] > 0 ? 1e6 * clients / T[k] : 0),
					(xacts[k] ? 1e6 * cpu[k] / xacts[k] : 0), (applied[k] ? 1000 * apply[k] / applied[k] : 0),
					pend[k], dropped[k], (k in bad) ? "  pgbench failed in " bad[k] " round(s)" : ""
			}
			print ""
			ratio("s", "p", "the flush on the same cores")
			ratio("sd", "pd", "verification alone (flushed after the run)")
		}
		function ratio(a, b, what,    m, r, per, med) {
			m = 0; per = ""
			for (r = 1; (r in rounds); r++)
				if (tps[a, r] > 0 && tps[b, r] > 0) {
					v[++m] = tps[a, r] / tps[b, r]
					per = per sprintf("%s%.3f", (m > 1 ? ", " : ""), v[m])
				}
			if (m == 0) { printf "%s/%s = n/a\n", a, b; return }
			med = median(v, m)
			delete v
			printf "%-5s = %.3f (%.3f .. %.3f)  target >= 0.95: %s   %s\n", a "/" b, med, LO, HI,
				(med >= 0.95) ? "met" : sprintf("MISSED by %.1f%%", 100 * (0.95 - med) / 0.95), what
			printf "        the median of each round'"'"'s own ratio; per round: %s\n", per
			printf "        (ratio of the medians: %.3f)\n", (T[b] > 0 ? T[a] / T[b] : 0)
		}' "$RAW"
	echo
	echo "us/call: clients / tps; cpu us: CPU time of the server processes that exited during"
	echo "the test (backends, flush workers, autovacuum) per call; worker us: the flush worker's"
	echo "time in apply_usage() per use it applied; pending: the most uses pending when pgbench"
	echo "ended; dropped: uses dropped because the buffer was full (must be 0)."
	printf 'use_count : grew by %d during the measurements; pgbench made %d verifications (difference %d)\n' \
		"$uses_counted" "$verifications" "$((uses_counted - verifications))"
	if [ "$preloaded" != t ]; then
		echo "WARNING: iapi_tokens is not in shared_preload_libraries."
	fi
	if [ "$verified" != "$TOKENS" ] || [ "$with_scopes" != "$SOURCES" ]; then
		echo "WARNING: the warm-up verified $verified of $TOKENS tokens, $with_scopes with scopes"
		echo "         and metadata (expected $SOURCES)."
	fi
	if [ "$warm_used" != "$TOKENS" ] || [ "$warm_uses" != "$TOKENS" ] || [ "$warm_dropped" != 0 ]; then
		echo "WARNING: after the warm-up $warm_used tokens had use_count 1 (total $warm_uses), not $TOKENS."
	fi
	echo "raw figures: $RAW; pgbench output: $LOG"
}

report | tee "$RESULTS"
