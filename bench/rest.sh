#!/usr/bin/env bash
# The HTTP path's cost of an API key: the same PostgREST request, replayed as
# PostgREST 12 sends it (read-only transaction, set_config prologue,
# pre-request, RPC statement), with and without an X-Api-Key header for
# iapi_rest.authenticate() to verify.  Both in one throw-away cluster, in
# alternating rounds; it reports the ratio and never fails on it.
#
#   bash bench/rest.sh                                  100,000 tokens
#   TOKENS=10000 DURATION=3 ROUNDS=1 bash bench/rest.sh     a quick check
#
# Assumes make install.  Results: bench/out/rest.txt (git-ignored).
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export TOKENS=${TOKENS:-100000} DURATION=${DURATION:-10} ROUNDS=${ROUNDS:-3}
export CLIENTS=${CLIENTS:-2} OUT_DIR=${OUT_DIR:-$BENCH_DIR/out}

if [ -z "${IAPI_REST_BENCH_INSIDE:-}" ]; then
	export IAPI_REST_BENCH_INSIDE=1
	exec pg_virtualenv -t -v 15 -o fsync=on -o shared_buffers=256MB bash "$0"
fi

mkdir -p "$OUT_DIR"
out=$OUT_DIR/rest.txt
q() { psql -X -q -v ON_ERROR_STOP=1 "$@"; }

q -c 'CREATE EXTENSION iapi_tokens_rest CASCADE'
q -v authenticator_password=bench -f "$BENCH_DIR/../rest/roles.sql"
# One source of client 1 for the route; TOKENS keys over TOKENS/2 sources.
q <<SQL
SELECT iapi_tokens.create_source('route', NULL, 1);
CREATE SCHEMA bench_rest;
CREATE UNLOGGED TABLE bench_rest.plain (i int PRIMARY KEY, token text NOT NULL);
DO \$\$
BEGIN
	FOR s IN 1 .. ($TOKENS + 1) / 2 LOOP
		PERFORM iapi_tokens.create_source('s' || s, NULL, 2);
	END LOOP;
END
\$\$;
INSERT INTO bench_rest.plain
SELECT row_number() OVER (), g.access_token
  FROM iapi_tokens.sources s, LATERAL iapi_tokens.generate_token(s.id) g,
	   generate_series(1, 2)
 WHERE s.stitch_client_id = 2
 LIMIT $TOKENS;
-- pgbench reads the key after set_config('role'), as the request's role.
GRANT USAGE ON SCHEMA bench_rest TO iapi_source_admin;
GRANT SELECT ON bench_rest.plain TO iapi_source_admin;
VACUUM ANALYZE;
SQL
n=$(psql -X -Atc 'SELECT count(*) FROM bench_rest.plain')

# $1: the request.headers expression.  GET /rpc/list_sources as client 1.
request() {
	cat <<SQL
\\set i random(1, $n)
BEGIN ISOLATION LEVEL READ COMMITTED READ ONLY;
SELECT set_config('search_path', '"iapi_rest", "public"', true), set_config('role', 'iapi_source_admin', true), set_config('request.jwt.claims', '{"role":"iapi_source_admin","stitch_client_id":1}', true), set_config('request.method', 'GET', true), set_config('request.path', '/rpc/list_sources', true), set_config('request.headers', $1, true), set_config('request.cookies', '{}', true);
select "iapi_rest"."authenticate"();
WITH pgrst_source AS (SELECT pgrst_call.pgrst_scalar FROM (SELECT "iapi_rest"."list_sources"() pgrst_scalar) pgrst_call) SELECT null::bigint AS total_result_set, pg_catalog.count(_postgrest_t) AS page_total, coalesce(json_agg(_postgrest_t.pgrst_scalar)->0, 'null') AS body, nullif(current_setting('response.headers', true), '') AS response_headers, nullif(current_setting('response.status', true), '') AS response_status FROM (SELECT "pgrst_source".* FROM "pgrst_source") _postgrest_t;
COMMIT;
SQL
}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The baseline reads a key too, so the two differ only in its verification.
request "(SELECT json_build_object('accept', '*/*', 'x-unused', token)::text FROM bench_rest.plain WHERE i = :i)" >"$work/jwt_only.sql"
request "(SELECT json_build_object('accept', '*/*', 'x-api-key', token)::text FROM bench_rest.plain WHERE i = :i)" >"$work/with_key.sql"

tps() {
	pgbench -n -M prepared -c "$CLIENTS" -j "$CLIENTS" -T "$DURATION" -f "$1" 2>&1 |
		awk '/^tps = / { print $3 }'
}
: >"$out.raw"
for r in $(seq 1 "$ROUNDS"); do
	for t in jwt_only with_key; do
		v=$(tps "$work/$t.sql")
		printf '%s\t%s\t%s\n' "$t" "$r" "$v" >>"$out.raw"
		printf '[%s] round %s %-9s %s tps\n' "$(date +%T)" "$r" "$t" "$v" >&2
	done
done

median() { grep "^$1	" "$out.raw" | cut -f3 | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
a=$(median jwt_only)
b=$(median with_key)
used=$(psql -X -Atc 'SELECT count(*) FROM iapi_tokens.tokens WHERE last_used_at IS NOT NULL')
{
	echo "iapi_tokens_rest: PostgREST GET /rpc/list_sources, $n keys, $CLIENTS clients, ${DURATION}s x $ROUNDS rounds (median)"
	printf '  JWT only (pre-request returns at once)     %10.0f tps\n' "$a"
	printf '  JWT + X-Api-Key (pre-request verifies)     %10.0f tps\n' "$b"
	awk -v a="$a" -v b="$b" 'BEGIN { printf "  ratio with key / without                   %10.2f\n", b / a }'
	echo "  last_used_at written by these read-only requests: $used"
} | tee "$out"
