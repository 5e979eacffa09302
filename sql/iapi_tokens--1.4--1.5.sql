-- iapi_tokens 1.4 to 1.5: per-token rate limits.
--
-- Tokens gain rate_limit and rate_window, counted in shared memory at
-- verification (iapi_tokens must be in shared_preload_libraries), set at
-- creation or with set_rate_limit() and set_access_token_rate_limit(), and
-- audited as rate_limit.  check_token() tells a rate-limited token from an
-- invalid one; rate_limit_stats() reports the counters.  generate_token()
-- and create_access_token() take DROP and CREATE for their new arguments;
-- their grants are carried over.  A view or policy of yours that uses one
-- of them makes this update fail: drop it first and create it again after.

\echo Use "ALTER EXTENSION iapi_tokens UPDATE TO '1.5'" to load this file. \quit

-- The grants of the functions re-created below, by their new signatures.
SELECT pg_catalog.set_config('iapi_tokens_update.acls',
	(SELECT pg_catalog.jsonb_object_agg(f.new_signature, coalesce(p.proacl::text, ''))
	   FROM (VALUES ('iapi_tokens.generate_token(bigint, text, interval, text[], jsonb)', 'iapi_tokens.generate_token(bigint, text, interval, text[], jsonb, integer, interval)'),
				('iapi_tokens.create_access_token(integer, text, text[], jsonb)', 'iapi_tokens.create_access_token(integer, text, text[], jsonb, integer, interval)')) f(old_signature, new_signature)
	   JOIN pg_catalog.pg_proc p ON p.oid = f.old_signature::pg_catalog.regprocedure)::text,
	true);

DROP FUNCTION iapi_tokens_internal.store_personal_token(regrole, bytea, text, text, integer, timestamptz, integer, text[], jsonb);
DROP FUNCTION iapi_tokens_internal.store_source_token(bigint, bytea, text, text, timestamptz, timestamptz, text[], jsonb);
DROP FUNCTION iapi_tokens_internal.replace_token(iapi_tokens.tokens, interval, bytea, text, timestamptz, timestamptz, integer);
DROP FUNCTION iapi_tokens.generate_token(bigint, text, interval, text[], jsonb);
DROP FUNCTION iapi_tokens.create_access_token(integer, text, text[], jsonb);
DROP TRIGGER tokens_audit_update ON iapi_tokens.tokens;
DROP TRIGGER tokens_audit_delete ON iapi_tokens.tokens;
DROP FUNCTION iapi_tokens_internal.record_token_event();

-- Functions with a SQL-standard body that take the row type forbid new
-- columns; they go and come back unchanged.
DROP FUNCTION iapi_tokens_internal.personal_tokens_of(regrole);
DROP FUNCTION iapi_tokens_internal.personal_token_of(regrole, uuid);
DROP FUNCTION iapi_tokens_internal.record_creation(iapi_tokens.tokens);
DROP FUNCTION iapi_tokens_internal.as_personal_token(iapi_tokens.tokens);

ALTER TABLE iapi_tokens.tokens
	ADD COLUMN rate_limit integer,
	ADD COLUMN rate_window interval,
	ADD CONSTRAINT tokens_rate_limit_check
		CHECK ((rate_limit IS NULL) = (rate_window IS NULL)
			   AND rate_limit BETWEEN 1 AND 1000000
			   AND rate_window BETWEEN interval '1 second' AND interval '1 day');

COMMENT ON COLUMN iapi_tokens.tokens.rate_limit IS
	'Verifications admitted per rate_window, counted per server in shared memory; NULL: unlimited';
COMMENT ON COLUMN iapi_tokens.tokens.rate_window IS
	'The window of rate_limit, 1 second to 1 day; it opens at the first verification after the previous one ended';

ALTER TABLE iapi_tokens.audit
	DROP CONSTRAINT audit_action_check,
	ADD CONSTRAINT audit_action_check
		CHECK (action IN ('create', 'rotate', 'revoke', 'delete', 'purge', 'modify', 'leaked',
						  'rate_limit'));

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

CREATE FUNCTION iapi_tokens_internal.record_token_event()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	t iapi_tokens.tokens;
	event text;
	event_details jsonb := '{}';
