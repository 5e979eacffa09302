-- iapi_tokens_rest 1.2 -> 1.3 (needs iapi_tokens 1.5).
--
-- authenticate() checks the X-Api-Key with iapi_tokens.check_token(): a key
-- over its rate limit gets 429 Too Many Requests with Retry-After and the
-- IETF draft's RateLimit-Policy and RateLimit fields, and a limited key's
-- success carries them too.  authenticate() keeps its signature and is
-- replaced in place, so the grants rest/roles.sql made on it stay the
-- user's.  generate_token and create_access_token take "rateLimit" and
-- "rateWindowSeconds", which changes their signatures: they are dropped and
-- created again with the grants they had, and a warning, since pg_dump then
-- counts those grants as the extension's own.

\echo Use "ALTER EXTENSION iapi_tokens_rest UPDATE TO '1.3'" to load this file. \quit

DO $$
BEGIN
	IF (SELECT pg_catalog.string_to_array(e.extversion, '.')::integer[]
		  FROM pg_catalog.pg_extension e WHERE e.extname = 'iapi_tokens')
	   OPERATOR(pg_catalog.<) '{1,5}'::integer[] THEN
		RAISE EXCEPTION 'iapi_tokens_rest 1.3 needs iapi_tokens 1.5 or later'
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'Run ALTER EXTENSION iapi_tokens UPDATE first.';
	END IF;
END
$$;

-- The IETF httpapi draft's fields: the policy (q requests per w seconds)
-- and the key's state in it (r remaining, t seconds until the window ends).
CREATE FUNCTION iapi_rest_internal.rate_limit_headers(
	rate_limit integer,
	rate_window interval,
	remaining integer,
	reset_after integer)
RETURNS json
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN pg_catalog.json_build_object(
	'RateLimit-Policy', pg_catalog.format('"token";q=%s;w=%s', rate_limit,
		pg_catalog.ceil(pg_catalog.date_part('epoch', rate_window))::bigint),
	'RateLimit', pg_catalog.format('"token";r=%s;t=%s', remaining, reset_after));

COMMENT ON FUNCTION iapi_rest_internal.rate_limit_headers(integer, interval, integer, integer) IS
	'Internal: the RateLimit-Policy and RateLimit header fields of a rate-limited key''s response';

-- RFC 6585's 429 with RFC 9110's Retry-After, in PostgREST's error body.
CREATE FUNCTION iapi_rest_internal.raise_rate_limited(
	rate_limit integer,
	rate_window interval,
	retry_after integer)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RAISE SQLSTATE 'PGRST' USING
		MESSAGE = pg_catalog.json_build_object(
			'code', 'PT429',
			'message', 'the API key is rate limited',
			'details', pg_catalog.format('Retry after %s seconds.', retry_after),
			'hint', pg_catalog.format('The key is limited to %s requests per %s.',
									  rate_limit, rate_window))::text,
		DETAIL = pg_catalog.json_build_object(
			'status', 429,
			'headers', (pg_catalog.json_build_object('Retry-After', retry_after::text)::jsonb
						OPERATOR(pg_catalog.||)
						iapi_rest_internal.rate_limit_headers(rate_limit, rate_window, 0,
															  retry_after)::jsonb))::text;
END
$$;

COMMENT ON FUNCTION iapi_rest_internal.raise_rate_limited(integer, interval, integer) IS
	'Internal: answers 429 Too Many Requests with Retry-After, RateLimit-Policy and RateLimit';

-- VOLATILE: a verification records the key's use and counts it against
-- its rate limit.  An error here names no token.
--
-- The key is never a PL/pgSQL variable: the query that verifies it would
-- take the variable as a parameter, which a custom plan turns into a
-- constant that auto_explain (log_verbose) prints.  The query reads the
-- header itself, at execution.
CREATE OR REPLACE FUNCTION iapi_rest.authenticate()
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	checked record;
BEGIN
	IF iapi_rest_internal.request_header('x-api-key') IS NULL THEN
		RETURN;
	END IF;
	SELECT c.status, c.rate_limit, c.rate_window, c.remaining, c.reset_after, c.retry_after
	  INTO checked
	  FROM iapi_tokens.check_token(iapi_rest_internal.request_header('x-api-key'), true) c;
	IF checked.status = 'rate_limited' THEN
		PERFORM iapi_rest_internal.raise_rate_limited(checked.rate_limit, checked.rate_window,
													  coalesce(checked.retry_after, 1));
	ELSIF checked.status IS DISTINCT FROM 'valid' THEN
		PERFORM iapi_rest_internal.raise_unauthorized('the API key is not valid', 'invalid_token');
	ELSIF checked.rate_limit IS NOT NULL THEN
		-- A route of this layer sets no headers of its own to lose these.
		PERFORM pg_catalog.set_config('response.headers',
			pg_catalog.json_build_array(
				pg_catalog.json_build_object('RateLimit-Policy',
					iapi_rest_internal.rate_limit_headers(checked.rate_limit, checked.rate_window,
						checked.remaining, checked.reset_after) OPERATOR(pg_catalog.->>) 'RateLimit-Policy'),
				pg_catalog.json_build_object('RateLimit',
					iapi_rest_internal.rate_limit_headers(checked.rate_limit, checked.rate_window,
						checked.remaining, checked.reset_after) OPERATOR(pg_catalog.->>) 'RateLimit'))::text,
			true);
	END IF;
