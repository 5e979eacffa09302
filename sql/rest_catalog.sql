-- iapi_tokens_rest's catalog: GET routes are STABLE (PostgREST runs them
-- read-only) and POST routes VOLATILE, definers pin search_path, every
-- object is documented, PUBLIC reaches no route, and the helpers live in a
-- schema PostgREST does not expose.
\set SHOW_CONTEXT never
CREATE EXTENSION iapi_tokens_rest;	-- needs iapi_tokens
-- ... at version 1.5 at least: its pre-request calls check_token(), whoami
-- reads use_count.
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

-- A group role owns no personal tokens (403, and no token made); a member
-- of one does.  The login role does not count as a member: PostgREST's
-- authenticator is a member of every role it may switch to.
CREATE ROLE regress_iapi_rest_group NOLOGIN;
CREATE ROLE regress_iapi_rest_user NOLOGIN IN ROLE regress_iapi_rest_group;
GRANT regress_iapi_rest_user TO CURRENT_USER;
GRANT EXECUTE ON FUNCTION iapi_rest.create_access_token(integer, text, text[], jsonb, integer, integer),
	iapi_tokens.create_access_token(integer, text, text[], jsonb, integer, interval) TO regress_iapi_rest_group;
GRANT USAGE ON SCHEMA iapi_rest TO regress_iapi_rest_group;
SET ROLE regress_iapi_rest_user;
SELECT iapi_rest_internal.token_owner() AS owner;
RESET ROLE;
SET ROLE regress_iapi_rest_group;
SELECT iapi_rest_internal.token_owner() AS owner;
\echo :LAST_ERROR_SQLSTATE
SELECT "tokenValue" IS NOT NULL AS created FROM iapi_rest.create_access_token(60);
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SELECT count(*) AS group_tokens FROM iapi_tokens.tokens
 WHERE owner_role = 'regress_iapi_rest_group'::regrole;
REVOKE USAGE ON SCHEMA iapi_rest FROM regress_iapi_rest_group;
REVOKE EXECUTE ON FUNCTION iapi_rest.create_access_token(integer, text, text[], jsonb, integer, integer),
	iapi_tokens.create_access_token(integer, text, text[], jsonb, integer, interval) FROM regress_iapi_rest_group;
DROP ROLE regress_iapi_rest_user, regress_iapi_rest_group;

-- iapi_tokens cannot go while its PostgREST layer is installed.  The layer
-- takes its helper schema with it; iapi_rest, made by CREATE EXTENSION from
-- the control file, stays as such schemas do.
DROP EXTENSION iapi_tokens;
DROP EXTENSION iapi_tokens_rest;
SELECT nspname AS schema_left FROM pg_namespace WHERE nspname LIKE 'iapi_rest%';
DROP SCHEMA iapi_rest;
DROP EXTENSION iapi_tokens;

-- ALTER EXTENSION iapi_tokens_rest UPDATE from 1.0 ends in the catalog of a
-- fresh installation of the current version, for both schemas: every
-- function (definition, language, volatility, security, settings, ACL, the
-- initial privileges pg_dump compares with, comment, membership), every
-- type, and the schemas themselves.
CREATE ROLE regress_iapi_rest_app NOLOGIN;
CREATE FUNCTION public.iapi_rest_fingerprint() RETURNS TABLE (object text, state text)
LANGUAGE sql AS $$
	SELECT 'function ' || p.oid::regprocedure::text,
		   concat_ws(' | ', l.lanname, p.provolatile, p.prosecdef, p.proisstrict,
					 p.proparallel, p.proretset, p.procost, p.prorows,
					 p.proconfig::text, p.proacl::text, pg_get_function_result(p.oid),
					 pg_get_function_arguments(p.oid), md5(p.prosrc),
					 md5(pg_get_functiondef(p.oid)),
					 (SELECT i.initprivs::text FROM pg_init_privs i
					   WHERE i.classoid = 'pg_proc'::regclass AND i.objoid = p.oid),
					 obj_description(p.oid, 'pg_proc'),
					 (SELECT e.extname FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
					   WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
						 AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'))
	  FROM pg_proc p
	  JOIN pg_language l ON l.oid = p.prolang
	  JOIN pg_namespace n ON n.oid = p.pronamespace
	 WHERE n.nspname IN ('iapi_rest', 'iapi_rest_internal')
	UNION ALL
	SELECT 'type ' || t.oid::regtype::text,
		   concat_ws(' | ', t.typtype, t.typacl::text,
					 (SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod),
										', ' ORDER BY a.attnum)
						FROM pg_attribute a
					   WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped),
					 obj_description(t.oid, 'pg_type'))
	  FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
	 WHERE n.nspname IN ('iapi_rest', 'iapi_rest_internal')
	UNION ALL
	SELECT 'schema ' || n.nspname,
		   concat_ws(' | ', n.nspacl::text, obj_description(n.oid, 'pg_namespace'))
	  FROM pg_namespace n WHERE n.nspname IN ('iapi_rest', 'iapi_rest_internal')
