-- iapi_tokens: API access tokens stored only as SHA-256 hashes.
--
-- The full install script of the current version: CREATE EXTENSION runs
-- this file alone (the Makefile installs it as iapi_tokens--<version>.sql).
-- The iapi_tokens--A--B.sql scripts serve ALTER EXTENSION ... UPDATE only.
--
-- C (src/) owns minting, hashing, verification and the transaction's current
-- token.  This file owns the storage rules: the caps, the audit trail and
-- row-level security.  Public objects live in schema iapi_tokens; the
-- helpers live in iapi_tokens_internal, which only the owner can use.

\echo Use "CREATE EXTENSION iapi_tokens" to load this file. \quit

CREATE SCHEMA iapi_tokens_internal;
COMMENT ON SCHEMA iapi_tokens_internal IS
	'Internal helpers of the iapi_tokens extension; usable by its owner only';

-- ---------------------------------------------------------------------------
-- Storage
-- ---------------------------------------------------------------------------


CREATE SEQUENCE iapi_tokens.source_id_seq;
CREATE SEQUENCE iapi_tokens.token_id_seq;

CREATE TABLE iapi_tokens.sources (
	id bigint NOT NULL DEFAULT pg_catalog.nextval('iapi_tokens.source_id_seq'),
	name text NOT NULL,
	display_name text NOT NULL,
	stitch_client_id bigint,
	properties jsonb NOT NULL DEFAULT '{}',
	schedule jsonb,
	-- Bumped by the cap trigger so that concurrent token inserts for one
	-- source conflict on this row at every isolation level.
	token_changes bigint NOT NULL DEFAULT 0,
	created_at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
	updated_at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
	deleted_at timestamptz,
	paused_at timestamptz,
	system_paused_at timestamptz,
	CONSTRAINT sources_pkey PRIMARY KEY (id),
	CONSTRAINT sources_name_check
		CHECK (name ~ '^[a-z][a-z0-9_]*$' AND pg_catalog.char_length(name) <= 63),
	CONSTRAINT sources_display_name_check
		CHECK (pg_catalog.char_length(display_name) BETWEEN 1 AND 255)
);
ALTER SEQUENCE iapi_tokens.source_id_seq OWNED BY iapi_tokens.sources.id;

-- Names are unique per client among live sources, as Stitch schema names are.
CREATE UNIQUE INDEX sources_client_name_key
	ON iapi_tokens.sources ((coalesce(stitch_client_id, 0)), name)
	WHERE deleted_at IS NULL;
CREATE INDEX sources_client_idx ON iapi_tokens.sources (stitch_client_id);

CREATE TABLE iapi_tokens.tokens (
	id bigint NOT NULL DEFAULT pg_catalog.nextval('iapi_tokens.token_id_seq'),
	source_id bigint,
	token_hash bytea NOT NULL,
	display_prefix text NOT NULL,
	description text,
	created_at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
	expires_at timestamptz,
	last_used_at timestamptz,
	revoked_at timestamptz,
	owner_role regrole,
	token_uuid uuid,
	replaced_by bigint,
	revoked_reason text,
	use_count bigint NOT NULL DEFAULT 0,
	scopes text[],
	metadata jsonb,
	rate_limit integer,
	rate_window interval,
	CONSTRAINT tokens_pkey PRIMARY KEY (id),
	CONSTRAINT tokens_token_hash_key UNIQUE (token_hash),
	CONSTRAINT tokens_token_hash_check
		CHECK (pg_catalog.octet_length(token_hash) = 32),
	CONSTRAINT tokens_expires_at_check CHECK (expires_at > created_at),
	CONSTRAINT tokens_description_check
		CHECK (pg_catalog.char_length(description) <= 255),
	CONSTRAINT tokens_family_check
		CHECK ((source_id IS NULL) <> (owner_role IS NULL)),
	CONSTRAINT tokens_token_uuid_check
		CHECK ((owner_role IS NULL) = (token_uuid IS NULL)),
	CONSTRAINT tokens_revoked_reason_check
		CHECK (revoked_reason IS NULL OR (revoked_reason = 'leaked' AND revoked_at IS NOT NULL)),
	CONSTRAINT tokens_scopes_check
		CHECK (pg_catalog.cardinality(scopes) <= 32 AND pg_catalog.array_position(scopes, NULL) IS NULL),
	CONSTRAINT tokens_metadata_check
		CHECK (pg_catalog.jsonb_typeof(metadata) = 'object'
			   AND pg_catalog.octet_length(metadata::text) <= 4096),
	CONSTRAINT tokens_rate_limit_check
		CHECK ((rate_limit IS NULL) = (rate_window IS NULL)
			   AND rate_limit BETWEEN 1 AND 1000000
			   AND rate_window BETWEEN interval '1 second' AND interval '1 day')
) WITH (fillfactor = 90);	-- room for HOT updates of last_used_at
ALTER SEQUENCE iapi_tokens.token_id_seq OWNED BY iapi_tokens.tokens.id;

CREATE INDEX tokens_active_source_idx
	ON iapi_tokens.tokens (source_id, id DESC)
	WHERE revoked_at IS NULL;
CREATE UNIQUE INDEX tokens_token_uuid_key ON iapi_tokens.tokens (token_uuid);
CREATE INDEX tokens_active_owner_idx
	ON iapi_tokens.tokens (owner_role, id DESC)
	WHERE revoked_at IS NULL AND owner_role IS NOT NULL;

COMMENT ON TABLE iapi_tokens.sources IS
	'Import API sources (Stitch Connect Source objects); soft-deleted through deleted_at';
COMMENT ON TABLE iapi_tokens.tokens IS
	'Access tokens of both families (source tokens and personal tokens), stored only as SHA-256 hashes';
COMMENT ON COLUMN iapi_tokens.tokens.source_id IS
	'The Import API source of a source token; NULL for a personal token.  Triggers, not a foreign key, keep it pointing at a source, so that a parallel restore may load tokens before sources';
COMMENT ON COLUMN iapi_tokens.tokens.owner_role IS
	'The role that owns a personal token; NULL for a source token';
COMMENT ON COLUMN iapi_tokens.tokens.token_uuid IS
	'The public id (tokenId) of a personal token';
COMMENT ON COLUMN iapi_tokens.tokens.replaced_by IS
	'Set by a rotation: the id of the token that replaced this one';
COMMENT ON COLUMN iapi_tokens.tokens.revoked_reason IS
	'Why the token was revoked, where it says more than revoked_at: leaked (reported by revoke_leaked)';
COMMENT ON COLUMN iapi_tokens.tokens.token_hash IS
	'SHA-256 of the whole token string; the token itself is never stored';
COMMENT ON COLUMN iapi_tokens.tokens.display_prefix IS
	'The token prefix and the first 4 random characters: enough to tell tokens apart, not enough to guess one';
COMMENT ON COLUMN iapi_tokens.tokens.last_used_at IS
	'Last successful verification, as of the last usage flush (iapi_tokens.usage_flush_interval); without shared_preload_libraries, written at most once per iapi_tokens.last_used_interval';
COMMENT ON COLUMN iapi_tokens.tokens.scopes IS
	'The scopes the token is limited to (defined in iapi_tokens.scopes), fixed at creation; NULL: no restriction, empty: it can only identify itself';
