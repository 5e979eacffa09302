-- iapi_tokens 1.1 -> 1.2: authenticate() and current_token(), so that a
-- request's token can be verified once and its owner read by the functions
-- and RLS policies that serve the request (the PostgREST layer's
-- db-pre-request, iapi_tokens_rest, is built on them).

\echo Use "ALTER EXTENSION iapi_tokens UPDATE TO '1.2'" to load this file. \quit

-- Not STRICT: authenticate(NULL) must forget the previous token.
CREATE FUNCTION iapi_tokens.authenticate(token text)
RETURNS TABLE (
	token_id bigint,
	source_id bigint,
	created_at timestamptz,
	expires_at timestamptz,
	last_used_at timestamptz,
	owner regrole,
	access_token_id uuid)
AS 'MODULE_PATHNAME', 'iapi_tokens_authenticate'
LANGUAGE C VOLATILE PARALLEL UNSAFE ROWS 1;

COMMENT ON FUNCTION iapi_tokens.authenticate(text) IS
	'Verifies a token as verify_token does and, if it is valid, makes it the transaction''s current token; otherwise no row and no current token';

-- STABLE as current_setting() is: only authenticate() changes it.
CREATE FUNCTION iapi_tokens.current_token()
RETURNS TABLE (
	token_id bigint,
	source_id bigint,
	created_at timestamptz,
	expires_at timestamptz,
	last_used_at timestamptz,
	owner regrole,
	access_token_id uuid)
AS 'MODULE_PATHNAME', 'iapi_tokens_current_token'
LANGUAGE C STABLE PARALLEL RESTRICTED ROWS 1;

COMMENT ON FUNCTION iapi_tokens.current_token() IS
	'The token authenticate() accepted in this transaction, or no row; for functions and RLS policies';

-- No grant from ALTER DEFAULT PRIVILEGES.  current_token() is PUBLIC's: it
-- shows a session only what that session authenticated.
DO $$
DECLARE
	stmt text;
BEGIN
	FOR stmt IN
		SELECT pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM %I',
					p.oid::pg_catalog.regprocedure, r.rolname)
		  FROM pg_catalog.pg_proc p,
			   pg_catalog.aclexplode(p.proacl) a
		  JOIN pg_catalog.pg_roles r ON r.oid = a.grantee
		 WHERE p.pronamespace = 'iapi_tokens'::pg_catalog.regnamespace
		   AND p.proname IN ('authenticate', 'current_token')
		   AND a.grantee <> p.proowner
	LOOP
		EXECUTE stmt;
	END LOOP;
END
$$;

REVOKE ALL ON FUNCTION iapi_tokens.authenticate(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION iapi_tokens.current_token() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION iapi_tokens.current_token() TO PUBLIC;

-- authenticate() verifies, so it gets verify_token's grants: PUBLIC as
-- installed, or exactly the roles a restricted verify_token has.
DO $$
DECLARE
	verify_acl pg_catalog.aclitem[] := (
		SELECT p.proacl FROM pg_catalog.pg_proc p
		 WHERE p.oid = 'iapi_tokens.verify_token(text)'::pg_catalog.regprocedure);
	grantee record;
BEGIN
	IF verify_acl IS NULL OR EXISTS (
		SELECT FROM pg_catalog.aclexplode(verify_acl) a
		 WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE') THEN
		GRANT EXECUTE ON FUNCTION iapi_tokens.authenticate(text) TO PUBLIC;
		RETURN;
	END IF;
	FOR grantee IN
		SELECT r.rolname, a.is_grantable
		  FROM pg_catalog.aclexplode(verify_acl) a
		  JOIN pg_catalog.pg_roles r ON r.oid = a.grantee
		 WHERE a.privilege_type = 'EXECUTE' AND a.grantee <> a.grantor
	LOOP
		EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION iapi_tokens.authenticate(text) TO %I%s',
								  grantee.rolname,
								  CASE WHEN grantee.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
	END LOOP;
	RAISE WARNING 'iapi_tokens.authenticate(text) was granted as iapi_tokens.verify_token(text) is, without PUBLIC'
		USING DETAIL = 'pg_dump counts these grants as the extension''s own, so a dump restored into a fresh installation gives EXECUTE back to PUBLIC.',
			  HINT = 'After such a restore, run your REVOKE and GRANT on both functions again.';
END
$$;
