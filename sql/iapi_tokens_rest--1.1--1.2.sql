-- iapi_tokens_rest 1.1 -> 1.2 (needs iapi_tokens 1.4).
--
-- whoami shows the token's last use, use count, scopes and metadata; it
-- keeps its signature and is replaced in place, so the grants rest/roles.sql
-- made on it stay the user's.  generate_token and create_access_token take
-- scopes and metadata, which changes their signatures: they are dropped and
-- created again with the grants they had, and a warning, since pg_dump then
-- counts those grants as the extension's own.  New: the scoped example
-- route my_source() and revoke_leaked() for secret scanners.

\echo Use "ALTER EXTENSION iapi_tokens_rest UPDATE TO '1.2'" to load this file. \quit

DO $$
BEGIN
	IF (SELECT pg_catalog.string_to_array(e.extversion, '.')::integer[]
		  FROM pg_catalog.pg_extension e WHERE e.extname = 'iapi_tokens')
	   OPERATOR(pg_catalog.<) '{1,4}'::integer[] THEN
		RAISE EXCEPTION 'iapi_tokens_rest 1.2 needs iapi_tokens 1.4 or later'
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'Run ALTER EXTENSION iapi_tokens UPDATE first.';
	END IF;
END
$$;

ALTER TYPE iapi_rest.identity
	ADD ATTRIBUTE last_used_at text,
	ADD ATTRIBUTE use_count bigint,
	ADD ATTRIBUTE scopes text[],
	ADD ATTRIBUTE metadata jsonb;

CREATE OR REPLACE FUNCTION iapi_rest.whoami()
RETURNS iapi_rest.identity
LANGUAGE plpgsql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	result iapi_rest.identity;
BEGIN
	-- Last use and count as the usage flushes applied them, not this request.
	SELECT t.token_id, t.source_id, s.stitch_client_id, t.owner::text, t.access_token_id,
		   iapi_tokens.iso8601(t.created_at), iapi_tokens.iso8601(t.expires_at),
		   iapi_tokens.iso8601(k.last_used_at), k.use_count, t.scopes, t.metadata
	  INTO result
	  FROM iapi_tokens.current_token() t
	  LEFT JOIN iapi_tokens.sources s ON s.id = t.source_id
	  LEFT JOIN iapi_tokens.tokens k ON k.id = t.token_id;
	IF NOT FOUND THEN
		PERFORM iapi_rest_internal.raise_unauthorized('no API key was given', NULL);
	END IF;
	RETURN result;
END
$$;

COMMENT ON FUNCTION iapi_rest.whoami() IS
	'GET /rpc/whoami: who the request''s X-Api-Key belongs to: a source (and its client) or a role';

-- The grants of the two routes whose signatures change, by their new ones.
SELECT pg_catalog.set_config('iapi_tokens_rest_update.acls',
	(SELECT pg_catalog.jsonb_object_agg(f.new_signature, coalesce(p.proacl::text, ''))
	   FROM (VALUES ('iapi_rest.generate_token(bigint)', 'iapi_rest.generate_token(bigint, text[], jsonb)'),
				('iapi_rest.create_access_token(integer, text)', 'iapi_rest.create_access_token(integer, text, text[], jsonb)')) f(old_signature, new_signature)
	   JOIN pg_catalog.pg_proc p ON p.oid = f.old_signature::pg_catalog.regprocedure)::text,
	true);

DROP FUNCTION iapi_rest.generate_token(bigint);
DROP FUNCTION iapi_rest.create_access_token(integer, text);

CREATE FUNCTION iapi_rest.generate_token(
	source_id bigint DEFAULT NULL,
	scopes text[] DEFAULT NULL,
	metadata jsonb DEFAULT NULL)
RETURNS iapi_rest.import_api_token
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	sid bigint;
	result iapi_rest.import_api_token;
	st text; msg text; det text; hnt text;
BEGIN
	sid := iapi_rest_internal.client_source(generate_token.source_id);
	BEGIN
		SELECT g.id, g.access_token INTO result
		  FROM iapi_tokens.generate_token(sid, NULL, NULL, generate_token.scopes,
										  generate_token.metadata) g;
	EXCEPTION WHEN check_violation THEN
		PERFORM iapi_rest_internal.raise_http(409,
			format('source %s already has two active tokens; revoke one first', sid),
			'An Import API source has at most two active tokens.',
			format('DELETE /v4/sources/%s/tokens/{token_id} revokes one.', sid));
	END;
	RETURN result;
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
		det = PG_EXCEPTION_DETAIL, hnt = PG_EXCEPTION_HINT;
	PERFORM iapi_rest_internal.rethrow(st, msg, det, hnt);
	RETURN NULL;
END
$$;

COMMENT ON FUNCTION iapi_rest.generate_token(bigint, text[], jsonb) IS
	'POST /v4/sources/{source_id}/tokens: {"id", "access_token"}, with optional "scopes" and "metadata" in the body; the token is shown only here';

CREATE FUNCTION iapi_rest.create_access_token(
	"lifetimeSeconds" integer DEFAULT NULL,
	description text DEFAULT NULL,
	scopes text[] DEFAULT NULL,
	metadata jsonb DEFAULT NULL)
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
											   create_access_token.description,
											   create_access_token.scopes,
											   create_access_token.metadata) c;
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

COMMENT ON FUNCTION iapi_rest.create_access_token(integer, text, text[], jsonb) IS
	'POST /v4/apiAccessTokens: 201 and {"tokenValue", "tokenInfo"}; the token is shown only here';