BEGIN
	IF TG_OP = 'DELETE' THEN
		t := OLD;
		event := 'purge';
		event_details := jsonb_build_object('revoked_at', OLD.revoked_at,
											'expires_at', OLD.expires_at);
	ELSE
		t := NEW;
		IF NEW.replaced_by IS NOT NULL
			AND OLD.replaced_by IS DISTINCT FROM NEW.replaced_by THEN
			event := 'rotate';
			event_details := jsonb_build_object('replaced_by', NEW.replaced_by,
												'expires_at', NEW.expires_at,
												'revoked_at', NEW.revoked_at);
		ELSIF OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL THEN
			event := CASE WHEN NEW.revoked_reason = 'leaked' THEN 'leaked'
						  WHEN NEW.owner_role IS NULL THEN 'revoke'
						  ELSE 'delete' END;
		ELSIF (OLD.rate_limit, OLD.rate_window) IS DISTINCT FROM (NEW.rate_limit, NEW.rate_window)
			AND (OLD.source_id, OLD.owner_role, OLD.revoked_at, OLD.expires_at, OLD.replaced_by)
				IS NOT DISTINCT FROM
				(NEW.source_id, NEW.owner_role, NEW.revoked_at, NEW.expires_at, NEW.replaced_by) THEN
			event := 'rate_limit';
			event_details := jsonb_build_object(
				'old', jsonb_build_object('rate_limit', OLD.rate_limit,
										  'rate_window', OLD.rate_window),
				'new', jsonb_build_object('rate_limit', NEW.rate_limit,
										  'rate_window', NEW.rate_window));
		ELSE
			event := 'modify';
			event_details := jsonb_build_object(
				'old', jsonb_build_object('revoked_at', OLD.revoked_at,
										  'expires_at', OLD.expires_at,
										  'replaced_by', OLD.replaced_by,
										  'source_id', OLD.source_id,
										  'owner_role', OLD.owner_role::text),
				'new', jsonb_build_object('revoked_at', NEW.revoked_at,
										  'expires_at', NEW.expires_at,
										  'replaced_by', NEW.replaced_by,
										  'source_id', NEW.source_id,
										  'owner_role', NEW.owner_role::text));
		END IF;
	END IF;

	INSERT INTO iapi_tokens.audit
		(action, token_id, access_token_id, source_id, owner_role,
		 acting_role, session_role, details)
	VALUES (event, t.id, t.token_uuid, t.source_id, t.owner_role::text,
			iapi_tokens_internal.acting_role(), SESSION_USER, event_details);
	RETURN NULL;
END
$$;

COMMENT ON FUNCTION iapi_tokens_internal.record_token_event() IS
	'Trigger: appends token rotations, revocations, deletions, purges, rate limit changes and other changes to iapi_tokens.audit';

-- last_used_at is left out: recording use is not an event.
CREATE TRIGGER tokens_audit_update
	AFTER UPDATE OF source_id, owner_role, revoked_at, expires_at, replaced_by,
		rate_limit, rate_window
	ON iapi_tokens.tokens
	FOR EACH ROW
	WHEN (OLD.source_id IS DISTINCT FROM NEW.source_id
		  OR OLD.owner_role IS DISTINCT FROM NEW.owner_role
		  OR OLD.revoked_at IS DISTINCT FROM NEW.revoked_at
		  OR OLD.expires_at IS DISTINCT FROM NEW.expires_at
		  OR OLD.replaced_by IS DISTINCT FROM NEW.replaced_by
		  OR OLD.rate_limit IS DISTINCT FROM NEW.rate_limit
		  OR OLD.rate_window IS DISTINCT FROM NEW.rate_window)
	EXECUTE FUNCTION iapi_tokens_internal.record_token_event();

-- A revoked token's rate limit counts leave shared memory when the
-- revocation commits, and so do a token's whose limit is removed.
CREATE FUNCTION iapi_tokens_internal.forget_rate_limit()
RETURNS trigger
AS 'MODULE_PATHNAME', 'iapi_tokens_forget_rate_limit'
LANGUAGE C;

COMMENT ON FUNCTION iapi_tokens_internal.forget_rate_limit() IS
	'Trigger: drops the rate limit counts of a token revoked or made unlimited from shared memory at commit';

