-- iapi_tokens 1.3 to 1.4: token use recorded off the caller's transaction;
-- scopes and metadata.
--
-- With shared_preload_libraries = 'iapi_tokens', verification records use
-- in shared memory and a background worker applies it through
-- apply_usage(); tokens gain use_count.  Tokens also gain scopes, from a
-- registry (define_scope, drop_scope), and metadata.  The functions whose
-- arguments or result change take DROP and CREATE; their grants are
-- carried over.  A view or policy of yours that uses one of them makes this
-- update fail: drop it first and create it again after.

\echo Use "ALTER EXTENSION iapi_tokens UPDATE TO '1.4'" to load this file. \quit

CREATE TABLE iapi_tokens.scopes (
	name text NOT NULL,
	description text,
	created_at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
	CONSTRAINT scopes_pkey PRIMARY KEY (name),
	CONSTRAINT scopes_name_check
		CHECK (name ~ '^[a-z][a-z0-9_]*(:[a-z][a-z0-9_]*)*$'
			   AND pg_catalog.char_length(name) <= 64),
	CONSTRAINT scopes_description_check
		CHECK (pg_catalog.char_length(description) <= 255)
);

COMMENT ON TABLE iapi_tokens.scopes IS
	'The registry of scopes (define_scope, drop_scope): a token may be limited to some of them';

SELECT pg_catalog.pg_extension_config_dump('iapi_tokens.scopes', '');

-- The grants of the functions re-created below, by their new signatures.
SELECT pg_catalog.set_config('iapi_tokens_update.acls',
	(SELECT pg_catalog.jsonb_object_agg(f.new_signature, coalesce(p.proacl::text, ''))
	   FROM (VALUES ('iapi_tokens.generate_token(bigint, text, interval)', 'iapi_tokens.generate_token(bigint, text, interval, text[], jsonb)'),
				('iapi_tokens.create_access_token(integer, text)', 'iapi_tokens.create_access_token(integer, text, text[], jsonb)'),
				('iapi_tokens.verify_token(text)', 'iapi_tokens.verify_token(text)'),
				('iapi_tokens.authenticate(text)', 'iapi_tokens.authenticate(text)'),
				('iapi_tokens.current_token()', 'iapi_tokens.current_token()'),
				('iapi_tokens.list_token_details(bigint, boolean)', 'iapi_tokens.list_token_details(bigint, boolean)'),
				('iapi_tokens.list_access_tokens()', 'iapi_tokens.list_access_tokens()'),
				('iapi_tokens.get_access_token(uuid)', 'iapi_tokens.get_access_token(uuid)'),
				('iapi_tokens.list_all_access_tokens()', 'iapi_tokens.list_all_access_tokens()')) f(old_signature, new_signature)
	   JOIN pg_catalog.pg_proc p ON p.oid = f.old_signature::pg_catalog.regprocedure)::text,
	true);

DROP FUNCTION iapi_tokens_internal.personal_tokens_of(regrole);
DROP FUNCTION iapi_tokens_internal.personal_token_of(regrole, uuid);
DROP FUNCTION iapi_tokens_internal.store_personal_token(regrole, bytea, text, text, integer, timestamptz, integer);
DROP FUNCTION iapi_tokens_internal.store_source_token(bigint, bytea, text, text, timestamptz, timestamptz);
DROP FUNCTION iapi_tokens_internal.replace_token(iapi_tokens.tokens, interval, bytea, text, timestamptz, timestamptz, integer);
DROP FUNCTION iapi_tokens.generate_token(bigint, text, interval);
DROP FUNCTION iapi_tokens.create_access_token(integer, text);
DROP FUNCTION iapi_tokens.verify_token(text);
DROP FUNCTION iapi_tokens.authenticate(text);
DROP FUNCTION iapi_tokens.current_token();
DROP FUNCTION iapi_tokens.list_token_details(bigint, boolean);
DROP FUNCTION iapi_tokens.list_access_tokens();
DROP FUNCTION iapi_tokens.get_access_token(uuid);
DROP FUNCTION iapi_tokens.list_all_access_tokens();

-- Functions with a SQL-standard body that take the row type forbid new
-- columns; they go and come back unchanged.
DROP FUNCTION iapi_tokens_internal.record_creation(iapi_tokens.tokens);
DROP FUNCTION iapi_tokens_internal.as_personal_token(iapi_tokens.tokens);

ALTER TABLE iapi_tokens.tokens
	ADD COLUMN use_count bigint NOT NULL DEFAULT 0,
	ADD COLUMN scopes text[],
	ADD COLUMN metadata jsonb,
	ADD CONSTRAINT tokens_scopes_check
		CHECK (pg_catalog.cardinality(scopes) <= 32 AND pg_catalog.array_position(scopes, NULL) IS NULL),
	ADD CONSTRAINT tokens_metadata_check
		CHECK (pg_catalog.jsonb_typeof(metadata) = 'object'
			   AND pg_catalog.octet_length(metadata::text) <= 4096);

