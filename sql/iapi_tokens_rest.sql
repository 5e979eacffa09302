-- iapi_tokens_rest: the HTTP routes of the seeds, served by PostgREST.
--
-- This is the full install script of the current version (1.3); the build
-- copies it to sql/iapi_tokens_rest--1.3.sql.  sql/iapi_tokens_rest--1.0.sql
-- stays as released, and the sql/iapi_tokens_rest--A--B.sql scripts update it.
--
-- PostgREST exposes schema iapi_rest.  Each route is one function that
-- returns the seed's object as a composite type (PostgREST renders it as
-- JSON) and sets the HTTP status:
--   * source routes act for the Stitch client named by the JWT's
--     stitch_client_id claim; another client's source does not exist (404);
--   * personal-token routes act for the JWT's role, which owns the tokens;
--   * authenticate() is the db-pre-request: it verifies an X-Api-Key header
--     with iapi_tokens.check_token(), so whoami() and the user's own
--     functions and policies can read iapi_tokens.current_token(); a key
--     over its rate limit gets 429 with Retry-After and RateLimit headers.
-- Errors use PostgREST's body (code, message, details, hint) and a real
-- status through PTxxx SQLSTATEs; see README.md, "Serving over HTTP".
-- Path parameters come from the arguments or from the X-Iapi-Source-Id and
-- X-Iapi-Token-Id headers that rest/nginx/iapi_tokens.conf sets.

\echo Use "CREATE EXTENSION iapi_tokens_rest" to load this file. \quit

-- The pre-request needs iapi_tokens.check_token(), new in 1.5, and whoami
-- tokens.use_count, new in 1.4.  PL/pgSQL bodies are checked only when they
-- run, so check here, not at the first request.
DO $$
BEGIN
	IF (SELECT pg_catalog.string_to_array(e.extversion, '.')::integer[]
		  FROM pg_catalog.pg_extension e WHERE e.extname = 'iapi_tokens')
	   OPERATOR(pg_catalog.<) '{1,5}'::integer[] THEN
		RAISE EXCEPTION 'iapi_tokens_rest needs iapi_tokens 1.5 or later'
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'Run ALTER EXTENSION iapi_tokens UPDATE first.';
	END IF;
END
$$;

COMMENT ON SCHEMA iapi_rest IS
	'The PostgREST routes of iapi_tokens (extension iapi_tokens_rest); expose it with db-schemas';

-- Helpers live apart, so that PostgREST, which serves every function of
-- iapi_rest a role may execute, never offers them as routes.
CREATE SCHEMA iapi_rest_internal;

COMMENT ON SCHEMA iapi_rest_internal IS
	'Internal helpers of iapi_tokens_rest; never exposed by PostgREST';

-- ---------------------------------------------------------------------------
-- Errors
-- ---------------------------------------------------------------------------