CREATE TRIGGER tokens_forget_rate_limit
	AFTER UPDATE OF revoked_at, rate_limit ON iapi_tokens.tokens
	FOR EACH ROW
	WHEN (OLD.rate_limit IS NOT NULL
		  AND ((OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL)
			   OR NEW.rate_limit IS NULL))
	EXECUTE FUNCTION iapi_tokens_internal.forget_rate_limit();

CREATE TRIGGER tokens_audit_delete
	AFTER DELETE ON iapi_tokens.tokens
	FOR EACH ROW
	EXECUTE FUNCTION iapi_tokens_internal.record_token_event();

-- ---------------------------------------------------------------------------
-- Rate limits
-- ---------------------------------------------------------------------------

CREATE FUNCTION iapi_tokens_internal.rate_limits_enforced()
RETURNS boolean
AS 'MODULE_PATHNAME', 'iapi_tokens_rate_limits_enforced'
LANGUAGE C STABLE PARALLEL SAFE;

COMMENT ON FUNCTION iapi_tokens_internal.rate_limits_enforced() IS
	'Whether this server counts rate limits: iapi_tokens is in shared_preload_libraries';

-- Returns the window as stored: its length in seconds, whatever the units
-- it was given in.
CREATE FUNCTION iapi_tokens_internal.checked_rate_limit(rate_limit integer, rate_window interval)
RETURNS interval
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF checked_rate_limit.rate_limit IS NULL AND checked_rate_limit.rate_window IS NULL THEN
		RETURN NULL;
	END IF;
	IF checked_rate_limit.rate_limit IS NULL OR checked_rate_limit.rate_window IS NULL
		OR checked_rate_limit.rate_limit NOT BETWEEN 1 AND 1000000
		OR checked_rate_limit.rate_window NOT BETWEEN interval '1 second' AND interval '1 day' THEN
		RAISE EXCEPTION 'invalid rate limit: % per %',
			coalesce(checked_rate_limit.rate_limit::text, 'NULL'),
			coalesce(checked_rate_limit.rate_window::text, 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'A rate limit is 1 to 1000000 requests per window of 1 second to 1 day; give both, or neither for no limit.';
	END IF;
	IF NOT iapi_tokens_internal.rate_limits_enforced() THEN
		RAISE EXCEPTION 'rate limits need iapi_tokens in shared_preload_libraries'
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  DETAIL = 'Without it, a token with a rate limit is refused at every verification.',
				  HINT = 'Add iapi_tokens to shared_preload_libraries and restart the server.';
	END IF;
	-- In seconds as interval comparison counts them, a month as 30 days
	-- (extract(epoch) counts a year as 365.25).
	RETURN make_interval(secs =>
		((extract(year FROM checked_rate_limit.rate_window) * 12
		  + extract(month FROM checked_rate_limit.rate_window)) * 30
		 + extract(day FROM checked_rate_limit.rate_window)) * 86400
		+ extract(epoch FROM checked_rate_limit.rate_window
							 - date_trunc('day', checked_rate_limit.rate_window)));
END
$$;

COMMENT ON FUNCTION iapi_tokens_internal.checked_rate_limit(integer, interval) IS
	'A token''s rate limit, checked: both or neither, 1 to 1000000 per 1 second to 1 day, on a server that counts them; returns the window in seconds';

-- Both families; the caller has found the token.
CREATE FUNCTION iapi_tokens_internal.change_rate_limit(
	token_id bigint,
	rate_limit integer,
	rate_window interval)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	new_window interval := iapi_tokens_internal.checked_rate_limit(
		change_rate_limit.rate_limit, change_rate_limit.rate_window);
BEGIN
	UPDATE iapi_tokens.tokens t
	   SET rate_limit = change_rate_limit.rate_limit,
		   rate_window = new_window
	 WHERE t.id = change_rate_limit.token_id
	   AND (t.rate_limit, t.rate_window)
		   IS DISTINCT FROM (change_rate_limit.rate_limit, new_window);
END
$$;

COMMENT ON FUNCTION iapi_tokens_internal.change_rate_limit(bigint, integer, interval) IS
	'Sets a token''s rate limit; an actual change is audited as rate_limit';

CREATE FUNCTION iapi_tokens.set_rate_limit(
	token_id bigint,
	rate_limit integer,
	rate_window interval)
RETURNS void
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF set_rate_limit.token_id IS NULL THEN
		RAISE EXCEPTION 'token_id must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM FROM iapi_tokens.tokens t
	 WHERE t.id = set_rate_limit.token_id AND t.revoked_at IS NULL
	   FOR NO KEY UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'token % does not exist', set_rate_limit.token_id
			USING ERRCODE = 'undefined_object',
				  HINT = 'A revoked token has no rate limit to change.';
	END IF;
	PERFORM iapi_tokens_internal.change_rate_limit(
		set_rate_limit.token_id, set_rate_limit.rate_limit, set_rate_limit.rate_window);
END
$$;

COMMENT ON FUNCTION iapi_tokens.set_rate_limit(bigint, integer, interval) IS
	'Admin: sets the rate limit of any active token (NULL, NULL: unlimited); the change applies to the current window and is audited';

CREATE FUNCTION iapi_tokens_internal.set_personal_rate_limit(
	owner regrole,
	token_id uuid,
	rate_limit integer,
	rate_window interval)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	id bigint;
BEGIN
	IF set_personal_rate_limit.token_id IS NULL THEN
		RAISE EXCEPTION 'token_id must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	SELECT t.id INTO id
	  FROM iapi_tokens.tokens t
	 WHERE t.token_uuid = set_personal_rate_limit.token_id
	   AND t.owner_role = set_personal_rate_limit.owner
	   AND t.revoked_at IS NULL
	   FOR NO KEY UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'access token % does not exist', set_personal_rate_limit.token_id
			USING ERRCODE = 'undefined_object';
	END IF;
	PERFORM iapi_tokens_internal.change_rate_limit(
		id, set_personal_rate_limit.rate_limit, set_personal_rate_limit.rate_window);
END
$$;

COMMENT ON FUNCTION iapi_tokens_internal.set_personal_rate_limit(regrole, uuid, integer, interval) IS
	'Sets the rate limit of one of a role''s personal tokens, or raises the "does not exist" error';

CREATE FUNCTION iapi_tokens.set_access_token_rate_limit(
	token_id uuid,
	rate_limit integer,
	rate_window interval)
RETURNS void
AS 'MODULE_PATHNAME', 'iapi_tokens_set_access_token_rate_limit'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION iapi_tokens.set_access_token_rate_limit(uuid, integer, interval) IS
	'Sets the rate limit of one of the calling role''s personal tokens (NULL, NULL: unlimited); audited';

-- Not STRICT: check_token(NULL) is one invalid row, like any other input.
CREATE FUNCTION iapi_tokens.check_token(token text, authenticate boolean DEFAULT false)
RETURNS TABLE (
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
	retry_after integer)
AS 'MODULE_PATHNAME', 'iapi_tokens_check_token'
LANGUAGE C VOLATILE PARALLEL UNSAFE ROWS 1;

COMMENT ON FUNCTION iapi_tokens.check_token(text, boolean) IS
	'Verifies a token as verify_token does and returns one row whatever the input: status valid, invalid or rate_limited, the token''s columns, and for a limited token the admissions remaining, the seconds until its window resets and, when refused, retry_after; with authenticate, a valid token becomes the current token';

CREATE FUNCTION iapi_tokens.rate_limit_stats()
RETURNS TABLE (
	preloaded boolean,
	max_tokens integer,
	tokens_tracked bigint,
	tokens_in_window bigint,
	requests_admitted bigint,
	requests_refused bigint,
	evictions bigint,
	overflows bigint)
AS 'MODULE_PATHNAME', 'iapi_tokens_rate_limit_stats'
LANGUAGE C VOLATILE PARALLEL SAFE ROWS 1;

COMMENT ON FUNCTION iapi_tokens.rate_limit_stats() IS
	'Rate limits: the slots (iapi_tokens.rate_limit_max_tokens), this database''s limited tokens tracked and those in a live window; requests admitted and refused, ended windows evicted, and tokens refused for want of a slot, for the whole server since it started';

CREATE FUNCTION iapi_tokens_internal.store_personal_token(
	owner regrole,
	token_hash bytea,
	display_prefix text,
	description text,
	lifetime_seconds integer,
	created_at timestamptz,
	max_tokens_per_owner integer,
	scopes text[],
	metadata jsonb,
	rate_limit integer,
	rate_window interval)
RETURNS SETOF iapi_tokens.personal_token
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	stored iapi_tokens.tokens;
	token_scopes text[] := iapi_tokens_internal.checked_scopes(store_personal_token.scopes);
	token_metadata jsonb := iapi_tokens_internal.checked_metadata(store_personal_token.metadata);
	token_rate_window interval := iapi_tokens_internal.checked_rate_limit(
		store_personal_token.rate_limit, store_personal_token.rate_window);
BEGIN
	PERFORM iapi_tokens_internal.lock_owner(store_personal_token.owner);
	PERFORM iapi_tokens_internal.check_owner_limit(
		store_personal_token.owner, store_personal_token.max_tokens_per_owner, NULL);
	INSERT INTO iapi_tokens.tokens
		(owner_role, token_uuid, token_hash, display_prefix, description,
		 created_at, expires_at, scopes, metadata, rate_limit, rate_window)
	VALUES (store_personal_token.owner, gen_random_uuid(),
			store_personal_token.token_hash, store_personal_token.display_prefix,
			store_personal_token.description, store_personal_token.created_at,
			CASE WHEN store_personal_token.lifetime_seconds = -1 THEN NULL
				 ELSE store_personal_token.created_at
					  + make_interval(secs => store_personal_token.lifetime_seconds) END,
			token_scopes, token_metadata, store_personal_token.rate_limit, token_rate_window)
	RETURNING * INTO stored;
	IF NOT FOUND THEN
		RETURN;
	END IF;
	PERFORM iapi_tokens_internal.record_creation(stored);
	RETURN NEXT iapi_tokens_internal.as_personal_token(stored);
END
$$;

COMMENT ON FUNCTION iapi_tokens_internal.store_personal_token(regrole, bytea, text, text, integer, timestamptz, integer, text[], jsonb, integer, interval) IS
	'Stores a personal token minted by create_access_token (its hash, never the token)';

-- The source-token twin of store_personal_token.
CREATE FUNCTION iapi_tokens_internal.store_source_token(
	source_id bigint,
	token_hash bytea,
	display_prefix text,
	description text,
	created_at timestamptz,
	expires_at timestamptz,
	scopes text[],
	metadata jsonb,
	rate_limit integer,
	rate_window interval)
RETURNS SETOF bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	stored iapi_tokens.tokens;
	token_scopes text[] := iapi_tokens_internal.checked_scopes(store_source_token.scopes);
	token_metadata jsonb := iapi_tokens_internal.checked_metadata(store_source_token.metadata);
	token_rate_window interval := iapi_tokens_internal.checked_rate_limit(
		store_source_token.rate_limit, store_source_token.rate_window);
BEGIN
	INSERT INTO iapi_tokens.tokens
		(source_id, token_hash, display_prefix, description, created_at, expires_at,
		 scopes, metadata, rate_limit, rate_window)
	VALUES (store_source_token.source_id, store_source_token.token_hash,
			store_source_token.display_prefix, store_source_token.description,
			store_source_token.created_at, store_source_token.expires_at,
			token_scopes, token_metadata, store_source_token.rate_limit, token_rate_window)
	RETURNING * INTO stored;
	IF NOT FOUND THEN
		RETURN;
	END IF;
	PERFORM iapi_tokens_internal.record_creation(stored);
	RETURN NEXT stored.id;
END
$$;

COMMENT ON FUNCTION iapi_tokens_internal.store_source_token(bigint, bytea, text, text, timestamptz, timestamptz, text[], jsonb, integer, interval) IS
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
		 description, created_at, expires_at, scopes, metadata, rate_limit, rate_window)
	VALUES (new_id, t.source_id, t.owner_role,
			CASE WHEN t.owner_role IS NOT NULL THEN gen_random_uuid() END,
			token_hash, display_prefix, t.description, now_ts, new_expires_at,
			t.scopes, t.metadata, t.rate_limit, t.rate_window)
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
	metadata jsonb DEFAULT NULL,
	rate_limit integer DEFAULT NULL,
	rate_window interval DEFAULT NULL)