$$;

CREATE EXTENSION iapi_tokens_rest CASCADE;
SELECT extversion FROM pg_extension WHERE extname = 'iapi_tokens_rest';
CREATE TEMP TABLE rest_fresh AS SELECT * FROM public.iapi_rest_fingerprint();
SELECT count(*) AS fingerprint_rows FROM rest_fresh;
DROP EXTENSION iapi_tokens_rest;
DROP SCHEMA iapi_rest;

-- 1.0, with a grant of the user's on a route, and one on a helper.
CREATE EXTENSION iapi_tokens_rest VERSION '1.0';
GRANT EXECUTE ON FUNCTION iapi_rest.authenticate(), iapi_rest.generate_token_v3(bigint),
	iapi_rest.list_access_tokens() TO regress_iapi_rest_app;
REVOKE EXECUTE ON FUNCTION iapi_rest_internal.request_header(text) FROM PUBLIC;
ALTER EXTENSION iapi_tokens_rest UPDATE TO '1.1';
ALTER EXTENSION iapi_tokens_rest UPDATE TO '1.2';
ALTER EXTENSION iapi_tokens_rest UPDATE TO '1.3';
SELECT extversion FROM pg_extension WHERE extname = 'iapi_tokens_rest';

-- The user's grants survived the update, and are still the user's own: not
-- initial privileges of the extension, so pg_dump still dumps them.
SELECT p.oid::regprocedure AS function,
	   has_function_privilege('regress_iapi_rest_app', p.oid, 'EXECUTE') AS app_executes,
	   EXISTS (SELECT FROM pg_init_privs i, aclexplode(i.initprivs) a
				WHERE i.classoid = 'pg_proc'::regclass AND i.objoid = p.oid
				  AND a.grantee = 'regress_iapi_rest_app'::regrole) AS initial_privilege
  FROM pg_proc p
 WHERE p.oid IN ('iapi_rest.authenticate()'::regprocedure,
				 'iapi_rest.generate_token_v3(bigint)'::regprocedure,
				 'iapi_rest.list_access_tokens()'::regprocedure)
 ORDER BY p.oid::regprocedure::text;
SELECT has_function_privilege('public', 'iapi_rest_internal.request_header(text)', 'EXECUTE')
	AS public_request_header;

-- Apart from those grants, the updated catalog is the fresh one.
REVOKE EXECUTE ON FUNCTION iapi_rest.authenticate(), iapi_rest.generate_token_v3(bigint),
	iapi_rest.list_access_tokens() FROM regress_iapi_rest_app;
GRANT EXECUTE ON FUNCTION iapi_rest_internal.request_header(text) TO PUBLIC;
SELECT * FROM public.iapi_rest_fingerprint() EXCEPT SELECT * FROM rest_fresh;
SELECT * FROM rest_fresh EXCEPT SELECT * FROM public.iapi_rest_fingerprint();

-- 1.2 changed the signatures of generate_token and create_access_token: the
-- update makes their grants again, with a warning, since they then count as
-- the extension's initial privileges.
DROP EXTENSION iapi_tokens_rest;
CREATE EXTENSION iapi_tokens_rest VERSION '1.1';
GRANT EXECUTE ON FUNCTION iapi_rest.generate_token(bigint) TO regress_iapi_rest_app;
ALTER EXTENSION iapi_tokens_rest UPDATE TO '1.2';
SELECT has_function_privilege('regress_iapi_rest_app', 'iapi_rest.generate_token(bigint, text[], jsonb)', 'EXECUTE')
	AS grant_carried;
-- 1.3 changed them again, for rateLimit and rateWindowSeconds; authenticate()
-- is replaced in place and keeps the user's grant as the user's.
GRANT EXECUTE ON FUNCTION iapi_rest.authenticate() TO regress_iapi_rest_app;
ALTER EXTENSION iapi_tokens_rest UPDATE TO '1.3';
SELECT has_function_privilege('regress_iapi_rest_app', 'iapi_rest.generate_token(bigint, text[], jsonb, integer, integer)', 'EXECUTE')
	AS grant_carried,
	   has_function_privilege('regress_iapi_rest_app', 'iapi_rest.authenticate()', 'EXECUTE')
	AS authenticate_grant_kept;

DROP EXTENSION iapi_tokens_rest;
DROP SCHEMA iapi_rest;
DROP EXTENSION iapi_tokens;
DROP FUNCTION public.iapi_rest_fingerprint();
DROP ROLE regress_iapi_rest_app;
