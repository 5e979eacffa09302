-- iapi_tokens_rest's catalog: GET routes are STABLE (PostgREST runs them
-- read-only) and POST routes VOLATILE, definers pin search_path, every
-- object is documented, PUBLIC reaches no route, and the helpers live in a
-- schema PostgREST does not expose.
\set SHOW_CONTEXT never
CREATE EXTENSION iapi_tokens_rest;	-- needs iapi_tokens
-- ... at version 1.2 at least: its pre-request calls authenticate().
CREATE EXTENSION iapi_tokens VERSION '1.1';
CREATE EXTENSION iapi_tokens_rest;
\echo :LAST_ERROR_SQLSTATE
ALTER EXTENSION iapi_tokens UPDATE;
CREATE EXTENSION iapi_tokens_rest;
SELECT extname, extversion, extnamespace::regnamespace
  FROM pg_extension WHERE extname LIKE 'iapi%' ORDER BY 1;

-- Each route returns the seed's object as a composite type, or a set of
-- them, which PostgREST renders as an object or an array.
SELECT p.oid::regprocedure AS function, pg_get_function_result(p.oid) AS returns,
	   p.provolatile AS vol, p.prosecdef AS definer, p.proconfig AS config
  FROM pg_proc p
 WHERE p.pronamespace IN ('iapi_rest'::regnamespace, 'iapi_rest_internal'::regnamespace)
 ORDER BY p.oid::regprocedure::text;

SELECT p.oid::regprocedure AS undocumented
  FROM pg_proc p
 WHERE p.pronamespace IN ('iapi_rest'::regnamespace, 'iapi_rest_internal'::regnamespace)
   AND obj_description(p.oid, 'pg_proc') IS NULL;
SELECT t.oid::regtype AS undocumented_type
  FROM pg_type t
 WHERE t.typnamespace = 'iapi_rest'::regnamespace AND t.typtype = 'c'
   AND obj_description(t.oid, 'pg_type') IS NULL;
SELECT n.nspname, obj_description(n.oid, 'pg_namespace') IS NOT NULL AS documented
  FROM pg_namespace n WHERE n.nspname LIKE 'iapi_rest%' ORDER BY 1;

-- PUBLIC reaches no route: rest/roles.sql grants them.  It may run the
-- helpers, which only read the request and raise errors.
SELECT p.oid::regprocedure AS public_can_execute
  FROM pg_proc p
 WHERE p.pronamespace IN ('iapi_rest'::regnamespace, 'iapi_rest_internal'::regnamespace)
   AND EXISTS (SELECT FROM aclexplode(p.proacl) a
				WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE')
 ORDER BY p.oid::regprocedure::text;
SELECT has_schema_privilege('public', 'iapi_rest', 'USAGE') AS public_usage_routes,
	   has_schema_privilege('public', 'iapi_rest_internal', 'USAGE') AS public_usage_helpers;

-- The helpers, as a route sees them.
SELECT iapi_rest_internal.raise_http(404, 'nothing here', NULL, 'look elsewhere');
\echo :LAST_ERROR_SQLSTATE
SELECT iapi_rest_internal.raise_http(409, 'busy', 'a detail', NULL);
\echo :LAST_ERROR_SQLSTATE
-- A transient conflict is a 503 to retry, not PostgREST's 500.
SELECT iapi_rest_internal.rethrow('40001', 'could not serialize access', '', '');
\echo :LAST_ERROR_SQLSTATE
SELECT iapi_rest_internal.rethrow('22023', 'passes through', 'as it was', '');
\echo :LAST_ERROR_SQLSTATE
BEGIN;
SELECT set_config('request.headers', '{"x-iapi-source-id": "42", "x-api-key": "k"}', true) IS NOT NULL AS set;
SELECT iapi_rest_internal.request_header('X-Iapi-Source-Id') AS header;
SELECT iapi_rest_internal.path_param(NULL::bigint, 'x-iapi-source-id', 'source_id') AS from_header;
SELECT iapi_rest_internal.path_param(42::bigint, 'x-iapi-source-id', 'source_id') AS agreeing;
SELECT iapi_rest_internal.path_param(7::bigint, 'x-iapi-source-id', 'source_id') AS disagreeing;
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
SELECT iapi_rest_internal.path_param(NULL::uuid, 'x-iapi-token-id', 'tokenId') AS missing;
\echo :LAST_ERROR_SQLSTATE
SELECT iapi_rest_internal.request_header('x-api-key') IS NULL AS outside_postgrest;
SELECT iapi_rest_internal.iso8601_ms('2019-01-16 00:05:01.743+00') AS trifacta_time;

-- Outside PostgREST, without claims, source routes refuse to guess a client.
SELECT iapi_rest.list_sources();
\echo :LAST_ERROR_SQLSTATE

-- iapi_tokens cannot go while its PostgREST layer is installed.  The layer
-- takes its helper schema with it; iapi_rest, made by CREATE EXTENSION from
-- the control file, stays as such schemas do.
DROP EXTENSION iapi_tokens;
DROP EXTENSION iapi_tokens_rest;
SELECT nspname AS schema_left FROM pg_namespace WHERE nspname LIKE 'iapi_rest%';
DROP SCHEMA iapi_rest;
DROP EXTENSION iapi_tokens;