-- The core's SQLSTATEs that PostgREST would answer with a misleading status
-- (55000 is a 500 there, 23514 a 400, 42704 a 400, a transient conflict a
-- 500) get the right one; the rest already map well (22xxx 400, 23505 409,
-- 42501 401/403, PTnnn nnn) and pass.  RAISE refuses NULL options, hence the
-- four forms.
CREATE FUNCTION iapi_rest_internal.rethrow(
	code text,
	message text,
	detail text,
	hint text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	status integer := CASE rethrow.code
		WHEN '42704' THEN 404	-- undefined_object: unknown, or not the caller's
		WHEN '55000' THEN 409	-- object_not_in_prerequisite_state
		WHEN '23514' THEN 409	-- check_violation: a token limit
		WHEN '40001' THEN 503	-- serialization_failure: retry
		WHEN '40P01' THEN 503	-- deadlock_detected: retry
		WHEN '55P03' THEN 503	-- lock_not_available: retry
		END;
BEGIN
	IF status IS NOT NULL THEN
		code := 'PT' || status;
	END IF;
	IF nullif(detail, '') IS NULL AND nullif(hint, '') IS NULL THEN
		RAISE EXCEPTION USING ERRCODE = rethrow.code, MESSAGE = message;
	ELSIF nullif(detail, '') IS NULL THEN
		RAISE EXCEPTION USING ERRCODE = rethrow.code, MESSAGE = message,
							  HINT = hint;
	ELSIF nullif(hint, '') IS NULL THEN
		RAISE EXCEPTION USING ERRCODE = rethrow.code, MESSAGE = message,
							  DETAIL = detail;
	ELSE
		RAISE EXCEPTION USING ERRCODE = rethrow.code, MESSAGE = message,
							  DETAIL = detail, HINT = hint;
	END IF;
END
$$;

COMMENT ON FUNCTION iapi_rest_internal.rethrow(text, text, text, text) IS
	'Internal: raises an error again with the HTTP status its SQLSTATE means to a client';

-- PostgREST answers status NNN for SQLSTATE PTNNN.
CREATE FUNCTION iapi_rest_internal.raise_http(
	status integer,
	message text,
	detail text DEFAULT NULL,
	hint text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM iapi_rest_internal.rethrow('PT' || status, message, detail, hint);
END
$$;

COMMENT ON FUNCTION iapi_rest_internal.raise_http(integer, text, text, text) IS
	'Raises SQLSTATE PT<status>, which PostgREST answers with that HTTP status';

-- A 401 carries WWW-Authenticate, which only PostgREST's SQLSTATE PGRST
-- (a JSON body and a JSON status with headers) can add to an error.
CREATE FUNCTION iapi_rest_internal.raise_unauthorized(message text, token_error text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	challenge text := 'ApiKey realm="iapi_tokens"'
		|| CASE WHEN token_error IS NULL THEN ''
				ELSE pg_catalog.format(', error="%s"', token_error) END;
BEGIN
	RAISE SQLSTATE 'PGRST' USING
		MESSAGE = pg_catalog.json_build_object(
			'code', 'PT401',
			'message', message,
			'details', NULL,
			'hint', 'Send a valid iapi_tokens token in the X-Api-Key header.')::text,
		DETAIL = pg_catalog.json_build_object(
			'status', 401,
			'headers', pg_catalog.json_build_object('WWW-Authenticate', challenge))::text;
END
$$;

COMMENT ON FUNCTION iapi_rest_internal.raise_unauthorized(text, text) IS
	'Internal: answers 401 with a WWW-Authenticate challenge for the X-Api-Key scheme';

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

-- ---------------------------------------------------------------------------
-- Request context
-- ---------------------------------------------------------------------------

CREATE FUNCTION iapi_rest_internal.request_header(name text)
RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN NULLIF(pg_catalog.current_setting('request.headers', true), '')::json
	   OPERATOR(pg_catalog.->>) pg_catalog.lower(name);

COMMENT ON FUNCTION iapi_rest_internal.request_header(text) IS
	'A header of the current PostgREST request (request.headers), or NULL';

-- The argument or, failing it, the header nginx sets from the path; both
-- given must agree.  The value itself is never echoed: it is the caller's.
CREATE FUNCTION iapi_rest_internal.path_param(argument anyelement, header text, name text)
RETURNS anyelement
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	raw text := nullif(iapi_rest_internal.request_header(header), '');
	from_header argument%TYPE;
BEGIN
	IF raw IS NOT NULL THEN
		BEGIN
			from_header := raw;
		EXCEPTION WHEN data_exception THEN
			PERFORM iapi_rest_internal.raise_http(400,
				format('%s in the %s header is not valid', name, header),
				format('It must be a %s.', pg_typeof(argument)));
		END;
	END IF;
	IF argument IS NOT NULL AND from_header IS NOT NULL
		AND argument IS DISTINCT FROM from_header THEN
		PERFORM iapi_rest_internal.raise_http(400,
			format('%s in the path and in the request differ', name));
	END IF;
	IF argument IS NULL AND from_header IS NULL THEN
		PERFORM iapi_rest_internal.raise_http(400, format('%s is required', name), NULL,
			format('Give %s in the path, the request, or the %s header.', name, header));
	END IF;
	RETURN coalesce(argument, from_header);
END
$$;

COMMENT ON FUNCTION iapi_rest_internal.path_param(anyelement, text, text) IS
	'Internal: a path parameter, from the function''s argument or from the header nginx sets';

CREATE FUNCTION iapi_rest_internal.client_id()
RETURNS bigint
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	claim text := nullif(current_setting('request.jwt.claims', true), '')::jsonb
				  ->> 'stitch_client_id';
BEGIN
	IF claim IS NULL THEN
		PERFORM iapi_rest_internal.raise_http(403, 'the JWT has no stitch_client_id claim',
			'Source routes act for the Stitch client the claim names.',
			'Issue the JWT with a numeric stitch_client_id claim.');
	END IF;
	-- Not 0: sources without a client share that name space.
	IF claim !~ '^[1-9][0-9]{0,17}$' THEN
		PERFORM iapi_rest_internal.raise_http(403, 'the stitch_client_id claim is not a client id',
			'It must be a positive integer.');
	END IF;
	RETURN claim::bigint;
END
$$;

COMMENT ON FUNCTION iapi_rest_internal.client_id() IS
	'Internal: the Stitch client of the request, from the JWT''s stitch_client_id claim';

-- Another client's source answers exactly as an unknown one does.
CREATE FUNCTION iapi_rest_internal.client_source(source_id bigint)
RETURNS bigint
LANGUAGE plpgsql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	client bigint := iapi_rest_internal.client_id();
	sid bigint := iapi_rest_internal.path_param(client_source.source_id, 'x-iapi-source-id',
									   'source_id');
BEGIN
	PERFORM FROM iapi_tokens.sources s
	 WHERE s.id = sid AND s.stitch_client_id = client;
	IF NOT FOUND THEN
		PERFORM iapi_rest_internal.raise_http(404, format('source %s does not exist', sid));
	END IF;
	RETURN sid;
END
$$;

COMMENT ON FUNCTION iapi_rest_internal.client_source(bigint) IS
	'Internal: the source id of the request if the caller''s client owns it; 404 otherwise';

-- Personal tokens belong to the request's role.  A group role (one with
-- members, such as iapi_token_user) owns none: its tokens would be shared by
-- every member, and by everyone who can present a JWT naming it.  Two kinds
-- of membership do not make a group:
--   * the session's login role: PostgREST's authenticator is a member of
--     every role it may switch to;
--   * from 16 on, a grant with neither INHERIT nor SET, through which the
--     member can act as the role in no way (such as the ADMIN-only grant a
--     CREATEROLE user gets on the roles it creates).  15 has no such options:
--     there every grant counts.
-- SECURITY INVOKER: the role is the caller's.
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

-- ---------------------------------------------------------------------------
-- Response shapes.  Each route returns a composite type (or a set of them),
-- so PostgREST renders the seed's object (or array) itself, and SQL callers
-- get columns.  Timestamps are text in the seeds' formats.
-- ---------------------------------------------------------------------------

-- The Connect API Source object, in the order of seed 002's example.
CREATE TYPE iapi_rest.source AS (
	properties jsonb,
	updated_at text,
	schedule jsonb,
	name text,
	type text,
	deleted_at text,
	system_paused_at text,
	stitch_client_id bigint,
	paused_at text,
	id bigint,
	display_name text,
	created_at text,
	report_card jsonb);

COMMENT ON TYPE iapi_rest.source IS
	'The Connect API v4 Source object (seed 002)';

CREATE TYPE iapi_rest.import_api_token AS (
	id bigint,
	access_token text);

COMMENT ON TYPE iapi_rest.import_api_token IS
	'The Import API access token object of POST /v4/sources/{source_id}/tokens (seed 000)';

CREATE TYPE iapi_rest.import_api_token_v3 AS (
	access_token text,
	connection jsonb);

COMMENT ON TYPE iapi_rest.import_api_token_v3 IS
	'The older response of POST /v4/sources/{source_id}/tokens (seed 001), other tokens masked';

CREATE TYPE iapi_rest.token_info AS (
	"tokenId" uuid,
	description text,
	"expiredAt" text,
	"lastUsed" text,
	"createdAt" text);

COMMENT ON TYPE iapi_rest.token_info IS
	'The Trifacta tokenInfo object (seed 003)';

CREATE TYPE iapi_rest.access_token AS (
	"tokenValue" text,
	"tokenInfo" iapi_rest.token_info);

COMMENT ON TYPE iapi_rest.access_token IS
	'The response of POST /v4/apiAccessTokens (seed 003)';

CREATE TYPE iapi_rest.access_token_list AS (
	data iapi_rest.token_info[]);

COMMENT ON TYPE iapi_rest.access_token_list IS
	'The response of GET /v4/apiAccessTokens: {"data": [tokenInfo, ...]}';

CREATE TYPE iapi_rest.identity AS (
	token_id bigint,
	source_id bigint,
	stitch_client_id bigint,
	owner text,
	access_token_id uuid,
	created_at text,
	expires_at text,
	last_used_at text,
	use_count bigint,
	scopes text[],
	metadata jsonb);

COMMENT ON TYPE iapi_rest.identity IS
	'Who a request''s X-Api-Key belongs to (GET /rpc/whoami)';

CREATE FUNCTION iapi_rest_internal.iso8601_ms(ts timestamptz)
RETURNS text
LANGUAGE sql STABLE STRICT PARALLEL SAFE
RETURN pg_catalog.to_char(pg_catalog.timezone('UTC', ts),
						  'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"');

COMMENT ON FUNCTION iapi_rest_internal.iso8601_ms(timestamptz) IS
	'Formats a timestamp as the Trifacta API does: ISO 8601, UTC, milliseconds, trailing Z';

CREATE FUNCTION iapi_rest_internal.token_info(
	token_id uuid,
	description text,
	expired_at timestamptz,
	last_used timestamptz,
	created_at timestamptz)
RETURNS iapi_rest.token_info
LANGUAGE sql STABLE PARALLEL SAFE
RETURN ROW(token_id, description,
		   iapi_rest_internal.iso8601_ms(expired_at),
		   iapi_rest_internal.iso8601_ms(last_used),
		   iapi_rest_internal.iso8601_ms(created_at))::iapi_rest.token_info;

COMMENT ON FUNCTION iapi_rest_internal.token_info(uuid, text, timestamptz, timestamptz, timestamptz) IS
	'The Trifacta tokenInfo object';

-- source_json() is the core's Source object; its keys are the type's fields.
CREATE FUNCTION iapi_rest_internal.source(source_id bigint)
RETURNS iapi_rest.source
LANGUAGE sql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
RETURN pg_catalog.jsonb_populate_record(NULL::iapi_rest.source,
										iapi_tokens.source_json(source_id));

COMMENT ON FUNCTION iapi_rest_internal.source(bigint) IS
	'Internal: a source as the Source object type';

-- ---------------------------------------------------------------------------
-- Stitch Connect: sources and their Import API tokens
-- ---------------------------------------------------------------------------

CREATE FUNCTION iapi_rest.create_source(name text DEFAULT NULL, display_name text DEFAULT NULL)
RETURNS iapi_rest.source
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	sid bigint;
	st text; msg text; det text; hnt text;
BEGIN
	sid := iapi_tokens.create_source(create_source.name, create_source.display_name,
									 iapi_rest_internal.client_id());
	PERFORM set_config('response.status', '201', true);
	RETURN iapi_rest_internal.source(sid);
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
		det = PG_EXCEPTION_DETAIL, hnt = PG_EXCEPTION_HINT;
	PERFORM iapi_rest_internal.rethrow(st, msg, det, hnt);
	RETURN NULL;
END
$$;

COMMENT ON FUNCTION iapi_rest.create_source(text, text) IS
	'POST /v4/sources: creates an Import API source for the caller''s client; 201 and the Source object';

CREATE FUNCTION iapi_rest.list_sources()
RETURNS SETOF iapi_rest.source
LANGUAGE sql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	-- Not iapi_tokens.list_sources(client): its "all or one client" filter
	-- cannot use sources_client_idx.
	SELECT r.*
	  FROM iapi_tokens.sources s,
		   LATERAL iapi_rest_internal.source(s.id) r
	 WHERE s.stitch_client_id = iapi_rest_internal.client_id()
	 ORDER BY s.id;
END;

COMMENT ON FUNCTION iapi_rest.list_sources() IS
	'GET /v4/sources: the caller''s client''s Source objects';

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

-- Seed 001 returned every active token in plaintext.  Only hashes are kept,
-- so the other tokens show their display prefix, masked.
--
-- The new token never enters a query: a PL/pgSQL variable that a query uses
-- is a parameter, which a custom plan turns into a constant, and auto_explain
-- (log_verbose) prints the plan.  The other tokens are read by a query; the
-- new one joins them in simple expressions (no FROM, no aggregate), which
-- PL/pgSQL evaluates without the executor, so no hook sees them.
CREATE FUNCTION iapi_rest.generate_token_v3(source_id bigint DEFAULT NULL)
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

COMMENT ON FUNCTION iapi_rest.generate_token_v3(bigint) IS
	'The older POST /v4/sources/{source_id}/tokens response (seed 001), with the other tokens masked';

CREATE FUNCTION iapi_rest.list_tokens(source_id bigint DEFAULT NULL)
RETURNS TABLE (token_id bigint, created_at text)
LANGUAGE plpgsql STABLE ROWS 2
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	sid bigint;
	st text; msg text; det text; hnt text;
BEGIN
	sid := iapi_rest_internal.client_source(list_tokens.source_id);
	RETURN QUERY
		SELECT t.token_id, iapi_tokens.iso8601(t.created_at)
		  FROM iapi_tokens.list_tokens(sid) t
		 ORDER BY t.token_id DESC;
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
		det = PG_EXCEPTION_DETAIL, hnt = PG_EXCEPTION_HINT;
	PERFORM iapi_rest_internal.rethrow(st, msg, det, hnt);
END
$$;

COMMENT ON FUNCTION iapi_rest.list_tokens(bigint) IS
	'GET /v4/sources/{source_id}/tokens: [{"token_id", "created_at"}], newest first';

CREATE FUNCTION iapi_rest.revoke_token(source_id bigint DEFAULT NULL, token_id bigint DEFAULT NULL)
RETURNS iapi_rest.source
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	sid bigint;
	tid bigint;
	st text; msg text; det text; hnt text;
BEGIN
	sid := iapi_rest_internal.client_source(revoke_token.source_id);
	tid := iapi_rest_internal.path_param(revoke_token.token_id, 'x-iapi-token-id', 'token_id');
	RETURN jsonb_populate_record(NULL::iapi_rest.source, iapi_tokens.revoke_token(sid, tid));
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
		det = PG_EXCEPTION_DETAIL, hnt = PG_EXCEPTION_HINT;
	PERFORM iapi_rest_internal.rethrow(st, msg, det, hnt);
	RETURN NULL;
END
$$;

COMMENT ON FUNCTION iapi_rest.revoke_token(bigint, bigint) IS
	'DELETE /v4/sources/{source_id}/tokens/{token_id}: revokes the token; the Source object with its new updated_at';

-- ---------------------------------------------------------------------------
-- Trifacta: personal access tokens, owned by the request's role.  SECURITY
-- INVOKER, so that iapi_tokens sees the JWT's role as the owner.  Each route
-- first refuses a group role (token_owner()), with 403.
-- ---------------------------------------------------------------------------

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

CREATE FUNCTION iapi_rest.list_access_tokens()
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

COMMENT ON FUNCTION iapi_rest.list_access_tokens() IS
	'GET /v4/apiAccessTokens: {"data": [tokenInfo, ...]}, the caller''s tokens, newest first';

CREATE FUNCTION iapi_rest.get_access_token("tokenId" uuid DEFAULT NULL)
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

COMMENT ON FUNCTION iapi_rest.get_access_token(uuid) IS
	'GET /v4/apiAccessTokens/{tokenId}: the tokenInfo of one of the caller''s tokens';

CREATE FUNCTION iapi_rest.delete_access_token("tokenId" uuid DEFAULT NULL)
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

COMMENT ON FUNCTION iapi_rest.delete_access_token(uuid) IS
	'DELETE /v4/apiAccessTokens/{tokenId}: revokes one of the caller''s tokens; 204, no body';

-- ---------------------------------------------------------------------------
-- API-key authentication
-- ---------------------------------------------------------------------------

-- VOLATILE: a verification records the key's use and counts it against
-- its rate limit.  An error here names no token.
--
-- The key is never a PL/pgSQL variable: the query that verifies it would
-- take the variable as a parameter, which a custom plan turns into a
-- constant that auto_explain (log_verbose) prints.  The query reads the
-- header itself, at execution.
CREATE FUNCTION iapi_rest.authenticate()
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

CREATE FUNCTION iapi_rest.whoami()
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

-- A 403 with an RFC 6750 challenge that names the scope: only PostgREST's
-- SQLSTATE PGRST can add the header.  Without a current token it is the 401
-- of a missing key.
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

-- The scoped example: an Import API key reads its own source, if it was
-- created with scope sources:read (or without any restriction).
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

-- For a secret scanner's report.  The answer says how many were revoked,
-- never which.  The body arrives as jsonb, not text[]: PostgreSQL's array
-- parser quotes a malformed value, a token among others, in its error.
-- jsonb_populate_record in a plain expression converts it without a query
-- that auto_explain could print, and any error it raises is replaced by one
-- that shows nothing of the input.
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

-- ---------------------------------------------------------------------------
-- Privileges.  The routes are nobody's: rest/roles.sql grants each to the
-- roles PostgREST switches to.  PUBLIC may use the helpers that SECURITY
-- INVOKER routes call as the request's role, so that a grant on a route is
-- all a role needs; they read the request and the catalog, and raise
-- errors, nothing else.
-- client_id() and client_source() serve SECURITY DEFINER routes only and
-- stay the owner's.
-- ---------------------------------------------------------------------------

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
		 WHERE p.pronamespace IN ('iapi_rest'::pg_catalog.regnamespace,
								  'iapi_rest_internal'::pg_catalog.regnamespace)
		   AND a.grantee <> p.proowner
	LOOP
		EXECUTE stmt;
	END LOOP;
END
$$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA iapi_rest FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA iapi_rest_internal FROM PUBLIC;
REVOKE ALL ON SCHEMA iapi_rest FROM PUBLIC;
REVOKE ALL ON SCHEMA iapi_rest_internal FROM PUBLIC;
GRANT USAGE ON SCHEMA iapi_rest_internal TO PUBLIC;
GRANT EXECUTE ON FUNCTION
	iapi_rest_internal.request_header(text),
	iapi_rest_internal.raise_http(integer, text, text, text),
	iapi_rest_internal.rethrow(text, text, text, text),
	iapi_rest_internal.raise_unauthorized(text, text),
	iapi_rest_internal.raise_rate_limited(integer, interval, integer),
	iapi_rest_internal.rate_limit_headers(integer, interval, integer, integer),
	iapi_rest_internal.path_param(anyelement, text, text),
	iapi_rest_internal.iso8601_ms(timestamptz),
	iapi_rest_internal.token_info(uuid, text, timestamptz, timestamptz, timestamptz),
	iapi_rest_internal.token_owner(),
	iapi_rest_internal.require_scope(text)
	TO PUBLIC;