COMMENT ON COLUMN iapi_tokens.tokens.last_used_at IS
	'Last successful verification, as of the last usage flush (iapi_tokens.usage_flush_interval); without shared_preload_libraries, written at most once per iapi_tokens.last_used_interval';
COMMENT ON COLUMN iapi_tokens.tokens.scopes IS
	'The scopes the token is limited to (defined in iapi_tokens.scopes), fixed at creation; NULL: no restriction, empty: it can only identify itself';
COMMENT ON COLUMN iapi_tokens.tokens.metadata IS
	'A JSON object of at most 4096 bytes given at creation (a plan, a customer id); never secret, returned on verification';
COMMENT ON COLUMN iapi_tokens.tokens.use_count IS
	'Successful verifications applied so far by usage flushes (without shared_preload_libraries: the last_used_at writes)';

CREATE FUNCTION iapi_tokens_internal.record_creation(t iapi_tokens.tokens)
RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	INSERT INTO iapi_tokens.audit
		(action, token_id, access_token_id, source_id, owner_role,
		 acting_role, session_role, details)
	VALUES ('create', t.id, t.token_uuid, t.source_id, t.owner_role::text,
			iapi_tokens_internal.acting_role(), SESSION_USER,
			jsonb_build_object('expires_at', t.expires_at));
END;

COMMENT ON FUNCTION iapi_tokens_internal.record_creation(iapi_tokens.tokens) IS
	'Appends the create event of a token just stored to iapi_tokens.audit';

CREATE FUNCTION iapi_tokens_internal.as_personal_token(t iapi_tokens.tokens)
RETURNS iapi_tokens.personal_token
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN ROW(t.token_uuid, t.description, t.expires_at, t.last_used_at,
		   t.created_at)::iapi_tokens.personal_token;

COMMENT ON FUNCTION iapi_tokens_internal.as_personal_token(iapi_tokens.tokens) IS
	'A personal token''s row as the interface returns it';

CREATE FUNCTION iapi_tokens_internal.checked_scopes(scopes text[])
RETURNS text[]
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	folded text[];
	missing text;
BEGIN
	IF checked_scopes.scopes IS NULL THEN
		RETURN NULL;
	END IF;
	IF array_position(checked_scopes.scopes, NULL) IS NOT NULL THEN
		RAISE EXCEPTION 'scopes must not contain null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	folded := ARRAY(SELECT DISTINCT s FROM unnest(checked_scopes.scopes) s ORDER BY s);
	IF cardinality(folded) > 32 THEN
		RAISE EXCEPTION 'too many scopes: %', cardinality(folded)
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'A token holds at most 32 scopes.';
	END IF;
	SELECT s INTO missing
	  FROM unnest(folded) s
	 WHERE s !~ '^[a-z][a-z0-9_]*(:[a-z][a-z0-9_]*)*$' OR char_length(s) > 64
	 LIMIT 1;
	IF FOUND THEN
		RAISE EXCEPTION 'invalid scope name: "%"', left(missing, 64)
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'A scope name matches ^[a-z][a-z0-9_]*(:[a-z][a-z0-9_]*)*$ and has at most 64 characters.';
	END IF;
	PERFORM FROM iapi_tokens.scopes d WHERE d.name = ANY (folded) ORDER BY d.name FOR KEY SHARE;
	SELECT s INTO missing
	  FROM unnest(folded) s
	 WHERE NOT EXISTS (SELECT FROM iapi_tokens.scopes d WHERE d.name = s)
	 LIMIT 1;
	IF FOUND THEN
		RAISE EXCEPTION 'scope "%" is not defined', missing
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Define it first with iapi_tokens.define_scope().';
	END IF;
	RETURN folded;
END
$$;

COMMENT ON FUNCTION iapi_tokens_internal.checked_scopes(text[]) IS
	'A new token''s scopes, checked, folded and sorted; locks them against drop_scope';

CREATE FUNCTION iapi_tokens_internal.checked_metadata(metadata jsonb)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF checked_metadata.metadata IS NULL THEN
		RETURN NULL;
	END IF;
	IF jsonb_typeof(checked_metadata.metadata) <> 'object' THEN
		RAISE EXCEPTION 'metadata must be a JSON object'
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = format('It was a JSON %s.', jsonb_typeof(checked_metadata.metadata));
	END IF;
	IF octet_length(checked_metadata.metadata::text) > 4096 THEN
		RAISE EXCEPTION 'metadata is too large'
			USING ERRCODE = 'string_data_right_truncation',
				  DETAIL = format('It takes %s bytes as text; the maximum is 4096.',
								  octet_length(checked_metadata.metadata::text));
	END IF;
	RETURN checked_metadata.metadata;
