-- iapi_tokens_rest 1.0 -> 1.1.
--
-- A fresh CREATE EXTENSION runs sql/iapi_tokens_rest.sql (1.1) alone;
-- sql/rest_catalog.sql checks that 1.0 updated by this script ends in the
-- same catalog.
--
-- Functions whose body changes keep their signature, so they are replaced
-- in place (CREATE OR REPLACE, on the extension's own functions): the grants
-- rest/roles.sql and users made on them stay as they were, and stay the
-- user's.  Dropping and re-creating them would lose those grants, and
-- granting them again here would record them as the extension's initial
-- privileges, which pg_dump leaves out.

\echo Use "ALTER EXTENSION iapi_tokens_rest UPDATE TO '1.1'" to load this file. \quit

-- ---------------------------------------------------------------------------
-- No plaintext in a statement the executor runs: auto_explain with
-- log_verbose prints the constants a custom plan makes of PL/pgSQL
-- variables.  generate_token_v3 put the new token, and authenticate the
-- X-Api-Key, in such a query.
-- ---------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION iapi_rest.generate_token_v3(source_id bigint DEFAULT NULL)
RETURNS iapi_rest.import_api_token_v3
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	generated iapi_rest.import_api_token;
	sid bigint;
	tokens jsonb;
	source jsonb;
BEGIN
	-- Errors come out of generate_token with their HTTP status already.
	generated := iapi_rest.generate_token(generate_token_v3.source_id);
	SELECT t.source_id INTO sid FROM iapi_tokens.tokens t WHERE t.id = generated.id;

	SELECT coalesce(jsonb_object_agg(d.token_id::text, d.display_prefix || '...'), '{}')
	  INTO tokens
	  FROM iapi_tokens.list_token_details(sid) d
	 WHERE d.token_id <> generated.id;
	tokens := tokens || jsonb_build_object(generated.id::text, generated.access_token);

	source := iapi_tokens.source_json(sid);
	source := source || jsonb_build_object('properties',
		(source -> 'properties') || jsonb_build_object('token', tokens));
	RETURN ROW(generated.access_token, source)::iapi_rest.import_api_token_v3;
END
$$;

CREATE OR REPLACE FUNCTION iapi_rest.authenticate()
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF iapi_rest_internal.request_header('x-api-key') IS NULL THEN
		RETURN;
	END IF;
	PERFORM FROM iapi_tokens.authenticate(iapi_rest_internal.request_header('x-api-key'));
	IF NOT FOUND THEN
		PERFORM iapi_rest_internal.raise_unauthorized('the API key is not valid', 'invalid_token');
	END IF;
END
$$;

-- ---------------------------------------------------------------------------
-- A group role owns no personal tokens: rest/roles.sql's per-user grants let
-- the authenticator switch to iapi_token_user, and a JWT naming it got 201.
-- Each personal-token route now refuses one with 403 (token_owner()).
-- ---------------------------------------------------------------------------

CREATE FUNCTION iapi_rest_internal.token_owner()
RETURNS regrole
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	owner_oid oid := (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = current_user);
	login_oid oid := (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = session_user);
BEGIN
	IF EXISTS (
		SELECT FROM pg_catalog.pg_auth_members m,
			   LATERAL pg_catalog.to_jsonb(m) g
		 WHERE m.roleid = owner_oid
		   AND m.member <> login_oid
		   AND coalesce((g ->> 'inherit_option')::boolean OR (g ->> 'set_option')::boolean,
						true)) THEN
		PERFORM iapi_rest_internal.raise_http(403,
			format('role %I is a group role and cannot own personal tokens', current_user),
			'Personal tokens belong to one user''s role; a role with members would share them.',
			'Issue the JWT for the user''s own role, not for a group it belongs to.');
	END IF;
	RETURN owner_oid::regrole;
END
$$;

COMMENT ON FUNCTION iapi_rest_internal.token_owner() IS
	'Internal: the request''s role as the owner of personal tokens; 403 for a group role (a role with members other than the login role)';

-- As in a fresh installation: PUBLIC's, like the other helpers the SECURITY
-- INVOKER routes call (it reads the catalog and raises errors, nothing
-- else), and no grant from ALTER DEFAULT PRIVILEGES.  A database that
-- revokes PUBLIC's grants on the helpers grants it to iapi_token_user, as
-- rest/roles.sql now does.
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
		 WHERE p.oid = 'iapi_rest_internal.token_owner()'::pg_catalog.regprocedure
		   AND a.grantee <> p.proowner
	LOOP
		EXECUTE stmt;
	END LOOP;
END
$$;

REVOKE ALL ON FUNCTION iapi_rest_internal.token_owner() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION iapi_rest_internal.token_owner() TO PUBLIC;

CREATE OR REPLACE FUNCTION iapi_rest.create_access_token(
	"lifetimeSeconds" integer DEFAULT NULL,
	description text DEFAULT NULL)
RETURNS iapi_rest.access_token
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	result iapi_rest.access_token;
	st text; msg text; det text; hnt text;
BEGIN
	PERFORM iapi_rest_internal.token_owner();
	IF "lifetimeSeconds" IS NULL THEN
		PERFORM iapi_rest_internal.raise_http(400, 'lifetimeSeconds is required', NULL,
			'Give the lifetime in seconds, or -1 for a token that never expires.');
	END IF;
	BEGIN
		SELECT c.token_value,
			   iapi_rest_internal.token_info(c.token_id, c.description,
											 c.expired_at, c.last_used, c.created_at)
		  INTO result
		  FROM iapi_tokens.create_access_token("lifetimeSeconds",
											   create_access_token.description) c;
	EXCEPTION WHEN check_violation THEN
		GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT;
		PERFORM iapi_rest_internal.raise_http(409, msg || '; delete one first', NULL,
			'DELETE /v4/apiAccessTokens/{tokenId} deletes one.');
	END;
	PERFORM set_config('response.status', '201', true);
	RETURN result;
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
		det = PG_EXCEPTION_DETAIL, hnt = PG_EXCEPTION_HINT;
	PERFORM iapi_rest_internal.rethrow(st, msg, det, hnt);
	RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION iapi_rest.list_access_tokens()
RETURNS iapi_rest.access_token_list
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	tokens iapi_rest.token_info[];
BEGIN
	PERFORM iapi_rest_internal.token_owner();
	SELECT coalesce(array_agg(
				iapi_rest_internal.token_info(t.token_id, t.description, t.expired_at,
											  t.last_used, t.created_at)
				ORDER BY t.created_at DESC, t.token_id),
			'{}')
	  INTO tokens
	  FROM iapi_tokens.list_access_tokens() t;
	RETURN ROW(tokens)::iapi_rest.access_token_list;
END
$$;

CREATE OR REPLACE FUNCTION iapi_rest.get_access_token("tokenId" uuid DEFAULT NULL)
RETURNS iapi_rest.token_info
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	result iapi_rest.token_info;
	st text; msg text; det text; hnt text;
BEGIN
	PERFORM iapi_rest_internal.token_owner();
	SELECT i.*
	  INTO result
	  FROM iapi_tokens.get_access_token(
			iapi_rest_internal.path_param("tokenId", 'x-iapi-token-id', 'tokenId')) t,
		   LATERAL iapi_rest_internal.token_info(t.token_id, t.description, t.expired_at,
												 t.last_used, t.created_at) i;
	RETURN result;
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
		det = PG_EXCEPTION_DETAIL, hnt = PG_EXCEPTION_HINT;
	PERFORM iapi_rest_internal.rethrow(st, msg, det, hnt);
	RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION iapi_rest.delete_access_token("tokenId" uuid DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	st text; msg text; det text; hnt text;
BEGIN
	PERFORM iapi_rest_internal.token_owner();
	PERFORM iapi_tokens.delete_access_token(
		iapi_rest_internal.path_param("tokenId", 'x-iapi-token-id', 'tokenId'));
	PERFORM set_config('response.status', '204', true);
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
		det = PG_EXCEPTION_DETAIL, hnt = PG_EXCEPTION_HINT;
	PERFORM iapi_rest_internal.rethrow(st, msg, det, hnt);
END
$$;