COMMENT ON COLUMN iapi_tokens.tokens.metadata IS
	'A JSON object of at most 4096 bytes given at creation (a plan, a customer id); never secret, returned on verification';
COMMENT ON COLUMN iapi_tokens.tokens.rate_limit IS
	'Verifications admitted per rate_window, counted per server in shared memory; NULL: unlimited';
COMMENT ON COLUMN iapi_tokens.tokens.rate_window IS
	'The window of rate_limit, 1 second to 1 day; it opens at the first verification after the previous one ended';
COMMENT ON COLUMN iapi_tokens.tokens.use_count IS
	'Successful verifications applied so far by usage flushes (without shared_preload_libraries: the last_used_at writes)';
COMMENT ON COLUMN iapi_tokens.sources.token_changes IS
	'Count of token inserts and reactivations; its update serializes the two-token cap';

SELECT pg_catalog.pg_extension_config_dump('iapi_tokens.sources', '');
SELECT pg_catalog.pg_extension_config_dump('iapi_tokens.tokens', '');
SELECT pg_catalog.pg_extension_config_dump('iapi_tokens.source_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('iapi_tokens.token_id_seq', '');


-- One row per role that has had a personal token: the per-owner limit
-- updates it before counting, as the source cap updates the source row.
CREATE TABLE iapi_tokens.token_owners (
	owner_role regrole NOT NULL,
	token_changes bigint NOT NULL DEFAULT 0,
	CONSTRAINT token_owners_pkey PRIMARY KEY (owner_role)
);

-- Not registered for pg_dump: its rows are only lock anchors, which the cap
-- trigger re-creates, including while a restore loads the tokens.  Dumping it
-- would make its COPY collide with those rows whenever it ran second.
COMMENT ON TABLE iapi_tokens.token_owners IS
	'Internal: one row per personal-token owner; its update serializes iapi_tokens.max_tokens_per_owner';

CREATE SEQUENCE iapi_tokens.audit_id_seq;

CREATE TABLE iapi_tokens.audit (
	id bigint NOT NULL DEFAULT pg_catalog.nextval('iapi_tokens.audit_id_seq'),
	occurred_at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
	action text NOT NULL,
	token_id bigint NOT NULL,
	access_token_id uuid,
	source_id bigint,
	owner_role text,
	acting_role text NOT NULL,
	session_role text NOT NULL,
	details jsonb NOT NULL DEFAULT '{}',
	CONSTRAINT audit_pkey PRIMARY KEY (id),
	CONSTRAINT audit_action_check
		CHECK (action IN ('create', 'rotate', 'revoke', 'delete', 'purge', 'modify', 'leaked',
						  'rate_limit'))
);
ALTER SEQUENCE iapi_tokens.audit_id_seq OWNED BY iapi_tokens.audit.id;
CREATE INDEX audit_token_idx ON iapi_tokens.audit (token_id);

COMMENT ON TABLE iapi_tokens.audit IS
	'Append-only trail of token events; it never holds a token or a token hash';
COMMENT ON COLUMN iapi_tokens.audit.action IS
	'create, rotate (the replaced token), revoke (a source token), delete (a personal token), leaked (revoked by revoke_leaked), purge (row removed), modify (any other change, by direct DML)';
COMMENT ON COLUMN iapi_tokens.audit.owner_role IS
	'The owner of a personal token, by name at the time of the event';
COMMENT ON COLUMN iapi_tokens.audit.acting_role IS
	'The role the session acted as: the role set with SET ROLE (as PostgREST does), else the login role';
COMMENT ON COLUMN iapi_tokens.audit.session_role IS
	'The login role of the session (session_user)';

SELECT pg_catalog.pg_extension_config_dump('iapi_tokens.audit', '');
SELECT pg_catalog.pg_extension_config_dump('iapi_tokens.audit_id_seq', '');



-- Per-role limits on active personal tokens, kept where every connection
-- sees them: a role setting would not apply behind PostgREST, whose SET ROLE
-- does not load the role's settings.
CREATE TABLE iapi_tokens.owner_limits (
	owner_role regrole NOT NULL,
	max_tokens integer NOT NULL,
	CONSTRAINT owner_limits_pkey PRIMARY KEY (owner_role),
	CONSTRAINT owner_limits_max_tokens_check CHECK (max_tokens >= 0)
);

COMMENT ON TABLE iapi_tokens.owner_limits IS
	'Per-role maximum of active personal tokens (0: no limit); a role without a row has iapi_tokens.max_tokens_per_owner';

SELECT pg_catalog.pg_extension_config_dump('iapi_tokens.owner_limits', '');

-- The scopes a token may be limited to.  A token names them in
-- tokens.scopes; creating one locks the rows it names (FOR KEY SHARE), so
-- that drop_scope, which locks its row FOR UPDATE first, sees every token
-- that holds the scope.
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


-- ---------------------------------------------------------------------------
-- Row-level security: a role granted SELECT on the table sees only its own
-- personal tokens.  No role is granted it by default; the functions below
-- are the interface, and they run as the owner, which RLS does not bind.
-- ---------------------------------------------------------------------------

ALTER TABLE iapi_tokens.tokens ENABLE ROW LEVEL SECURITY;

CREATE POLICY tokens_own_personal_tokens ON iapi_tokens.tokens
	USING (owner_role OPERATOR(pg_catalog.=)
		   pg_catalog.to_regrole(pg_catalog.quote_ident(CURRENT_USER)));



-- ---------------------------------------------------------------------------
-- The personal-token row.  The public functions keep their RETURNS TABLE,
-- as 1.1 and 1.2 had it, so that an update need not drop them: views and
-- RLS policies may depend on them.
-- ---------------------------------------------------------------------------

CREATE TYPE iapi_tokens.personal_token AS (
	token_id uuid,
	description text,
	expired_at timestamptz,
	last_used timestamptz,
	created_at timestamptz);

COMMENT ON TYPE iapi_tokens.personal_token IS
	'A personal token as the Trifacta tokenInfo describes it: tokenId, description, expiredAt, lastUsed, createdAt';

-- ---------------------------------------------------------------------------
-- C functions: hashing, generation, verification, the current token
-- ---------------------------------------------------------------------------

CREATE FUNCTION iapi_tokens.hash_token(token text)
RETURNS bytea
AS 'MODULE_PATHNAME', 'iapi_tokens_hash_token'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION iapi_tokens.hash_token(text) IS
	'SHA-256 of a token, as stored in iapi_tokens.tokens.token_hash';

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

-- STABLE as current_setting() is: only authenticate() changes it.
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

-- For RLS policies: STABLE, and false rather than an error.
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

-- ---------------------------------------------------------------------------
-- Caps: two active tokens per source, the owner's limit per role.  Each
-- insert or reactivation first updates the row that stands for its source
-- or owner, so concurrent ones wait (READ COMMITTED) or fail with a
-- serialization error (REPEATABLE READ, SERIALIZABLE) instead of counting
-- from stale snapshots.
-- ---------------------------------------------------------------------------

-- The row that stands for a personal-token owner.  Every insert or
-- reactivation of that owner's tokens updates it before counting, so that
-- concurrent ones wait (READ COMMITTED) or fail to serialize instead of
-- counting from stale snapshots.
CREATE FUNCTION iapi_tokens_internal.lock_owner(owner regrole)
RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	INSERT INTO iapi_tokens.token_owners AS o (owner_role, token_changes)
	VALUES (lock_owner.owner, 1)
	ON CONFLICT (owner_role)
	DO UPDATE SET token_changes = o.token_changes + 1;
END;

COMMENT ON FUNCTION iapi_tokens_internal.lock_owner(regrole) IS
	'Locks a personal-token owner''s row in token_owners, creating it if need be';

-- The per-owner limit: the role's row in owner_limits, else default_max
-- (iapi_tokens.max_tokens_per_owner, which the C functions pass; NULL from
-- the trigger, for direct DML).  Called after lock_owner().
CREATE FUNCTION iapi_tokens_internal.check_owner_limit(
	owner regrole,
	default_max integer,
	exclude_id bigint)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	owner_cap integer;
	active_count bigint;
	now_ts timestamptz := clock_timestamp();
BEGIN
	SELECT l.max_tokens INTO owner_cap
	  FROM iapi_tokens.owner_limits l WHERE l.owner_role = check_owner_limit.owner;
	owner_cap := coalesce(owner_cap, default_max, 0);
	IF owner_cap = 0 THEN
		RETURN;
	END IF;
	SELECT count(*) INTO active_count
	  FROM iapi_tokens.tokens t
	 WHERE t.owner_role = check_owner_limit.owner
	   AND t.revoked_at IS NULL
	   AND (t.expires_at IS NULL OR t.expires_at > now_ts)
	   AND t.id IS DISTINCT FROM exclude_id;
	IF active_count >= owner_cap THEN
		RAISE EXCEPTION 'role % already has % active personal tokens, the maximum',
			owner, owner_cap
			USING ERRCODE = 'check_violation',
				  HINT = 'Delete a token with iapi_tokens.delete_access_token() first; iapi_tokens.set_owner_limit() and iapi_tokens.max_tokens_per_owner set the maximum.';
	END IF;
END
$$;

COMMENT ON FUNCTION iapi_tokens_internal.check_owner_limit(regrole, integer, bigint) IS
	'Raises the limit error when a personal-token owner has its maximum of active tokens';

-- Rows that COPY loads are taken as they are: a restore (pg_restore, -j
-- included) brings back data that the rules below accepted when it was
-- made, and may load the tokens before their sources or the owners' limits.
-- iapi_tokens.check_tokens() checks the whole once the load is complete.
-- Only roles that may write the tables (the owner) can COPY into them.
CREATE FUNCTION iapi_tokens_internal.bulk_loading()
RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN pg_catalog.current_query() ~* '^\s*copy\s';

COMMENT ON FUNCTION iapi_tokens_internal.bulk_loading() IS
	'True while the statement being run is a COPY: a bulk load, such as a restore';

-- What the foreign key from tokens to sources did, without forcing a load
-- order: a source that tokens point at keeps its row and its id.
CREATE FUNCTION iapi_tokens_internal.keep_referenced_source()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF TG_OP = 'TRUNCATE' THEN
		IF EXISTS (SELECT FROM iapi_tokens.tokens t WHERE t.source_id IS NOT NULL) THEN
			RAISE EXCEPTION 'cannot truncate iapi_tokens.sources while tokens refer to it'
				USING ERRCODE = 'foreign_key_violation',
					  HINT = 'Sources are deleted with iapi_tokens.delete_source(), which keeps the row.';
		END IF;
		RETURN NULL;
	END IF;
	IF (TG_OP = 'DELETE' OR NEW.id <> OLD.id)
		AND EXISTS (SELECT FROM iapi_tokens.tokens t WHERE t.source_id = OLD.id) THEN
		RAISE EXCEPTION 'source % still has tokens', OLD.id
			USING ERRCODE = 'foreign_key_violation',
				  DETAIL = 'Tokens refer to the source by its id.',
				  HINT = 'Sources are deleted with iapi_tokens.delete_source(), which keeps the row.';
	END IF;
	RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
END
$$;

COMMENT ON FUNCTION iapi_tokens_internal.keep_referenced_source() IS
	'Trigger: refuses to delete, truncate or renumber a source that tokens refer to';

CREATE FUNCTION iapi_tokens_internal.enforce_token_cap()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	source_cap CONSTANT integer := 2;
	now_ts timestamptz := pg_catalog.clock_timestamp();
	source_deleted_at timestamptz;
	active_count bigint;
BEGIN
	IF NEW.revoked_at IS NOT NULL THEN
		RETURN NEW;				-- a revoked row never counts
	END IF;
	IF iapi_tokens_internal.bulk_loading() THEN
		RETURN NEW;				-- checked by check_tokens() once loaded
	END IF;
	IF TG_OP = 'UPDATE' THEN
		IF NEW.expires_at <= now_ts THEN
			RETURN NEW;			-- nor does an expired one
		END IF;
		IF OLD.source_id IS NOT DISTINCT FROM NEW.source_id
			AND OLD.owner_role IS NOT DISTINCT FROM NEW.owner_role
			AND OLD.revoked_at IS NULL
			AND (OLD.expires_at IS NULL OR OLD.expires_at > now_ts) THEN
			RETURN NEW;			-- already counted
		END IF;
	END IF;

	IF NEW.owner_role IS NOT NULL THEN
		-- A dropped role's token, as a restore brings it back with a bare
		-- OID that another role may later get: stored revoked, never live.
		IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles r WHERE r.oid = NEW.owner_role) THEN
			NEW.revoked_at := now_ts;
			RETURN NEW;
		END IF;
		PERFORM iapi_tokens_internal.lock_owner(NEW.owner_role);
		IF NEW.expires_at <= now_ts THEN
			RETURN NEW;
		END IF;
		-- The role's own limit.  The functions that make personal tokens
		-- have already applied the default they were given.
		PERFORM iapi_tokens_internal.check_owner_limit(NEW.owner_role, NULL, NEW.id);
		RETURN NEW;
	END IF;

	IF NEW.source_id IS NULL THEN
		RETURN NEW;				-- tokens_family_check rejects the row
	END IF;

	UPDATE iapi_tokens.sources s
	   SET token_changes = s.token_changes + 1
	 WHERE s.id = NEW.source_id
	RETURNING s.deleted_at INTO source_deleted_at;

	IF NOT FOUND THEN
		RAISE EXCEPTION 'source % does not exist', NEW.source_id
			USING ERRCODE = 'undefined_object';
	END IF;
	IF source_deleted_at IS NOT NULL THEN
		RAISE EXCEPTION 'source % is deleted', NEW.source_id
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'A deleted source accepts no new token.';
	END IF;

	-- Checked after the source, so that even a token that expires at once
	-- cannot be added to a deleted or unknown source.
	IF NEW.expires_at <= now_ts THEN
		RETURN NEW;
	END IF;

	SELECT pg_catalog.count(*) INTO active_count
	  FROM iapi_tokens.tokens t
	 WHERE t.source_id = NEW.source_id
	   AND t.revoked_at IS NULL
	   AND (t.expires_at IS NULL OR t.expires_at > now_ts)
	   AND t.id <> NEW.id;

	IF active_count >= source_cap THEN
		RAISE EXCEPTION 'source % already has % active tokens, the maximum',
			NEW.source_id, source_cap
			USING ERRCODE = 'check_violation',
				  HINT = 'Revoke a token with iapi_tokens.revoke_token() before generating a new one, or rotate it with iapi_tokens.rotate_token().';
	END IF;
	RETURN NEW;