END
$$;

COMMENT ON FUNCTION iapi_tokens_internal.checked_metadata(jsonb) IS
	'A new token''s metadata, checked: a JSON object of at most 4096 bytes';

CREATE FUNCTION iapi_tokens_internal.days_left(expires_at timestamptz)
RETURNS integer
LANGUAGE sql STABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT greatest(0, ceil(extract(epoch FROM $1 - statement_timestamp()) / 86400))::integer
$$;

COMMENT ON FUNCTION iapi_tokens_internal.days_left(timestamptz) IS
	'Days until expires_at, rounded up, 0 once past; NULL when it is NULL';

CREATE FUNCTION iapi_tokens_internal.personal_tokens_of(owner regrole)
RETURNS TABLE (
	token_id uuid,
	description text,
	expired_at timestamptz,
	last_used timestamptz,
	created_at timestamptz,
	use_count bigint,
	scopes text[],
	metadata jsonb,
	expires_in_days integer)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	SELECT (iapi_tokens_internal.as_personal_token(t)).*, t.use_count, t.scopes,
		   t.metadata, iapi_tokens_internal.days_left(t.expires_at)
	  FROM iapi_tokens.tokens t
	 WHERE t.owner_role = $1 AND t.revoked_at IS NULL
	 ORDER BY t.id DESC;
END;

COMMENT ON FUNCTION iapi_tokens_internal.personal_tokens_of(regrole) IS
	'A role''s personal tokens that are not deleted, newest first';

CREATE FUNCTION iapi_tokens_internal.personal_token_of(owner regrole, access_token_id uuid)
RETURNS TABLE (
	token_id uuid,
	description text,
	expired_at timestamptz,
	last_used timestamptz,
	created_at timestamptz,
	use_count bigint,
	scopes text[],
	metadata jsonb,
	expires_in_days integer)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF personal_token_of.access_token_id IS NULL THEN
		RAISE EXCEPTION 'token_id must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	RETURN QUERY
		SELECT (iapi_tokens_internal.as_personal_token(t)).*, t.use_count, t.scopes,
			   t.metadata, iapi_tokens_internal.days_left(t.expires_at)
		  FROM iapi_tokens.tokens t
		 WHERE t.token_uuid = personal_token_of.access_token_id
		   AND t.owner_role = personal_token_of.owner
		   AND t.revoked_at IS NULL;
	IF NOT FOUND THEN
		-- The same error for another role's token, so existence does not leak.
		RAISE EXCEPTION 'access token % does not exist', personal_token_of.access_token_id
			USING ERRCODE = 'undefined_object';
	END IF;
END
$$;

COMMENT ON FUNCTION iapi_tokens_internal.personal_token_of(regrole, uuid) IS
	'One of a role''s personal tokens, or the "does not exist" error';

CREATE FUNCTION iapi_tokens_internal.store_personal_token(
	owner regrole,
	token_hash bytea,
	display_prefix text,
	description text,
	lifetime_seconds integer,
	created_at timestamptz,
	max_tokens_per_owner integer,
	scopes text[],
	metadata jsonb)
RETURNS SETOF iapi_tokens.personal_token
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	stored iapi_tokens.tokens;
	token_scopes text[] := iapi_tokens_internal.checked_scopes(store_personal_token.scopes);
	token_metadata jsonb := iapi_tokens_internal.checked_metadata(store_personal_token.metadata);
BEGIN
	PERFORM iapi_tokens_internal.lock_owner(store_personal_token.owner);
	PERFORM iapi_tokens_internal.check_owner_limit(
		store_personal_token.owner, store_personal_token.max_tokens_per_owner, NULL);
	INSERT INTO iapi_tokens.tokens
		(owner_role, token_uuid, token_hash, display_prefix, description,
		 created_at, expires_at, scopes, metadata)
	VALUES (store_personal_token.owner, gen_random_uuid(),
			store_personal_token.token_hash, store_personal_token.display_prefix,
			store_personal_token.description, store_personal_token.created_at,
			CASE WHEN store_personal_token.lifetime_seconds = -1 THEN NULL
				 ELSE store_personal_token.created_at
					  + make_interval(secs => store_personal_token.lifetime_seconds) END,
			token_scopes, token_metadata)
	RETURNING * INTO stored;
	IF NOT FOUND THEN
		RETURN;
	END IF;
	PERFORM iapi_tokens_internal.record_creation(stored);
	RETURN NEXT iapi_tokens_internal.as_personal_token(stored);
END
$$;

