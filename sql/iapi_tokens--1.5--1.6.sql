-- iapi_tokens 1.5 to 1.6: verification's result as named composite types.
--
-- verify_token() and authenticate() return SETOF iapi_tokens.verified_token
-- and check_token() SETOF iapi_tokens.token_check, with the same columns as
-- before.  The executor rebuilt a RETURNS TABLE result's row descriptor from
-- pg_proc on every call; a composite type's comes from the type cache, which
-- takes a tenth off each verification.  A return type cannot be changed in
-- place, so the three functions are dropped and created again with the
-- grants they had.  A view or SQL-standard function of yours that uses one
-- of them makes this update fail: drop it first and create it again after.
-- current_token() is left as it is, since RLS policies may depend on it.

\echo Use "ALTER EXTENSION iapi_tokens UPDATE TO '1.6'" to load this file. \quit

-- The grants of the functions re-created below; NULL is the default ACL,
-- which has PUBLIC.
SELECT pg_catalog.set_config('iapi_tokens_update.acls',
	(SELECT pg_catalog.jsonb_object_agg(f.signature,
			coalesce(p.proacl, pg_catalog.acldefault('f', p.proowner))::text)
	   FROM (VALUES ('iapi_tokens.verify_token(text)'),
				('iapi_tokens.authenticate(text)'),
				('iapi_tokens.check_token(text, boolean)')) f(signature)
	   JOIN pg_catalog.pg_proc p ON p.oid = f.signature::pg_catalog.regprocedure)::text,
	true);

DROP FUNCTION iapi_tokens.verify_token(text);
DROP FUNCTION iapi_tokens.authenticate(text);
DROP FUNCTION iapi_tokens.check_token(text, boolean);

-- The row verify_token, authenticate and check_token return.  A named type
-- rather than RETURNS TABLE: the executor builds a RETURNS TABLE result's
-- row descriptor from pg_proc on every call, which cost verification a
-- tenth of its time; a composite type's comes from the type cache.
-- current_token() keeps RETURNS TABLE, as RLS policies may depend on it.
CREATE TYPE iapi_tokens.verified_token AS (
	token_id bigint,
	source_id bigint,
	created_at timestamptz,
	expires_at timestamptz,
	last_used_at timestamptz,
	owner regrole,
	access_token_id uuid,
	scopes text[],
	metadata jsonb);

COMMENT ON TYPE iapi_tokens.verified_token IS
	'A valid token as verify_token and authenticate return it: source_id for a source token, owner and access_token_id for a personal token, its scopes and metadata';

CREATE FUNCTION iapi_tokens.verify_token(token text)
RETURNS SETOF iapi_tokens.verified_token
AS 'MODULE_PATHNAME', 'iapi_tokens_verify_token_1_1'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE ROWS 1;

COMMENT ON FUNCTION iapi_tokens.verify_token(text) IS
	'Returns one row for a valid token of either family (source_id for a source token, owner and access_token_id for a personal token, and its scopes and metadata) and no row otherwise; never raises an error for any input';

-- Not STRICT: authenticate(NULL) must forget the previous token.
CREATE FUNCTION iapi_tokens.authenticate(token text)
RETURNS SETOF iapi_tokens.verified_token
AS 'MODULE_PATHNAME', 'iapi_tokens_authenticate'
LANGUAGE C VOLATILE PARALLEL UNSAFE ROWS 1;

COMMENT ON FUNCTION iapi_tokens.authenticate(text) IS
	'Verifies a token as verify_token does and, if it is valid, makes it the transaction''s current token; otherwise no row and no current token';

-- Its own type, for the reason verified_token gives.
CREATE TYPE iapi_tokens.token_check AS (
	status text,
	token_id bigint,
	source_id bigint,
	created_at timestamptz,
	expires_at timestamptz,
	last_used_at timestamptz,
	owner regrole,
	access_token_id uuid,
	scopes text[],
	metadata jsonb,
	rate_limit integer,
	rate_window interval,
	remaining integer,
	reset_after integer,
	retry_after integer);

COMMENT ON TYPE iapi_tokens.token_check IS
	'What check_token returns: status valid, invalid or rate_limited, the token''s columns, its rate limit, the admissions remaining, the seconds until its window resets and, when refused, retry_after';

-- Not STRICT: check_token(NULL) is one invalid row, like any other input.
CREATE FUNCTION iapi_tokens.check_token(token text, authenticate boolean DEFAULT false)
RETURNS SETOF iapi_tokens.token_check
AS 'MODULE_PATHNAME', 'iapi_tokens_check_token'
LANGUAGE C VOLATILE PARALLEL UNSAFE ROWS 1;

COMMENT ON FUNCTION iapi_tokens.check_token(text, boolean) IS
	'Verifies a token as verify_token does and returns one row whatever the input: status valid, invalid or rate_limited, the token''s columns, and for a limited token the admissions remaining, the seconds until its window resets and, when refused, retry_after; with authenticate, a valid token becomes the current token';

SELECT iapi_tokens_internal.revoke_all_grants(
	'{}',
	ARRAY['iapi_tokens.verify_token(text)', 'iapi_tokens.authenticate(text)',
		  'iapi_tokens.check_token(text, boolean)']::pg_catalog.regprocedure[],
	'{}');

-- The grants the three had in 1.5.  PUBLIC's, which a fresh installation
-- makes too, goes back silently; any other is the user's, and as 1.5 warned,
-- grants made by an update script count as the extension's initial
-- privileges, which pg_dump leaves out.  So does a revocation from PUBLIC.
DO $$
DECLARE
	saved record;
	grantee record;
	differs text[] := '{}';
BEGIN
	FOR saved IN
		SELECT s.key AS function, s.value AS acl
		  FROM pg_catalog.jsonb_each_text(
				 pg_catalog.current_setting('iapi_tokens_update.acls')::jsonb) s
	LOOP
		IF NOT EXISTS (SELECT FROM pg_catalog.aclexplode(saved.acl::pg_catalog.aclitem[]) a
						WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE') THEN
			differs := differs || pg_catalog.format('%s revoked from PUBLIC', saved.function);
		END IF;
		FOR grantee IN
			SELECT a.grantee, a.is_grantable
			  FROM pg_catalog.aclexplode(saved.acl::pg_catalog.aclitem[]) a
			 WHERE a.privilege_type = 'EXECUTE'
			   AND a.grantee <> (SELECT p.proowner FROM pg_catalog.pg_proc p
								  WHERE p.oid = saved.function::pg_catalog.regprocedure)
		LOOP
			EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO %s%s',
				saved.function::pg_catalog.regprocedure,
				CASE WHEN grantee.grantee = 0 THEN 'PUBLIC'
					 ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(grantee.grantee)) END,
				CASE WHEN grantee.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
			IF grantee.grantee <> 0 OR grantee.is_grantable THEN
				differs := differs || pg_catalog.format('%s granted to %s', saved.function,
					CASE WHEN grantee.grantee = 0 THEN 'PUBLIC'
						 ELSE pg_catalog.pg_get_userbyid(grantee.grantee) END);
			END IF;
		END LOOP;
	END LOOP;
	IF cardinality(differs) > 0 THEN
		RAISE WARNING 'iapi_tokens 1.6 re-created functions with the privileges they had: %',
			pg_catalog.array_to_string(differs, '; ')
			USING DETAIL = 'pg_dump now counts them as the extension''s own, so a dump restored into a fresh installation has the default privileges instead.',
				  HINT = 'After such a restore, run rest/roles.sql and your own GRANTs and REVOKEs on these functions again.';
	END IF;
END
$$;