END
$$;

COMMENT ON FUNCTION iapi_tokens_internal.enforce_token_cap() IS
	'Trigger: at most two active tokens per source and the owner''s limit per role, race-free at every isolation level';

CREATE TRIGGER tokens_cap_insert
	BEFORE INSERT ON iapi_tokens.tokens
	FOR EACH ROW
	WHEN (NEW.revoked_at IS NULL)
	EXECUTE FUNCTION iapi_tokens_internal.enforce_token_cap();

CREATE TRIGGER tokens_cap_update
	BEFORE UPDATE OF source_id, owner_role, revoked_at, expires_at
	ON iapi_tokens.tokens
	FOR EACH ROW
	WHEN (NEW.revoked_at IS NULL)
	EXECUTE FUNCTION iapi_tokens_internal.enforce_token_cap();

CREATE TRIGGER sources_keep_tokens
	BEFORE DELETE OR UPDATE OF id ON iapi_tokens.sources
	FOR EACH ROW
	EXECUTE FUNCTION iapi_tokens_internal.keep_referenced_source();

CREATE TRIGGER sources_keep_tokens_truncate
	BEFORE TRUNCATE ON iapi_tokens.sources
	FOR EACH STATEMENT
	EXECUTE FUNCTION iapi_tokens_internal.keep_referenced_source();