CREATE FUNCTION iapi_rest_internal.require_scope(scope text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF NOT EXISTS (SELECT FROM iapi_tokens.current_token()) THEN
		PERFORM iapi_rest_internal.raise_unauthorized('no API key was given', NULL);
	END IF;
	IF iapi_tokens.has_scope(require_scope.scope) THEN
		RETURN;
	END IF;
	RAISE SQLSTATE 'PGRST' USING
		MESSAGE = pg_catalog.json_build_object(
			'code', 'PT403',
			'message', pg_catalog.format('the API key lacks scope "%s"', require_scope.scope),
			'details', NULL,
			'hint', 'Use a key created with this scope.')::text,
		DETAIL = pg_catalog.json_build_object(
			'status', 403,
			'headers', pg_catalog.json_build_object('WWW-Authenticate',
				pg_catalog.format('ApiKey realm="iapi_tokens", error="insufficient_scope", scope="%s"',
								  require_scope.scope)))::text;
END
$$;

COMMENT ON FUNCTION iapi_rest_internal.require_scope(text) IS
	'Internal: 403 with WWW-Authenticate error="insufficient_scope" unless the request''s API key may use scope; 401 without a key';

CREATE FUNCTION iapi_rest.my_source()
RETURNS iapi_rest.source
LANGUAGE plpgsql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	sid bigint;
BEGIN
	PERFORM iapi_rest_internal.require_scope('sources:read');
	SELECT t.source_id INTO sid FROM iapi_tokens.current_token() t;
	IF sid IS NULL THEN
		PERFORM iapi_rest_internal.raise_http(404, 'the API key is not an Import API source token',
			NULL, 'Use a key made by POST /v4/sources/{source_id}/tokens.');
	END IF;
	RETURN iapi_rest_internal.source(sid);
END
$$;

COMMENT ON FUNCTION iapi_rest.my_source() IS
	'GET /rpc/my_source (GET /v4/source): the Source object of the request''s Import API key; needs scope sources:read';

CREATE TYPE iapi_rest.leak_report AS (revoked integer);

COMMENT ON TYPE iapi_rest.leak_report IS
	'The response of POST /rpc/revoke_leaked: {"revoked": n}';

CREATE TYPE iapi_rest_internal.token_list AS (tokens text[]);

COMMENT ON TYPE iapi_rest_internal.token_list IS
	'Internal: turns a JSON array of tokens into text[] without a query';

CREATE FUNCTION iapi_rest.revoke_leaked(tokens jsonb DEFAULT NULL)
RETURNS iapi_rest.leak_report
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	reported text[];
	revoked integer;
BEGIN
	IF pg_catalog.jsonb_typeof(revoke_leaked.tokens) IS DISTINCT FROM 'array' THEN
		PERFORM iapi_rest_internal.raise_http(400, 'the report needs a "tokens" array',
			NULL, 'Send {"tokens": ["...", ...]}, at most 1000 tokens.');
	END IF;
	BEGIN
		reported := (pg_catalog.jsonb_populate_record(NULL::iapi_rest_internal.token_list,
			pg_catalog.jsonb_build_object('tokens', revoke_leaked.tokens))).tokens;
	EXCEPTION WHEN OTHERS THEN
		reported := NULL;
	END;
	IF reported IS NULL THEN
		PERFORM iapi_rest_internal.raise_http(400, '"tokens" must be an array of strings',
			NULL, 'Send {"tokens": ["...", ...]}, at most 1000 tokens.');
	END IF;
	revoked := iapi_tokens.revoke_leaked(reported);
	IF revoked IS NULL THEN
		PERFORM iapi_rest_internal.raise_http(400, 'a report holds at most 1000 tokens',
			NULL, 'Send the tokens in batches of at most 1000.');
	END IF;
	RETURN ROW(revoked)::iapi_rest.leak_report;
END
$$;

COMMENT ON FUNCTION iapi_rest.revoke_leaked(jsonb) IS
	'POST /rpc/revoke_leaked (POST /v4/credentials/revoke) {"tokens": [...]}: revokes the valid ones and answers {"revoked": n}; 400 above 1000 or for anything but an array of strings';

REVOKE ALL ON FUNCTION
	iapi_rest.generate_token(bigint, text[], jsonb),
	iapi_rest.create_access_token(integer, text, text[], jsonb),
	iapi_rest.my_source(),
	iapi_rest.revoke_leaked(jsonb),
	iapi_rest_internal.require_scope(text)
  FROM PUBLIC;
GRANT EXECUTE ON FUNCTION iapi_rest_internal.require_scope(text) TO PUBLIC;

DO $$
DECLARE
	saved record;
	grantee record;
	regranted text[] := '{}';
BEGIN
	FOR saved IN
		SELECT s.key AS function, s.value AS acl
		  FROM pg_catalog.jsonb_each_text(
				 pg_catalog.current_setting('iapi_tokens_rest_update.acls')::jsonb) s
		 WHERE s.value <> ''
	LOOP
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
			regranted := regranted || pg_catalog.format('%s to %s', saved.function,
				CASE WHEN grantee.grantee = 0 THEN 'PUBLIC'
					 ELSE pg_catalog.pg_get_userbyid(grantee.grantee) END);
		END LOOP;
	END LOOP;
	IF cardinality(regranted) > 0 THEN
		RAISE WARNING 'iapi_tokens_rest 1.2 re-created routes with the grants they had: %',
			pg_catalog.array_to_string(regranted, '; ')
			USING DETAIL = 'pg_dump now counts them as the extension''s own, so a dump restored into a fresh installation leaves them out.',
				  HINT = 'After such a restore, run rest/roles.sql and your own GRANTs on these routes again.';
	END IF;
END
$$;