COMMENT ON FUNCTION iapi_tokens_internal.store_personal_token(regrole, bytea, text, text, integer, timestamptz, integer, text[], jsonb) IS
	'Stores a personal token minted by create_access_token (its hash, never the token)';

CREATE FUNCTION iapi_tokens_internal.store_source_token(
	source_id bigint,
	token_hash bytea,
	display_prefix text,
	description text,
	created_at timestamptz,
	expires_at timestamptz,
	scopes text[],
	metadata jsonb)
RETURNS SETOF bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	stored iapi_tokens.tokens;
	token_scopes text[] := iapi_tokens_internal.checked_scopes(store_source_token.scopes);
	token_metadata jsonb := iapi_tokens_internal.checked_metadata(store_source_token.metadata);
BEGIN
	INSERT INTO iapi_tokens.tokens
		(source_id, token_hash, display_prefix, description, created_at, expires_at,
		 scopes, metadata)
	VALUES (store_source_token.source_id, store_source_token.token_hash,
			store_source_token.display_prefix, store_source_token.description,
			store_source_token.created_at, store_source_token.expires_at,
			token_scopes, token_metadata)
	RETURNING * INTO stored;
	IF NOT FOUND THEN
		RETURN;
	END IF;
	PERFORM iapi_tokens_internal.record_creation(stored);
	RETURN NEXT stored.id;
END
$$;

COMMENT ON FUNCTION iapi_tokens_internal.store_source_token(bigint, bytea, text, text, timestamptz, timestamptz, text[], jsonb) IS
	'Stores a source token minted by generate_token (its hash, never the token)';

CREATE FUNCTION iapi_tokens_internal.replace_token(
	t iapi_tokens.tokens,
	grace interval,
	token_hash bytea,
	display_prefix text,
	now_ts timestamptz,
	new_expires_at timestamptz,
	max_tokens_per_owner integer)
RETURNS iapi_tokens.tokens
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	new_id bigint := nextval('iapi_tokens.token_id_seq');
	replacement iapi_tokens.tokens;
BEGIN
	UPDATE iapi_tokens.tokens o
	   SET replaced_by = new_id,
		   revoked_at = CASE WHEN grace = interval '0' THEN now_ts END,
		   expires_at = CASE WHEN grace = interval '0' THEN o.expires_at
						ELSE least(o.expires_at, now_ts + grace) END
	 WHERE o.id = t.id;

	-- With a grace period the old token still counts.
	IF t.owner_role IS NOT NULL THEN
		PERFORM iapi_tokens_internal.check_owner_limit(t.owner_role, max_tokens_per_owner, NULL);
	END IF;
	INSERT INTO iapi_tokens.tokens
		(id, source_id, owner_role, token_uuid, token_hash, display_prefix,
		 description, created_at, expires_at, scopes, metadata)
	VALUES (new_id, t.source_id, t.owner_role,
			CASE WHEN t.owner_role IS NOT NULL THEN gen_random_uuid() END,
			token_hash, display_prefix, t.description, now_ts, new_expires_at,
			t.scopes, t.metadata)
	RETURNING * INTO replacement;
	IF FOUND THEN
		PERFORM iapi_tokens_internal.record_creation(replacement);
	END IF;
	RETURN replacement;
END
$$;

COMMENT ON FUNCTION iapi_tokens_internal.replace_token(iapi_tokens.tokens, interval, bytea, text, timestamptz, timestamptz, integer) IS
	'Ends a token (at once, or after its grace period) and stores its replacement, with its description, scopes and metadata';

CREATE FUNCTION iapi_tokens.generate_token(
	source_id bigint,
	description text DEFAULT NULL,
	lifetime interval DEFAULT NULL,
	scopes text[] DEFAULT NULL,
	metadata jsonb DEFAULT NULL)
RETURNS TABLE (id bigint, access_token text)
AS 'MODULE_PATHNAME', 'iapi_tokens_generate_token'
LANGUAGE C VOLATILE PARALLEL UNSAFE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION iapi_tokens.generate_token(bigint, text, interval, text[], jsonb) IS
	'Generates a token for a source, limited to scopes if given, and returns its id and plaintext; the plaintext is never shown again';

CREATE FUNCTION iapi_tokens.create_access_token(
	lifetime_seconds integer,
	description text DEFAULT NULL,
	scopes text[] DEFAULT NULL,
	metadata jsonb DEFAULT NULL)
RETURNS TABLE (
	token_value text,
	token_id uuid,
	description text,
	expired_at timestamptz,
	last_used timestamptz,
	created_at timestamptz)
AS 'MODULE_PATHNAME', 'iapi_tokens_create_access_token'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION iapi_tokens.create_access_token(integer, text, text[], jsonb) IS
	'Creates a personal token owned by the calling role, as POST /v4/apiAccessTokens, limited to scopes if given; lifetime_seconds -1 never expires; token_value is shown only here';