-- ---------------------------------------------------------------------------
-- Audit trail, written by the storing functions and by triggers, so that
-- every path is recorded: the functions, and the owner's direct UPDATE and
-- DELETE.
-- ---------------------------------------------------------------------------

CREATE FUNCTION iapi_tokens_internal.acting_role()
RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN CASE pg_catalog.current_setting('role')
	   WHEN 'none' THEN SESSION_USER::text
	   ELSE pg_catalog.current_setting('role') END;

COMMENT ON FUNCTION iapi_tokens_internal.acting_role() IS
	'The role the session acts as: the role set with SET ROLE, else the login role; SECURITY DEFINER functions do not change it';

-- A creation is recorded by the function that stores the token, not by an
-- INSERT trigger: a restore's COPY re-inserts existing tokens, which are
-- not new.
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

CREATE FUNCTION iapi_tokens_internal.forbid_token_truncate()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RAISE EXCEPTION 'TRUNCATE of iapi_tokens.tokens is not allowed'
		USING ERRCODE = 'insufficient_privilege',
			  DETAIL = 'It would remove tokens without a trace in iapi_tokens.audit.',
			  HINT = 'Use iapi_tokens.purge_tokens(), or DELETE, which the audit trail records.';
END
$$;

COMMENT ON FUNCTION iapi_tokens_internal.forbid_token_truncate() IS
	'Trigger: refuses TRUNCATE on iapi_tokens.tokens, which row triggers, and so the audit trail, would not see';

CREATE TRIGGER tokens_no_truncate
	BEFORE TRUNCATE ON iapi_tokens.tokens
	FOR EACH STATEMENT
	EXECUTE FUNCTION iapi_tokens_internal.forbid_token_truncate();

CREATE FUNCTION iapi_tokens_internal.forbid_audit_change()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RAISE EXCEPTION 'iapi_tokens.audit is append-only'
		USING ERRCODE = 'insufficient_privilege',
			  DETAIL = pg_catalog.format('%s is not allowed on the audit trail.', TG_OP),
			  HINT = 'To prune it, a superuser disables the trigger audit_append_only for the transaction.';
END
$$;

COMMENT ON FUNCTION iapi_tokens_internal.forbid_audit_change() IS
	'Trigger: refuses UPDATE, DELETE and TRUNCATE on iapi_tokens.audit, even from its owner';

CREATE TRIGGER audit_append_only
	BEFORE UPDATE OR DELETE ON iapi_tokens.audit
	FOR EACH ROW
	EXECUTE FUNCTION iapi_tokens_internal.forbid_audit_change();

CREATE TRIGGER audit_append_only_truncate
	BEFORE TRUNCATE ON iapi_tokens.audit
	FOR EACH STATEMENT
	EXECUTE FUNCTION iapi_tokens_internal.forbid_audit_change();


-- ---------------------------------------------------------------------------
-- Source objects
-- ---------------------------------------------------------------------------

CREATE FUNCTION iapi_tokens.iso8601(ts timestamptz)
RETURNS text
LANGUAGE sql STABLE STRICT PARALLEL SAFE
RETURN pg_catalog.to_char(pg_catalog.timezone('UTC', ts),
						  'YYYY-MM-DD"T"HH24:MI:SS"Z"');

COMMENT ON FUNCTION iapi_tokens.iso8601(timestamptz) IS
	'Formats a timestamp as the Connect API does: ISO 8601, UTC, seconds, trailing Z';

CREATE FUNCTION iapi_tokens_internal.require_source(source_id bigint)
RETURNS iapi_tokens.sources
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	s iapi_tokens.sources;
BEGIN
	IF require_source.source_id IS NULL THEN
		RAISE EXCEPTION 'source_id must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	SELECT * INTO s FROM iapi_tokens.sources WHERE id = require_source.source_id;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'source % does not exist', require_source.source_id
			USING ERRCODE = 'undefined_object';
	END IF;
	RETURN s;
END
$$;

COMMENT ON FUNCTION iapi_tokens_internal.require_source(bigint) IS
	'The source row, or the documented error for a NULL or unknown id';

CREATE FUNCTION iapi_tokens.source_json(source_id bigint)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	s iapi_tokens.sources;
	configured boolean;
BEGIN
	s := iapi_tokens_internal.require_source(source_json.source_id);

	-- The report card's form step is complete once the source has a token.
	configured := EXISTS (
		SELECT FROM iapi_tokens.tokens t
		 WHERE t.source_id = s.id AND t.revoked_at IS NULL
		   AND (t.expires_at IS NULL OR t.expires_at > pg_catalog.statement_timestamp()));

	RETURN jsonb_build_object(
		'id', s.id,
		'name', s.name,
		'display_name', s.display_name,
		'type', 'import_api',
		'stitch_client_id', s.stitch_client_id,
		'properties', s.properties,
		'schedule', s.schedule,
		'created_at', iapi_tokens.iso8601(s.created_at),
		'updated_at', iapi_tokens.iso8601(s.updated_at),
		'deleted_at', iapi_tokens.iso8601(s.deleted_at),
		'paused_at', iapi_tokens.iso8601(s.paused_at),
		'system_paused_at', iapi_tokens.iso8601(s.system_paused_at),
		'report_card', jsonb_build_object(
			'type', 'import_api',
			'current_step', CASE WHEN configured THEN 2 ELSE 1 END,
			'current_step_type', CASE WHEN configured THEN 'fully_configured' ELSE 'form' END,
			'steps', jsonb_build_array(
				jsonb_build_object('type', 'form', 'properties', '[]'::jsonb),
				jsonb_build_object('type', 'fully_configured', 'properties', '[]'::jsonb))));
END
$$;