END
$$;

COMMENT ON FUNCTION iapi_rest.authenticate() IS
	'PostgREST db-pre-request: verifies an X-Api-Key header and makes it iapi_tokens.current_token(); 401 if it is not valid, 429 with Retry-After if it is over its rate limit, RateLimit headers on a limited key''s success';

-- The grants of the two routes whose signatures change, by their new ones.
SELECT pg_catalog.set_config('iapi_tokens_rest_update.acls',
	(SELECT pg_catalog.jsonb_object_agg(f.new_signature, coalesce(p.proacl::text, ''))
	   FROM (VALUES ('iapi_rest.generate_token(bigint, text[], jsonb)', 'iapi_rest.generate_token(bigint, text[], jsonb, integer, integer)'),
				('iapi_rest.create_access_token(integer, text, text[], jsonb)', 'iapi_rest.create_access_token(integer, text, text[], jsonb, integer, integer)')) f(old_signature, new_signature)
	   JOIN pg_catalog.pg_proc p ON p.oid = f.old_signature::pg_catalog.regprocedure)::text,
	true);

DROP FUNCTION iapi_rest.generate_token(bigint, text[], jsonb);
DROP FUNCTION iapi_rest.create_access_token(integer, text, text[], jsonb);

CREATE FUNCTION iapi_rest.generate_token(
	source_id bigint DEFAULT NULL,
	scopes text[] DEFAULT NULL,
	metadata jsonb DEFAULT NULL,
	"rateLimit" integer DEFAULT NULL,
	"rateWindowSeconds" integer DEFAULT NULL)
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
										  generate_token.metadata, "rateLimit",
										  pg_catalog.make_interval(secs => "rateWindowSeconds")) g;
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

COMMENT ON FUNCTION iapi_rest.generate_token(bigint, text[], jsonb, integer, integer) IS
	'POST /v4/sources/{source_id}/tokens: {"id", "access_token"}, with optional "scopes", "metadata", "rateLimit" and "rateWindowSeconds" in the body; the token is shown only here';

CREATE FUNCTION iapi_rest.create_access_token(
	"lifetimeSeconds" integer DEFAULT NULL,
	description text DEFAULT NULL,
	scopes text[] DEFAULT NULL,
	metadata jsonb DEFAULT NULL,
	"rateLimit" integer DEFAULT NULL,
	"rateWindowSeconds" integer DEFAULT NULL)
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
											   create_access_token.metadata,
											   "rateLimit",
											   pg_catalog.make_interval(secs => "rateWindowSeconds")) c;
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

COMMENT ON FUNCTION iapi_rest.create_access_token(integer, text, text[], jsonb, integer, integer) IS
	'POST /v4/apiAccessTokens: 201 and {"tokenValue", "tokenInfo"}, with optional "scopes", "metadata", "rateLimit" and "rateWindowSeconds" in the body; the token is shown only here';

REVOKE ALL ON FUNCTION
	iapi_rest.generate_token(bigint, text[], jsonb, integer, integer),
	iapi_rest.create_access_token(integer, text, text[], jsonb, integer, integer),
	iapi_rest_internal.raise_rate_limited(integer, interval, integer),
	iapi_rest_internal.rate_limit_headers(integer, interval, integer, integer)
  FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
	iapi_rest_internal.raise_rate_limited(integer, interval, integer),
	iapi_rest_internal.rate_limit_headers(integer, interval, integer, integer)
  TO PUBLIC;

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
		RAISE WARNING 'iapi_tokens_rest 1.3 re-created routes with the grants they had: %',
			pg_catalog.array_to_string(regranted, '; ')
			USING DETAIL = 'pg_dump now counts them as the extension''s own, so a dump restored into a fresh installation leaves them out.',
				  HINT = 'After such a restore, run rest/roles.sql and your own GRANTs on these routes again.';
	END IF;
END
$$;