RETURNS TABLE (id bigint, access_token text)
AS 'MODULE_PATHNAME', 'iapi_tokens_generate_token'
LANGUAGE C VOLATILE PARALLEL UNSAFE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION iapi_tokens.generate_token(bigint, text, interval, text[], jsonb, integer, interval) IS
	'Generates a token for a source, limited to scopes and to rate_limit verifications per rate_window if given, and returns its id and plaintext; the plaintext is never shown again';

CREATE FUNCTION iapi_tokens.create_access_token(
	lifetime_seconds integer,
	description text DEFAULT NULL,
	scopes text[] DEFAULT NULL,
	metadata jsonb DEFAULT NULL,
	rate_limit integer DEFAULT NULL,
	rate_window interval DEFAULT NULL)
RETURNS TABLE (
	token_value text,
	token_id uuid,
	description text,
	expired_at timestamptz,
	last_used timestamptz,
	created_at timestamptz)
AS 'MODULE_PATHNAME', 'iapi_tokens_create_access_token'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION iapi_tokens.create_access_token(integer, text, text[], jsonb, integer, interval) IS
	'Creates a personal token owned by the calling role, as POST /v4/apiAccessTokens, limited to scopes and to rate_limit verifications per rate_window if given; lifetime_seconds -1 never expires; token_value is shown only here';