CREATE FUNCTION iapi_tokens.verify_token(token text)
RETURNS TABLE (
	token_id bigint,
	source_id bigint,
	created_at timestamptz,
	expires_at timestamptz,
	last_used_at timestamptz,
	owner regrole,
	access_token_id uuid,
	scopes text[],
	metadata jsonb)
AS 'MODULE_PATHNAME', 'iapi_tokens_verify_token_1_1'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE ROWS 1;

COMMENT ON FUNCTION iapi_tokens.verify_token(text) IS
	'Returns one row for a valid token of either family (source_id for a source token, owner and access_token_id for a personal token, and its scopes and metadata) and no row otherwise; never raises an error for any input';

CREATE FUNCTION iapi_tokens.authenticate(token text)
RETURNS TABLE (
	token_id bigint,
	source_id bigint,
	created_at timestamptz,
	expires_at timestamptz,
	last_used_at timestamptz,
	owner regrole,
	access_token_id uuid,
	scopes text[],
	metadata jsonb)
AS 'MODULE_PATHNAME', 'iapi_tokens_authenticate'
LANGUAGE C VOLATILE PARALLEL UNSAFE ROWS 1;

COMMENT ON FUNCTION iapi_tokens.authenticate(text) IS
	'Verifies a token as verify_token does and, if it is valid, makes it the transaction''s current token; otherwise no row and no current token';

CREATE FUNCTION iapi_tokens.current_token()
RETURNS TABLE (
	token_id bigint,
	source_id bigint,
	created_at timestamptz,
	expires_at timestamptz,
	last_used_at timestamptz,
	owner regrole,
	access_token_id uuid,
	scopes text[],
	metadata jsonb)
AS 'MODULE_PATHNAME', 'iapi_tokens_current_token'
LANGUAGE C STABLE PARALLEL RESTRICTED ROWS 1;

COMMENT ON FUNCTION iapi_tokens.current_token() IS
	'The token authenticate() accepted in this transaction, or no row; for functions and RLS policies';

CREATE FUNCTION iapi_tokens.list_token_details(
	source_id bigint,
	include_inactive boolean DEFAULT false)
RETURNS TABLE (
	token_id bigint,
	display_prefix text,
	description text,
	created_at timestamptz,
	expires_at timestamptz,
	last_used_at timestamptz,
	revoked_at timestamptz,
	status text,
	use_count bigint,
	scopes text[],
	metadata jsonb,
	expires_in_days integer)
LANGUAGE plpgsql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM iapi_tokens_internal.require_source(list_token_details.source_id);
	RETURN QUERY
		SELECT t.id, t.display_prefix, t.description, t.created_at,
			   t.expires_at, t.last_used_at, t.revoked_at, v.status, t.use_count,
			   t.scopes, t.metadata, iapi_tokens_internal.days_left(t.expires_at)
		  FROM iapi_tokens.tokens t,
			   LATERAL (SELECT CASE
						WHEN t.revoked_at IS NOT NULL THEN 'revoked'
						WHEN t.expires_at <= statement_timestamp() THEN 'expired'
						ELSE 'active' END AS status) v
		 WHERE t.source_id = list_token_details.source_id
		   AND (list_token_details.include_inactive OR v.status = 'active')
		 ORDER BY t.id DESC;
END
$$;

COMMENT ON FUNCTION iapi_tokens.list_token_details(bigint, boolean) IS
	'A source''s tokens with prefix, description, expiry, last use, status, use count, scopes, metadata and days left, newest first';

CREATE FUNCTION iapi_tokens.list_access_tokens()
RETURNS TABLE (
	token_id uuid,
	description text,
	expired_at timestamptz,
	last_used timestamptz,
	created_at timestamptz,
	use_count bigint,
	scopes text[],
	metadata jsonb,
	expires_in_days integer)
AS 'MODULE_PATHNAME', 'iapi_tokens_list_access_tokens'
LANGUAGE C STABLE PARALLEL UNSAFE;

COMMENT ON FUNCTION iapi_tokens.list_access_tokens() IS
	'The calling role''s personal tokens, expired ones included, newest first, as GET /v4/apiAccessTokens';

CREATE FUNCTION iapi_tokens.get_access_token(token_id uuid)
RETURNS TABLE (
	token_id uuid,
	description text,
	expired_at timestamptz,
	last_used timestamptz,
	created_at timestamptz,
	use_count bigint,
	scopes text[],
	metadata jsonb,
	expires_in_days integer)
AS 'MODULE_PATHNAME', 'iapi_tokens_get_access_token'
LANGUAGE C STABLE PARALLEL UNSAFE;