COMMENT ON FUNCTION iapi_tokens.source_json(bigint) IS
	'The Connect API v4 Source object for a source, as in GET /v4/sources';

CREATE FUNCTION iapi_tokens.create_source(
	name text,
	display_name text DEFAULT NULL,
	client_id bigint DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	new_id bigint;
BEGIN
	IF create_source.name IS NULL THEN
		RAISE EXCEPTION 'name must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF char_length(create_source.name) > 63 THEN
		RAISE EXCEPTION 'source name is too long'
			USING ERRCODE = 'string_data_right_truncation',
				  DETAIL = format('The name has %s characters; the maximum is 63.',
								  char_length(create_source.name));
	END IF;
	IF create_source.name !~ '^[a-z][a-z0-9_]*$' THEN
		RAISE EXCEPTION 'invalid source name "%"', create_source.name
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'A source name starts with a lower-case letter and holds only lower-case letters, digits and underscores.';
	END IF;
	IF char_length(create_source.display_name) > 255 THEN
		RAISE EXCEPTION 'display name is too long'
			USING ERRCODE = 'string_data_right_truncation',
				  DETAIL = format('The display name has %s characters; the maximum is 255.',
								  char_length(create_source.display_name));
	END IF;
	IF create_source.display_name = '' THEN
		RAISE EXCEPTION 'display name must not be empty'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Pass NULL to use the source name.';
	END IF;

	BEGIN
		INSERT INTO iapi_tokens.sources (name, display_name, stitch_client_id)
		VALUES (create_source.name,
				coalesce(create_source.display_name, create_source.name),
				create_source.client_id)
		RETURNING id INTO new_id;
	EXCEPTION WHEN unique_violation THEN
		RAISE EXCEPTION 'source name "%" is already in use', create_source.name
			USING ERRCODE = 'unique_violation',
				  HINT = 'Names are unique per client among sources that are not deleted.';
	END;
	RETURN new_id;
END
$$;

COMMENT ON FUNCTION iapi_tokens.create_source(text, text, bigint) IS
	'Creates an Import API source and returns its id';

CREATE FUNCTION iapi_tokens.list_sources(client_id bigint DEFAULT NULL)
RETURNS SETOF jsonb
LANGUAGE sql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	SELECT iapi_tokens.source_json(s.id)
	  FROM iapi_tokens.sources s
	 WHERE $1 IS NULL OR s.stitch_client_id = $1
	 ORDER BY s.id;
END;

COMMENT ON FUNCTION iapi_tokens.list_sources(bigint) IS
	'Source objects, all of them or one client''s, deleted ones included (with deleted_at), as in GET /v4/sources';

CREATE FUNCTION iapi_tokens.delete_source(source_id bigint)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	now_ts timestamptz := clock_timestamp();
BEGIN
	UPDATE iapi_tokens.sources s
	   SET deleted_at = now_ts, updated_at = now_ts
	 WHERE s.id = delete_source.source_id AND s.deleted_at IS NULL;
	IF NOT FOUND THEN
		-- Raises for a NULL or unknown id; otherwise the source was deleted.
		PERFORM iapi_tokens_internal.require_source(delete_source.source_id);
		RAISE EXCEPTION 'source % is already deleted', delete_source.source_id
			USING ERRCODE = 'object_not_in_prerequisite_state';
	END IF;
	UPDATE iapi_tokens.tokens t
	   SET revoked_at = now_ts
	 WHERE t.source_id = delete_source.source_id AND t.revoked_at IS NULL;
	RETURN iapi_tokens.source_json(delete_source.source_id);
END
$$;

COMMENT ON FUNCTION iapi_tokens.delete_source(bigint) IS
	'Soft-deletes a source and revokes its tokens in the same transaction; returns the Source object';


-- ---------------------------------------------------------------------------
-- Source token management
-- ---------------------------------------------------------------------------

CREATE FUNCTION iapi_tokens.list_tokens(source_id bigint)
RETURNS TABLE (token_id bigint, created_at timestamptz)
LANGUAGE plpgsql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM iapi_tokens_internal.require_source(list_tokens.source_id);
	RETURN QUERY
		SELECT t.id, t.created_at
		  FROM iapi_tokens.tokens t
		 WHERE t.source_id = list_tokens.source_id
		   AND t.revoked_at IS NULL
		   AND (t.expires_at IS NULL OR t.expires_at > statement_timestamp())
		 ORDER BY t.id DESC;
END
$$;

COMMENT ON FUNCTION iapi_tokens.list_tokens(bigint) IS
	'A source''s active tokens, newest first, as in GET /v4/sources/{source_id}/tokens';

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

CREATE FUNCTION iapi_tokens.revoke_token(source_id bigint, token_id bigint)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	now_ts timestamptz := clock_timestamp();
BEGIN
	-- Source row first, token row second: the order generate_token takes.
	UPDATE iapi_tokens.sources s
	   SET updated_at = greatest(s.updated_at, now_ts)
	 WHERE s.id = revoke_token.source_id;
	IF NOT FOUND THEN
		-- Raises for a NULL or unknown id.
		PERFORM iapi_tokens_internal.require_source(revoke_token.source_id);
	END IF;
	IF revoke_token.token_id IS NULL THEN
		RAISE EXCEPTION 'token_id must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;

	UPDATE iapi_tokens.tokens t
	   SET revoked_at = now_ts
	 WHERE t.id = revoke_token.token_id
	   AND t.source_id = revoke_token.source_id
	   AND t.revoked_at IS NULL;
	IF NOT FOUND THEN
		PERFORM FROM iapi_tokens.tokens t
		 WHERE t.id = revoke_token.token_id
		   AND t.source_id = revoke_token.source_id;
		IF NOT FOUND THEN
			-- Same error whether the token is unknown or another source's.
			RAISE EXCEPTION 'token % does not exist for source %',
				revoke_token.token_id, revoke_token.source_id
				USING ERRCODE = 'undefined_object';
		END IF;
		RAISE EXCEPTION 'token % is already revoked', revoke_token.token_id
			USING ERRCODE = 'object_not_in_prerequisite_state';
	END IF;
	RETURN iapi_tokens.source_json(revoke_token.source_id);
END
$$;

COMMENT ON FUNCTION iapi_tokens.revoke_token(bigint, bigint) IS
	'Revokes a token (the row is kept with revoked_at) and returns the Source object with its new updated_at';


-- ---------------------------------------------------------------------------
-- Personal access tokens.  The public functions are SECURITY INVOKER C: they
-- take the owner from the calling role and run the owner-only functions
-- below as the tables' owner (src/run_as_owner.c).
-- ---------------------------------------------------------------------------

-- Days until expiry, rounded up, as GitHub counts them: NULL for a token
-- that never expires, 0 once it has expired.
CREATE FUNCTION iapi_tokens_internal.days_left(expires_at timestamptz)
RETURNS integer
LANGUAGE sql STABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT greatest(0, ceil(extract(epoch FROM $1 - statement_timestamp()) / 86400))::integer
$$;

COMMENT ON FUNCTION iapi_tokens_internal.days_left(timestamptz) IS
	'Days until expires_at, rounded up, 0 once past; NULL when it is NULL';

-- The one place a token row becomes the personal-token row the interface
-- returns.
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

-- No row when a trigger skipped the insert: the caller then refuses to hand
-- out the token.
-- The scopes a new token may hold: defined, at most 32, duplicates folded,
-- sorted.  Locks their rows against drop_scope until the transaction ends.
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

CREATE FUNCTION iapi_tokens_internal.delete_personal_token_of(owner regrole, token_id uuid)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF delete_personal_token_of.token_id IS NULL THEN
		RAISE EXCEPTION 'token_id must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	UPDATE iapi_tokens.tokens t
	   SET revoked_at = clock_timestamp()
	 WHERE t.token_uuid = delete_personal_token_of.token_id
	   AND t.owner_role = delete_personal_token_of.owner
	   AND t.revoked_at IS NULL;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'access token % does not exist', delete_personal_token_of.token_id
			USING ERRCODE = 'undefined_object';
	END IF;
END
$$;

COMMENT ON FUNCTION iapi_tokens_internal.delete_personal_token_of(regrole, uuid) IS
	'Revokes one of a role''s personal tokens, or raises the "does not exist" error';

-- Checks shared by both rotations; returns the replacement's expiry.
CREATE FUNCTION iapi_tokens_internal.check_rotation(
	t iapi_tokens.tokens,
	grace interval,
	now_ts timestamptz,
	max_lifetime integer)
RETURNS timestamptz
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	label text := CASE WHEN t.owner_role IS NULL THEN 'token ' || t.id
					   ELSE 'access token ' || t.token_uuid END;
	lifetime interval := t.expires_at - t.created_at;
BEGIN
	IF grace IS NULL THEN
		RAISE EXCEPTION 'grace must not be null'
			USING ERRCODE = 'null_value_not_allowed',
				  HINT = 'Pass ''0'' to revoke the old token at once.';
	END IF;
	IF grace < interval '0' THEN
		RAISE EXCEPTION 'grace must not be negative'
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = format('The grace period was "%s".', grace);
	END IF;
	IF t.revoked_at IS NOT NULL THEN
		RAISE EXCEPTION '% is revoked', label
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'Only an active token can be rotated.';
	END IF;
	IF t.expires_at <= now_ts THEN
		RAISE EXCEPTION '% has expired', label
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'Only an active token can be rotated.';
	END IF;
	IF t.replaced_by IS NOT NULL THEN
		RAISE EXCEPTION '% was already rotated', label
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  DETAIL = CASE WHEN t.owner_role IS NULL
							THEN format('Token %s replaced it.', t.replaced_by)
							ELSE format('Access token %s replaced it.',
										(SELECT r.token_uuid FROM iapi_tokens.tokens r
										  WHERE r.id = t.replaced_by)) END;
	END IF;
	-- The replacement lives as long as the original did, no longer than the
	-- personal-token maximum.
	IF t.owner_role IS NOT NULL AND max_lifetime > 0
		AND (lifetime IS NULL OR lifetime > make_interval(secs => max_lifetime)) THEN
		RAISE EXCEPTION 'the replacement of % would exceed the maximum lifetime', label
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = format('The token''s lifetime is %s; iapi_tokens.max_lifetime is %s seconds.',
								  coalesce(lifetime::text, 'unlimited'), max_lifetime),
				  HINT = 'Create a new token with iapi_tokens.create_access_token() instead.';
	END IF;
	RETURN now_ts + lifetime;
END
$$;

COMMENT ON FUNCTION iapi_tokens_internal.check_rotation(iapi_tokens.tokens, interval, timestamptz, integer) IS
	'The errors of a rotation, and the expiry of the replacement token';

-- The old token is updated before the new one is inserted: with no grace it
-- is revoked first, so a full source never goes over its cap.
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

CREATE FUNCTION iapi_tokens_internal.rotate_personal_token_of(
	owner regrole,
	access_token_id uuid,
	grace interval,
	token_hash bytea,
	display_prefix text,
	now_ts timestamptz,
	max_lifetime integer,
	max_tokens_per_owner integer)
RETURNS SETOF iapi_tokens.personal_token
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	old iapi_tokens.tokens;
	replacement iapi_tokens.tokens;
BEGIN
	IF rotate_personal_token_of.access_token_id IS NULL THEN
		RAISE EXCEPTION 'token_id must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	-- The owner's row first, the token's second: the order in which
	-- create_access_token takes them, so the two cannot deadlock.
	PERFORM iapi_tokens_internal.lock_owner(rotate_personal_token_of.owner);
	SELECT * INTO old
	  FROM iapi_tokens.tokens t
	 WHERE t.token_uuid = rotate_personal_token_of.access_token_id
	   AND t.owner_role = rotate_personal_token_of.owner
	 FOR NO KEY UPDATE;
	IF NOT FOUND OR old.revoked_at IS NOT NULL THEN
		-- Revoked tokens are gone, as for get_access_token.
		RAISE EXCEPTION 'access token % does not exist', rotate_personal_token_of.access_token_id
			USING ERRCODE = 'undefined_object';
	END IF;
	replacement := iapi_tokens_internal.replace_token(
		old, grace, token_hash, display_prefix, now_ts,
		iapi_tokens_internal.check_rotation(old, grace, now_ts, max_lifetime),
		max_tokens_per_owner);
	-- No row when a trigger skipped the replacement's insert.
	IF replacement.id IS NOT NULL THEN
		RETURN NEXT iapi_tokens_internal.as_personal_token(replacement);
	END IF;
END
$$;

COMMENT ON FUNCTION iapi_tokens_internal.rotate_personal_token_of(regrole, uuid, interval, bytea, text, timestamptz, integer, integer) IS
	'Rotates one of a role''s personal tokens';

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

CREATE FUNCTION iapi_tokens.delete_access_token(token_id uuid)
RETURNS void
AS 'MODULE_PATHNAME', 'iapi_tokens_delete_access_token'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION iapi_tokens.delete_access_token(uuid) IS
	'Revokes one of the calling role''s personal tokens, as DELETE /v4/apiAccessTokens/{tokenId}';

CREATE FUNCTION iapi_tokens.rotate_access_token(
	token_id uuid,
	grace interval DEFAULT '0')
RETURNS TABLE (
	token_value text,
	token_id uuid,
	description text,
	expired_at timestamptz,
	last_used timestamptz,
	created_at timestamptz)
AS 'MODULE_PATHNAME', 'iapi_tokens_rotate_access_token'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION iapi_tokens.rotate_access_token(uuid, interval) IS
	'Replaces one of the calling role''s personal tokens with a new one of the same lifetime; the old one ends at once or after grace';

-- Administration of everyone's personal tokens: EXECUTE on these two
-- functions is the admin privilege.
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

CREATE FUNCTION iapi_tokens.revoke_access_token(token_id uuid)
RETURNS void
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	-- The owner's deletion, on behalf of whoever owns the token; its errors
	-- cover a NULL and an unknown (or deleted) token.
	PERFORM iapi_tokens_internal.delete_personal_token_of(
		(SELECT t.owner_role FROM iapi_tokens.tokens t
		  WHERE t.token_uuid = revoke_access_token.token_id
			AND t.revoked_at IS NULL),
		revoke_access_token.token_id);
END
$$;

COMMENT ON FUNCTION iapi_tokens.revoke_access_token(uuid) IS
	'Admin: revokes any role''s personal token';


-- ---------------------------------------------------------------------------
-- Rotation of source tokens
-- ---------------------------------------------------------------------------

CREATE FUNCTION iapi_tokens_internal.rotate_source_token(
	source_id bigint,
	token_id bigint,
	grace interval,
	token_hash bytea,
	display_prefix text,
	now_ts timestamptz)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	old iapi_tokens.tokens;
BEGIN
	-- Source row first, token row second: the order generate_token takes.
	UPDATE iapi_tokens.sources s
	   SET updated_at = greatest(s.updated_at, now_ts)
	 WHERE s.id = rotate_source_token.source_id;
	IF NOT FOUND THEN
		-- Raises for a NULL or unknown id.
		PERFORM iapi_tokens_internal.require_source(rotate_source_token.source_id);
	END IF;
	IF rotate_source_token.token_id IS NULL THEN
		RAISE EXCEPTION 'token_id must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	SELECT * INTO old
	  FROM iapi_tokens.tokens t
	 WHERE t.id = rotate_source_token.token_id
	   AND t.source_id = rotate_source_token.source_id
	 FOR NO KEY UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'token % does not exist for source %',
			rotate_source_token.token_id, rotate_source_token.source_id
			USING ERRCODE = 'undefined_object';
	END IF;
	RETURN (iapi_tokens_internal.replace_token(
		old, grace, token_hash, display_prefix, now_ts,
		iapi_tokens_internal.check_rotation(old, grace, now_ts, 0), NULL)).id;
END
$$;

COMMENT ON FUNCTION iapi_tokens_internal.rotate_source_token(bigint, bigint, interval, bytea, text, timestamptz) IS
	'Rotates a source token minted by rotate_token';

CREATE FUNCTION iapi_tokens.rotate_token(
	source_id bigint,
	token_id bigint,
	grace interval DEFAULT '0')
RETURNS TABLE (id bigint, access_token text)
AS 'MODULE_PATHNAME', 'iapi_tokens_rotate_token'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION iapi_tokens.rotate_token(bigint, bigint, interval) IS
	'Replaces a source token with a new one in one transaction; the old one is revoked at once, or expires after grace (which counts against the cap)';


-- ---------------------------------------------------------------------------
-- Leaks and expiry
-- ---------------------------------------------------------------------------

-- The hashes of reported tokens, from revoke_leaked(): the plaintexts never
-- reach a statement.  Revokes the active ones, of either family.
CREATE FUNCTION iapi_tokens_internal.revoke_leaked_hashes(hashes bytea[])
RETURNS SETOF bigint
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	UPDATE iapi_tokens.tokens t
	   SET revoked_at = clock_timestamp(), revoked_reason = 'leaked'
	 WHERE t.token_hash = ANY (hashes)
	   AND t.revoked_at IS NULL
	   AND (t.expires_at IS NULL OR t.expires_at > clock_timestamp())
	RETURNING t.id
$$;

COMMENT ON FUNCTION iapi_tokens_internal.revoke_leaked_hashes(bytea[]) IS
	'Revokes the active tokens with these hashes, as leaked; returns their ids';

-- Like verify_token: no error for any input, nothing about which inputs
-- were tokens beyond the count.
CREATE FUNCTION iapi_tokens.revoke_leaked(tokens text[])
RETURNS integer
AS 'MODULE_PATHNAME', 'iapi_tokens_revoke_leaked'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION iapi_tokens.revoke_leaked(text[]) IS
	'For secret scanners: revokes every active token, of either family and any owner, among the plaintexts given (at most 1000) and returns how many; NULL when given more; never an error';

CREATE FUNCTION iapi_tokens.expiring_tokens(within interval)
RETURNS TABLE (
	token_id bigint,
	access_token_id uuid,
	source_id bigint,
	owner regrole,
	description text,
	expires_at timestamptz)
LANGUAGE plpgsql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF expiring_tokens.within IS NULL THEN
		RAISE EXCEPTION 'within must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF expiring_tokens.within < interval '0' THEN
		RAISE EXCEPTION 'within must not be negative'
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = format('within was "%s".', expiring_tokens.within);
	END IF;
	RETURN QUERY
		SELECT t.id, t.token_uuid, t.source_id, t.owner_role, t.description, t.expires_at
		  FROM iapi_tokens.tokens t
		 WHERE t.revoked_at IS NULL
		   AND t.expires_at > statement_timestamp()
		   AND t.expires_at <= statement_timestamp() + expiring_tokens.within
		 ORDER BY t.expires_at, t.id;
END
$$;

COMMENT ON FUNCTION iapi_tokens.expiring_tokens(interval) IS
	'Admin: the active tokens of both families that expire within the interval, soonest first';

-- ---------------------------------------------------------------------------
-- The whole, checked once a bulk load is complete
-- ---------------------------------------------------------------------------

CREATE FUNCTION iapi_tokens.check_tokens()
RETURNS TABLE (problem text, source_id bigint, owner regrole, detail text)
LANGUAGE sql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
	SELECT 'token without its source', t.source_id, NULL::regrole,
		   'token ' || t.id || ' refers to a source that does not exist'
	  FROM iapi_tokens.tokens t
	 WHERE t.source_id IS NOT NULL
	   AND NOT EXISTS (SELECT FROM iapi_tokens.sources s WHERE s.id = t.source_id)
	UNION ALL
	SELECT 'source over the cap', t.source_id, NULL,
		   count(*) || ' active tokens; the maximum is 2'
	  FROM iapi_tokens.tokens t
	 WHERE t.source_id IS NOT NULL AND t.revoked_at IS NULL
	   AND (t.expires_at IS NULL OR t.expires_at > statement_timestamp())
	 GROUP BY t.source_id HAVING count(*) > 2
	UNION ALL
	SELECT 'owner over its limit', NULL, t.owner_role,
		   count(*) || ' active personal tokens; owner_limits allows ' || min(l.max_tokens)
	  FROM iapi_tokens.tokens t
	  JOIN iapi_tokens.owner_limits l ON l.owner_role = t.owner_role AND l.max_tokens > 0
	 WHERE t.revoked_at IS NULL
	   AND (t.expires_at IS NULL OR t.expires_at > statement_timestamp())
	 GROUP BY t.owner_role HAVING count(*) > min(l.max_tokens)
	 ORDER BY 1, 2, 3
$$;

COMMENT ON FUNCTION iapi_tokens.check_tokens() IS
	'Admin: what breaks the stored rules (a token without its source, a source or owner over its maximum); no row when all is well.  Run it after loading data with COPY, which takes rows as they are';

-- ---------------------------------------------------------------------------
-- Purge
-- ---------------------------------------------------------------------------

CREATE FUNCTION iapi_tokens.purge_tokens(older_than interval)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	cutoff timestamptz;
	purged bigint;
BEGIN
	IF older_than IS NULL THEN
		RAISE EXCEPTION 'older_than must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF older_than < interval '0' THEN
		RAISE EXCEPTION 'older_than must not be negative'
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = format('older_than was "%s".', older_than);
	END IF;
	cutoff := clock_timestamp() - older_than;

	-- Tokens of dropped roles verify no more; revoke them, so that no dump
	-- carries them live (see enforce_token_cap).
	UPDATE iapi_tokens.tokens t
	   SET revoked_at = clock_timestamp()
	 WHERE t.id IN (SELECT o.id FROM iapi_tokens.tokens o
				     WHERE o.owner_role IS NOT NULL AND o.revoked_at IS NULL
					   AND NOT EXISTS (SELECT FROM pg_catalog.pg_roles r
									    WHERE r.oid = o.owner_role)
					   FOR NO KEY UPDATE SKIP LOCKED);

	-- least() skips NULLs: the earlier of revocation and expiry, both past.
	-- Rows locked by others (a revocation in progress) wait for the next run,
	-- rather than risk a deadlock with a multi-row revocation.
	DELETE FROM iapi_tokens.tokens t
	 WHERE t.id IN (SELECT o.id FROM iapi_tokens.tokens o
				     WHERE least(o.revoked_at, o.expires_at) < cutoff
					   FOR UPDATE SKIP LOCKED);
	GET DIAGNOSTICS purged = ROW_COUNT;
	RETURN purged;
END
$$;

COMMENT ON FUNCTION iapi_tokens.purge_tokens(interval) IS
	'Deletes tokens revoked or expired longer ago than older_than and returns how many, never an active token; first revokes the tokens of dropped roles';

-- ---------------------------------------------------------------------------
-- Token use.  With shared_preload_libraries = 'iapi_tokens', verification
-- records use in shared memory and a background worker applies it here,
-- in batches: on a primary itself, from a hot standby through a role
-- granted only this function.
-- ---------------------------------------------------------------------------

-- Only last_used_at and use_count change, which no trigger watches and no
-- index holds (HOT).  Rows that a revocation holds are waited for 10 ms at
-- most, then skipped and reported back, so that the caller retries them.
-- Tokens gone since are ignored; a revoked one still gets its use, which
-- happened.
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

-- ---------------------------------------------------------------------------
-- Per-role limits
-- ---------------------------------------------------------------------------

CREATE FUNCTION iapi_tokens.set_owner_limit(owner regrole, max_tokens integer)
RETURNS void
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF set_owner_limit.owner IS NULL THEN
		RAISE EXCEPTION 'owner must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF set_owner_limit.max_tokens < 0 THEN
		RAISE EXCEPTION 'invalid max_tokens: %', set_owner_limit.max_tokens
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'A limit is 0 (no limit) or a positive number of active personal tokens.',
				  HINT = 'Pass NULL to give the role iapi_tokens.max_tokens_per_owner again.';
	END IF;
	IF set_owner_limit.max_tokens IS NULL THEN
		DELETE FROM iapi_tokens.owner_limits l WHERE l.owner_role = set_owner_limit.owner;
	ELSE
		INSERT INTO iapi_tokens.owner_limits AS l (owner_role, max_tokens)
		VALUES (set_owner_limit.owner, set_owner_limit.max_tokens)
		ON CONFLICT (owner_role) DO UPDATE SET max_tokens = EXCLUDED.max_tokens;
	END IF;
END
$$;

COMMENT ON FUNCTION iapi_tokens.set_owner_limit(regrole, integer) IS
	'Admin: sets a role''s maximum of active personal tokens (0: no limit; NULL: back to iapi_tokens.max_tokens_per_owner); it applies behind PostgREST too';

-- ---------------------------------------------------------------------------
-- Scopes
-- ---------------------------------------------------------------------------

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

-- ---------------------------------------------------------------------------
-- Privileges, in one place.  Everything starts with no grant but its
-- owner's: none for PUBLIC, none that ALTER DEFAULT PRIVILEGES added.  Then
-- PUBLIC gets exactly the documented functions.
-- ---------------------------------------------------------------------------

-- Who holds a grant in acl besides the owner, PUBLIC always included (a
-- NULL ACL is the default one, which may give PUBLIC some right).
CREATE FUNCTION iapi_tokens_internal.grantees(acl aclitem[], owner oid)
RETURNS SETOF text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT 'PUBLIC'
	UNION
	SELECT pg_catalog.quote_ident(r.rolname)
	  FROM pg_catalog.aclexplode(acl) a
	  JOIN pg_catalog.pg_roles r ON r.oid = a.grantee
	 WHERE a.grantee <> owner
$$;

COMMENT ON FUNCTION iapi_tokens_internal.grantees(aclitem[], oid) IS
	'The roles an ACL grants anything to, but its owner, and PUBLIC';

-- Used by this script and the update scripts, on the objects they create.
CREATE FUNCTION iapi_tokens_internal.revoke_all_grants(
	relations regclass[],
	functions regprocedure[],
	schemas regnamespace[])
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	stmt text;
BEGIN
	FOR stmt IN
		SELECT pg_catalog.format('REVOKE ALL ON %s %s FROM %s',
					CASE c.relkind WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END,
					c.oid::regclass, g)
		  FROM pg_catalog.pg_class c,
			   iapi_tokens_internal.grantees(c.relacl, c.relowner) g
		 WHERE c.oid = ANY (revoke_all_grants.relations)
		UNION ALL
		SELECT pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM %s', p.oid::regprocedure, g)
		  FROM pg_catalog.pg_proc p,
			   iapi_tokens_internal.grantees(p.proacl, p.proowner) g
		 WHERE p.oid = ANY (revoke_all_grants.functions)
		UNION ALL
		SELECT pg_catalog.format('REVOKE ALL ON SCHEMA %s FROM %s', n.oid::regnamespace, g)
		  FROM pg_catalog.pg_namespace n,
			   iapi_tokens_internal.grantees(n.nspacl, n.nspowner) g
		 WHERE n.oid = ANY (revoke_all_grants.schemas)
	LOOP
		EXECUTE stmt;
	END LOOP;
END
$$;

COMMENT ON FUNCTION iapi_tokens_internal.revoke_all_grants(regclass[], regprocedure[], regnamespace[]) IS
	'Revokes every grant but the owner''s, PUBLIC''s included, on the given relations, functions and schemas';

SELECT iapi_tokens_internal.revoke_all_grants(
	ARRAY(SELECT c.oid FROM pg_catalog.pg_class c
		   WHERE c.relnamespace IN ('iapi_tokens'::regnamespace,
									'iapi_tokens_internal'::regnamespace)
			 AND c.relkind IN ('r', 'S'))::regclass[],
	ARRAY(SELECT p.oid FROM pg_catalog.pg_proc p
		   WHERE p.pronamespace IN ('iapi_tokens'::regnamespace,
									'iapi_tokens_internal'::regnamespace))::regprocedure[],
	ARRAY['iapi_tokens', 'iapi_tokens_internal']::regnamespace[]);

GRANT USAGE ON SCHEMA iapi_tokens TO PUBLIC;
GRANT EXECUTE ON FUNCTION iapi_tokens.usage_stats() TO pg_monitor;
GRANT EXECUTE ON FUNCTION iapi_tokens.rate_limit_stats() TO pg_monitor;
GRANT EXECUTE ON FUNCTION
	iapi_tokens.hash_token(text),
	iapi_tokens.verify_token(text),
	iapi_tokens.authenticate(text),
	iapi_tokens.current_token(),
	iapi_tokens.has_scope(text),
	iapi_tokens.require_scope(text),
	iapi_tokens.check_token(text, boolean)
  TO PUBLIC;