SELECT iapi_tokens_internal.revoke_all_grants(
	'{}'::regclass[],
	ARRAY['iapi_tokens_internal.record_creation(iapi_tokens.tokens)',
		'iapi_tokens_internal.as_personal_token(iapi_tokens.tokens)',
		'iapi_tokens_internal.personal_tokens_of(regrole)',
		'iapi_tokens_internal.personal_token_of(regrole, uuid)',
		'iapi_tokens_internal.record_token_event()',
		'iapi_tokens_internal.forget_rate_limit()',
		'iapi_tokens_internal.rate_limits_enforced()',
		'iapi_tokens_internal.checked_rate_limit(integer, interval)',
		'iapi_tokens_internal.change_rate_limit(bigint, integer, interval)',
		'iapi_tokens.set_rate_limit(bigint, integer, interval)',
		'iapi_tokens_internal.set_personal_rate_limit(regrole, uuid, integer, interval)',
		'iapi_tokens.set_access_token_rate_limit(uuid, integer, interval)',
		'iapi_tokens.check_token(text, boolean)',
		'iapi_tokens.rate_limit_stats()',
		'iapi_tokens_internal.store_personal_token(regrole, bytea, text, text, integer, timestamptz, integer, text[], jsonb, integer, interval)',
		'iapi_tokens_internal.store_source_token(bigint, bytea, text, text, timestamptz, timestamptz, text[], jsonb, integer, interval)',
		'iapi_tokens_internal.replace_token(iapi_tokens.tokens, interval, bytea, text, timestamptz, timestamptz, integer)',
		'iapi_tokens.generate_token(bigint, text, interval, text[], jsonb, integer, interval)',
		'iapi_tokens.create_access_token(integer, text, text[], jsonb, integer, interval)']::regprocedure[],
	'{}');

GRANT EXECUTE ON FUNCTION iapi_tokens.rate_limit_stats() TO pg_monitor;
GRANT EXECUTE ON FUNCTION iapi_tokens.check_token(text, boolean) TO PUBLIC;

-- The grants the re-created functions had in 1.4.  As 1.1 warned for
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
			regranted := regranted || pg_catalog.format('%s to %s', saved.function,
				CASE WHEN grantee.grantee = 0 THEN 'PUBLIC'
					 ELSE pg_catalog.pg_get_userbyid(grantee.grantee) END);
		END LOOP;
	END LOOP;
	IF cardinality(regranted) > 0 THEN
		RAISE WARNING 'iapi_tokens 1.5 re-created functions with the grants they had: %',
			pg_catalog.array_to_string(regranted, '; ')
			USING DETAIL = 'pg_dump now counts them as the extension''s own, so a dump restored into a fresh installation leaves them out.',
				  HINT = 'After such a restore, run rest/roles.sql and your own GRANTs on these functions again.';
	END IF;
END
$$;