COMMENT ON FUNCTION iapi_tokens.get_access_token(uuid) IS
	'One of the calling role''s personal tokens, as GET /v4/apiAccessTokens/{tokenId}; any other token does not exist';

CREATE FUNCTION iapi_tokens.list_all_access_tokens()
RETURNS TABLE (
	token_id uuid,
	owner regrole,
	description text,
	expired_at timestamptz,
	last_used timestamptz,
	created_at timestamptz,
	use_count bigint,
	scopes text[],
	metadata jsonb,
	expires_in_days integer)
LANGUAGE sql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	SELECT t.token_uuid, t.owner_role, t.description, t.expires_at,
		   t.last_used_at, t.created_at, t.use_count, t.scopes, t.metadata,
		   iapi_tokens_internal.days_left(t.expires_at)
	  FROM iapi_tokens.tokens t
	 WHERE t.owner_role IS NOT NULL AND t.revoked_at IS NULL
	 ORDER BY t.id DESC;
END;

COMMENT ON FUNCTION iapi_tokens.list_all_access_tokens() IS
	'Admin: every role''s personal tokens that are not deleted, newest first';

CREATE FUNCTION iapi_tokens.has_scope(scope text)
RETURNS boolean
LANGUAGE sql STABLE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
RETURN coalesce((SELECT t.scopes IS NULL OR has_scope.scope = ANY (t.scopes)
				   FROM iapi_tokens.current_token() t), false);

COMMENT ON FUNCTION iapi_tokens.has_scope(text) IS
	'Whether the current token (set by authenticate) may use scope: true for a token without restriction, false without a current token';

CREATE FUNCTION iapi_tokens.require_scope(scope text)
RETURNS void
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF NOT iapi_tokens.has_scope(require_scope.scope) THEN
		IF NOT EXISTS (SELECT FROM iapi_tokens.current_token()) THEN
			RAISE EXCEPTION 'scope "%" is required, and no token was authenticated', require_scope.scope
				USING ERRCODE = 'insufficient_privilege',
					  HINT = 'Call iapi_tokens.authenticate() with a token first.';
		END IF;
		RAISE EXCEPTION 'the token lacks scope "%"', require_scope.scope
			USING ERRCODE = 'insufficient_privilege',
				  HINT = 'Use a token created with this scope.';
	END IF;
END
$$;

COMMENT ON FUNCTION iapi_tokens.require_scope(text) IS
	'Raises 42501, naming the scope and never the token, unless the current token may use scope';

CREATE FUNCTION iapi_tokens.define_scope(name text, description text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF define_scope.name IS NULL THEN
		RAISE EXCEPTION 'name must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF define_scope.name !~ '^[a-z][a-z0-9_]*(:[a-z][a-z0-9_]*)*$'
		OR char_length(define_scope.name) > 64 THEN
		RAISE EXCEPTION 'invalid scope name: "%"', left(define_scope.name, 64)
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'A scope name matches ^[a-z][a-z0-9_]*(:[a-z][a-z0-9_]*)*$ and has at most 64 characters.';
	END IF;
	IF char_length(define_scope.description) > 255 THEN
		RAISE EXCEPTION 'scope description is too long'
			USING ERRCODE = 'string_data_right_truncation',
				  DETAIL = format('The description has %s characters; the maximum is 255.',
								  char_length(define_scope.description));
	END IF;
	INSERT INTO iapi_tokens.scopes AS s (name, description)
	VALUES (define_scope.name, define_scope.description)
	ON CONFLICT ON CONSTRAINT scopes_pkey DO UPDATE SET description = EXCLUDED.description;
END
$$;

COMMENT ON FUNCTION iapi_tokens.define_scope(text, text) IS
	'Admin: defines a scope that tokens may be limited to, or changes its description';

CREATE FUNCTION iapi_tokens.drop_scope(name text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	holders bigint;
BEGIN
	IF drop_scope.name IS NULL THEN
		RAISE EXCEPTION 'name must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	-- Waits for a token being created with the scope (FOR KEY SHARE).
	PERFORM FROM iapi_tokens.scopes s WHERE s.name = drop_scope.name FOR UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'scope "%" is not defined', drop_scope.name
			USING ERRCODE = 'undefined_object';
	END IF;
	SELECT count(*) INTO holders
	  FROM iapi_tokens.tokens t
	 WHERE t.scopes @> ARRAY[drop_scope.name]
	   AND t.revoked_at IS NULL
	   AND (t.expires_at IS NULL OR t.expires_at > statement_timestamp());
	IF holders > 0 THEN
		RAISE EXCEPTION 'scope "%" is held by live tokens', drop_scope.name
			USING ERRCODE = 'dependent_objects_still_exist',
				  DETAIL = format('%s active tokens hold it.', holders),
				  HINT = 'Revoke those tokens, or let them expire, before dropping the scope.';
	END IF;
	DELETE FROM iapi_tokens.scopes s WHERE s.name = drop_scope.name;
END
$$;

COMMENT ON FUNCTION iapi_tokens.drop_scope(text) IS
	'Admin: drops a scope that no live token holds';

CREATE FUNCTION iapi_tokens.apply_usage(
	token_ids bigint[],
	used_at timestamptz[],
	use_counts bigint[])
RETURNS TABLE (applied_uses bigint, skipped_token_ids bigint[])
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	batch_size integer := cardinality(apply_usage.token_ids);
	saved_lock_timeout text := current_setting('lock_timeout');
	applied bigint;
	skipped bigint[];
BEGIN
	IF apply_usage.token_ids IS NULL OR apply_usage.used_at IS NULL
		OR apply_usage.use_counts IS NULL THEN
		RAISE EXCEPTION 'token_ids, used_at and use_counts must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF cardinality(apply_usage.used_at) <> batch_size
		OR cardinality(apply_usage.use_counts) <> batch_size THEN
		RAISE EXCEPTION 'token_ids, used_at and use_counts must have the same length'
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = format('Their lengths were %s, %s and %s.', batch_size,
								  cardinality(apply_usage.used_at),
								  cardinality(apply_usage.use_counts));
	END IF;
	IF batch_size > 10000 THEN
		RAISE EXCEPTION 'too many token uses in one batch: %', batch_size
			USING ERRCODE = 'program_limit_exceeded',
				  DETAIL = 'A batch holds at most 10000 tokens.';
	END IF;
	IF EXISTS (SELECT FROM unnest(apply_usage.token_ids, apply_usage.used_at,
								  apply_usage.use_counts) AS u(id, at, n)
				WHERE u.id IS NULL OR u.at IS NULL OR u.n IS NULL OR u.n < 1) THEN
		RAISE EXCEPTION 'invalid token use'
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'Every token id and time is given, and every count is at least 1.';
	END IF;

	-- Fast path: one UPDATE, which waits at most 10 ms for a row lock.  A
	-- row held longer (a revocation in progress) sends the batch to the
	-- slow path, which locks with SKIP LOCKED and reports what it skipped.
	BEGIN
		PERFORM set_config('lock_timeout', '10ms', true);
		WITH batch AS (
			-- A time ahead of this server's clock (a standby's skew) is clamped.
			SELECT u.id, max(least(u.at, clock_timestamp())) AS at, sum(u.n)::bigint AS n
			  FROM unnest(apply_usage.token_ids, apply_usage.used_at,
						  apply_usage.use_counts) AS u(id, at, n)
			 GROUP BY u.id),
		updated AS (
			UPDATE iapi_tokens.tokens t
			   SET last_used_at = greatest(t.last_used_at, b.at),
				   use_count = t.use_count + b.n
			  FROM batch b
			 WHERE t.id = b.id
			RETURNING b.n)
		SELECT coalesce(sum(u.n), 0)::bigint INTO applied FROM updated u;
		skipped := '{}';
		PERFORM set_config('lock_timeout', saved_lock_timeout, true);
	EXCEPTION WHEN lock_not_available THEN
		WITH batch AS (
			SELECT u.id, max(least(u.at, clock_timestamp())) AS at, sum(u.n)::bigint AS n
			  FROM unnest(apply_usage.token_ids, apply_usage.used_at,
						  apply_usage.use_counts) AS u(id, at, n)
			 GROUP BY u.id),
		-- One index probe per token, joined once: no semi-join that rescans.
		locked AS (
			SELECT t.id, b.at, b.n
			  FROM iapi_tokens.tokens t
			  JOIN batch b ON b.id = t.id
			   FOR NO KEY UPDATE OF t SKIP LOCKED),
		updated AS (
			UPDATE iapi_tokens.tokens t
			   SET last_used_at = greatest(t.last_used_at, l.at),
				   use_count = t.use_count + l.n
			  FROM locked l
			 WHERE t.id = l.id
			RETURNING t.id, l.n)
		SELECT (SELECT coalesce(sum(u.n), 0)::bigint FROM updated u),
			   ARRAY(SELECT b.id FROM batch b
					  WHERE NOT EXISTS (SELECT FROM updated u WHERE u.id = b.id)
						AND EXISTS (SELECT FROM iapi_tokens.tokens t WHERE t.id = b.id)
					  ORDER BY b.id)
		  INTO applied, skipped;
	END;
	RETURN QUERY SELECT applied, skipped;
END
$$;

COMMENT ON FUNCTION iapi_tokens.apply_usage(bigint[], timestamptz[], bigint[]) IS
	'Applies a batch of recorded token uses (last use, count); for the usage flush and a standby''s forwarding role only.  Returns the uses applied and the tokens skipped because a revocation held them';

CREATE FUNCTION iapi_tokens.usage_stats()
RETURNS TABLE (
	preloaded boolean,
	uses_pending bigint,
	tokens_pending bigint,
	batches_flushed bigint,
	uses_applied bigint,
	last_flush_at timestamptz,
	last_flush_error text,
	uses_forwarded bigint,
	forward_failures bigint,
	uses_dropped bigint)
AS 'MODULE_PATHNAME', 'iapi_tokens_usage_stats'
LANGUAGE C VOLATILE PARALLEL SAFE ROWS 1;

COMMENT ON FUNCTION iapi_tokens.usage_stats() IS
	'Use recording: pending uses and tokens of this database; batches flushed, uses applied or forwarded, the last flush and its error, forwarding failures and uses dropped, for the whole server since it started';

SELECT iapi_tokens_internal.revoke_all_grants(
	ARRAY['iapi_tokens.scopes']::regclass[],
	ARRAY['iapi_tokens_internal.record_creation(iapi_tokens.tokens)',
		'iapi_tokens_internal.as_personal_token(iapi_tokens.tokens)',
		'iapi_tokens_internal.personal_tokens_of(regrole)',
		'iapi_tokens_internal.personal_token_of(regrole, uuid)',
		'iapi_tokens_internal.store_personal_token(regrole, bytea, text, text, integer, timestamptz, integer, text[], jsonb)',
		'iapi_tokens_internal.store_source_token(bigint, bytea, text, text, timestamptz, timestamptz, text[], jsonb)',
		'iapi_tokens_internal.replace_token(iapi_tokens.tokens, interval, bytea, text, timestamptz, timestamptz, integer)',
		'iapi_tokens.generate_token(bigint, text, interval, text[], jsonb)',
		'iapi_tokens.create_access_token(integer, text, text[], jsonb)',
		'iapi_tokens.verify_token(text)',
		'iapi_tokens.authenticate(text)',
		'iapi_tokens.current_token()',
		'iapi_tokens.list_token_details(bigint, boolean)',
		'iapi_tokens.list_access_tokens()',
		'iapi_tokens.get_access_token(uuid)',
		'iapi_tokens.list_all_access_tokens()',
		'iapi_tokens_internal.checked_scopes(text[])',
		'iapi_tokens_internal.checked_metadata(jsonb)',
		'iapi_tokens_internal.days_left(timestamptz)',
		'iapi_tokens.has_scope(text)',
		'iapi_tokens.require_scope(text)',
		'iapi_tokens.define_scope(text, text)',
		'iapi_tokens.drop_scope(text)',
		'iapi_tokens.apply_usage(bigint[], timestamptz[], bigint[])',
		'iapi_tokens.usage_stats()']::regprocedure[],
	'{}');

GRANT EXECUTE ON FUNCTION iapi_tokens.usage_stats() TO pg_monitor;
GRANT EXECUTE ON FUNCTION iapi_tokens.has_scope(text), iapi_tokens.require_scope(text) TO PUBLIC;

-- The grants the re-created functions had in 1.3.  As 1.1 warned for
-- verify_token: grants made by an update script count as the extension's
-- initial privileges, which pg_dump leaves out.
DO $$
DECLARE
	saved record;
	grantee record;
	regranted text[] := '{}';
BEGIN
	FOR saved IN
		SELECT s.key AS function, s.value AS acl
		  FROM pg_catalog.jsonb_each_text(
				 pg_catalog.current_setting('iapi_tokens_update.acls')::jsonb) s
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
			-- PUBLIC on the verification functions is the extension's own.
			CONTINUE WHEN grantee.grantee = 0
				AND saved.function::pg_catalog.regprocedure IN ('iapi_tokens.verify_token(text)'::pg_catalog.regprocedure, 'iapi_tokens.authenticate(text)'::pg_catalog.regprocedure, 'iapi_tokens.current_token()'::pg_catalog.regprocedure);
			regranted := regranted || pg_catalog.format('%s to %s', saved.function,
				CASE WHEN grantee.grantee = 0 THEN 'PUBLIC'
					 ELSE pg_catalog.pg_get_userbyid(grantee.grantee) END);
		END LOOP;
	END LOOP;
	IF cardinality(regranted) > 0 THEN
		RAISE WARNING 'iapi_tokens 1.4 re-created functions with the grants they had: %',
			pg_catalog.array_to_string(regranted, '; ')
			USING DETAIL = 'pg_dump now counts them as the extension''s own, so a dump restored into a fresh installation leaves them out.',
				  HINT = 'After such a restore, run rest/roles.sql and your own GRANTs on these functions again.';
	END IF;
END
$$;
