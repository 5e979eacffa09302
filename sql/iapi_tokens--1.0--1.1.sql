-- iapi_tokens 1.0 -> 1.1: personal access tokens (Trifacta v4
-- apiAccessTokens), rotation with overlap, purge and an audit trail.
--
-- A fresh CREATE EXTENSION runs 1.0 and then this script, so installs and
-- updates end in the same state.  Functions whose body changes are dropped
-- and created again only where no user grant can be lost: the trigger
-- functions, and verify_token, which PUBLIC may execute anyway.

\echo Use "ALTER EXTENSION iapi_tokens UPDATE TO '1.1'" to load this file. \quit

-- ---------------------------------------------------------------------------
-- Storage: one token table for both families
-- ---------------------------------------------------------------------------

ALTER TABLE iapi_tokens.tokens
	ALTER COLUMN source_id DROP NOT NULL,
	ADD COLUMN owner_role regrole,
	ADD COLUMN token_uuid uuid,
	ADD COLUMN replaced_by bigint,
	ADD CONSTRAINT tokens_family_check
		CHECK ((source_id IS NULL) <> (owner_role IS NULL)),
	ADD CONSTRAINT tokens_token_uuid_check
		CHECK ((owner_role IS NULL) = (token_uuid IS NULL));

CREATE UNIQUE INDEX tokens_token_uuid_key ON iapi_tokens.tokens (token_uuid);
CREATE INDEX tokens_active_owner_idx
	ON iapi_tokens.tokens (owner_role, id DESC)
	WHERE revoked_at IS NULL AND owner_role IS NOT NULL;

COMMENT ON TABLE iapi_tokens.tokens IS
	'Access tokens of both families (source tokens and personal tokens), stored only as SHA-256 hashes';
COMMENT ON COLUMN iapi_tokens.tokens.source_id IS
	'The Import API source of a source token; NULL for a personal token';
COMMENT ON COLUMN iapi_tokens.tokens.owner_role IS
	'The role that owns a personal token; NULL for a source token';
COMMENT ON COLUMN iapi_tokens.tokens.token_uuid IS
	'The public id (tokenId) of a personal token';
COMMENT ON COLUMN iapi_tokens.tokens.replaced_by IS
	'Set by a rotation: the id of the token that replaced this one';

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
		CHECK (action IN ('create', 'rotate', 'revoke', 'delete', 'purge', 'modify'))
);
ALTER SEQUENCE iapi_tokens.audit_id_seq OWNED BY iapi_tokens.audit.id;
CREATE INDEX audit_token_idx ON iapi_tokens.audit (token_id);

COMMENT ON TABLE iapi_tokens.audit IS
	'Append-only trail of token events; it never holds a token or a token hash';
COMMENT ON COLUMN iapi_tokens.audit.action IS
	'create, rotate (the replaced token), revoke (a source token), delete (a personal token), purge (row removed), modify (any other change, by direct DML)';
COMMENT ON COLUMN iapi_tokens.audit.owner_role IS
	'The owner of a personal token, by name at the time of the event';
COMMENT ON COLUMN iapi_tokens.audit.acting_role IS
	'The role the session acted as: the role set with SET ROLE (as PostgREST does), else the login role';
COMMENT ON COLUMN iapi_tokens.audit.session_role IS
	'The login role of the session (session_user)';

SELECT pg_catalog.pg_extension_config_dump('iapi_tokens.audit', '');
SELECT pg_catalog.pg_extension_config_dump('iapi_tokens.audit_id_seq', '');

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
-- Verification: one path for both families
-- ---------------------------------------------------------------------------

-- verify_token gains two columns, which takes DROP and CREATE.  Its grants
-- are carried over, so that an update never opens it wider than it was.
SELECT pg_catalog.set_config('iapi_tokens_update.verify_token_acl',
							 coalesce(p.proacl::text, ''), true)
  FROM pg_catalog.pg_proc p
 WHERE p.oid = 'iapi_tokens.verify_token(text)'::pg_catalog.regprocedure;

DROP FUNCTION iapi_tokens.verify_token(text);

CREATE FUNCTION iapi_tokens.verify_token(token text)
RETURNS TABLE (
	token_id bigint,
	source_id bigint,
	created_at timestamptz,
	expires_at timestamptz,
	last_used_at timestamptz,
	owner regrole,
	access_token_id uuid)
AS 'MODULE_PATHNAME', 'iapi_tokens_verify_token_1_1'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE ROWS 1;

COMMENT ON FUNCTION iapi_tokens.verify_token(text) IS
	'Returns one row for a valid token of either family (source_id for a source token, owner and access_token_id for a personal token) and no row otherwise; never raises an error for any input';

-- ---------------------------------------------------------------------------
-- Caps: two active tokens per source, iapi_tokens.max_tokens_per_owner per
-- role.  Each insert or reactivation first updates the row that stands for
-- its source or owner, so concurrent ones wait (READ COMMITTED) or fail with
-- a serialization error (REPEATABLE READ, SERIALIZABLE) instead of counting
-- from stale snapshots.
-- ---------------------------------------------------------------------------

DROP TRIGGER tokens_cap_insert ON iapi_tokens.tokens;
DROP TRIGGER tokens_cap_update ON iapi_tokens.tokens;
DROP FUNCTION iapi_tokens.enforce_token_cap();

CREATE FUNCTION iapi_tokens.enforce_token_cap()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	source_cap CONSTANT integer := 2;
	owner_cap integer;
	now_ts timestamptz := pg_catalog.clock_timestamp();
	source_deleted_at timestamptz;
	active_count bigint;
BEGIN
	IF NEW.revoked_at IS NOT NULL THEN
		RETURN NEW;				-- a revoked row never counts
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
		INSERT INTO iapi_tokens.token_owners AS o (owner_role, token_changes)
		VALUES (NEW.owner_role, 1)
		ON CONFLICT (owner_role)
		DO UPDATE SET token_changes = o.token_changes + 1;

		IF NEW.expires_at <= now_ts THEN
			RETURN NEW;
		END IF;
		-- NULL when the library is not loaded, which the entry points do.
		owner_cap := coalesce(nullif(current_setting('iapi_tokens.max_tokens_per_owner', true),
									 '')::integer, 0);
		IF owner_cap > 0 THEN
			SELECT pg_catalog.count(*) INTO active_count
			  FROM iapi_tokens.tokens t
			 WHERE t.owner_role = NEW.owner_role
			   AND t.revoked_at IS NULL
			   AND (t.expires_at IS NULL OR t.expires_at > now_ts)
			   AND t.id <> NEW.id;
			IF active_count >= owner_cap THEN
				RAISE EXCEPTION 'role % already has % active personal tokens, the maximum',
					NEW.owner_role, owner_cap
					USING ERRCODE = 'check_violation',
						  HINT = 'Delete a token with iapi_tokens.delete_access_token() first; iapi_tokens.max_tokens_per_owner sets the maximum.';
			END IF;
		END IF;
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

COMMENT ON FUNCTION iapi_tokens.enforce_token_cap() IS
	'Trigger: at most two active tokens per source and iapi_tokens.max_tokens_per_owner per role, race-free at every isolation level';

CREATE TRIGGER tokens_cap_insert
	BEFORE INSERT ON iapi_tokens.tokens
	FOR EACH ROW
	WHEN (NEW.revoked_at IS NULL)
	EXECUTE FUNCTION iapi_tokens.enforce_token_cap();

CREATE TRIGGER tokens_cap_update
	BEFORE UPDATE OF source_id, owner_role, revoked_at, expires_at
	ON iapi_tokens.tokens
	FOR EACH ROW
	WHEN (NEW.revoked_at IS NULL)
	EXECUTE FUNCTION iapi_tokens.enforce_token_cap();

-- ---------------------------------------------------------------------------
-- Audit trail, written by triggers so that every path is recorded: the
-- functions, and the owner's direct UPDATE and DELETE.
-- ---------------------------------------------------------------------------

CREATE FUNCTION iapi_tokens.minting()
RETURNS boolean
AS 'MODULE_PATHNAME', 'iapi_tokens_minting'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;

COMMENT ON FUNCTION iapi_tokens.minting() IS
	'Internal: true while iapi_tokens stores a token it has just generated';

CREATE FUNCTION iapi_tokens.acting_role()
RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN CASE pg_catalog.current_setting('role')
	   WHEN 'none' THEN SESSION_USER::text
	   ELSE pg_catalog.current_setting('role') END;

COMMENT ON FUNCTION iapi_tokens.acting_role() IS
	'The role the session acts as: the role set with SET ROLE, else the login role; SECURITY DEFINER functions do not change it';

CREATE FUNCTION iapi_tokens.record_token_event()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	t iapi_tokens.tokens;
	event text;
	event_details jsonb := '{}';
BEGIN
	IF TG_OP = 'INSERT' THEN
		-- A restore re-inserts existing tokens; only a minted one is new.
		IF NOT iapi_tokens.minting() THEN
			RETURN NULL;
		END IF;
		t := NEW;
		event := 'create';
		event_details := jsonb_build_object('expires_at', NEW.expires_at);
	ELSIF TG_OP = 'DELETE' THEN
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
			event := CASE WHEN NEW.owner_role IS NULL THEN 'revoke' ELSE 'delete' END;
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
			iapi_tokens.acting_role(), SESSION_USER, event_details);
	RETURN NULL;
END
$$;

COMMENT ON FUNCTION iapi_tokens.record_token_event() IS
	'Trigger: appends token creations, rotations, revocations, deletions, purges and other changes to iapi_tokens.audit';

CREATE TRIGGER tokens_audit_insert
	AFTER INSERT ON iapi_tokens.tokens
	FOR EACH ROW
	EXECUTE FUNCTION iapi_tokens.record_token_event();

-- last_used_at is left out: recording use is not an event.
CREATE TRIGGER tokens_audit_update
	AFTER UPDATE OF source_id, owner_role, revoked_at, expires_at, replaced_by
	ON iapi_tokens.tokens
	FOR EACH ROW
	WHEN (OLD.source_id IS DISTINCT FROM NEW.source_id
		  OR OLD.owner_role IS DISTINCT FROM NEW.owner_role
		  OR OLD.revoked_at IS DISTINCT FROM NEW.revoked_at
		  OR OLD.expires_at IS DISTINCT FROM NEW.expires_at
		  OR OLD.replaced_by IS DISTINCT FROM NEW.replaced_by)
	EXECUTE FUNCTION iapi_tokens.record_token_event();

CREATE TRIGGER tokens_audit_delete
	AFTER DELETE ON iapi_tokens.tokens
	FOR EACH ROW
	EXECUTE FUNCTION iapi_tokens.record_token_event();

CREATE FUNCTION iapi_tokens.forbid_token_truncate()
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

COMMENT ON FUNCTION iapi_tokens.forbid_token_truncate() IS
	'Trigger: refuses TRUNCATE on iapi_tokens.tokens, which row triggers, and so the audit trail, would not see';

CREATE TRIGGER tokens_no_truncate
	BEFORE TRUNCATE ON iapi_tokens.tokens
	FOR EACH STATEMENT
	EXECUTE FUNCTION iapi_tokens.forbid_token_truncate();

CREATE FUNCTION iapi_tokens.forbid_audit_change()
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

COMMENT ON FUNCTION iapi_tokens.forbid_audit_change() IS
	'Trigger: refuses UPDATE, DELETE and TRUNCATE on iapi_tokens.audit, even from its owner';

CREATE TRIGGER audit_append_only
	BEFORE UPDATE OR DELETE ON iapi_tokens.audit
	FOR EACH ROW
	EXECUTE FUNCTION iapi_tokens.forbid_audit_change();

CREATE TRIGGER audit_append_only_truncate
	BEFORE TRUNCATE ON iapi_tokens.audit
	FOR EACH STATEMENT
	EXECUTE FUNCTION iapi_tokens.forbid_audit_change();

-- ---------------------------------------------------------------------------
-- Personal access tokens.  The public functions are SECURITY INVOKER C: they
-- take the owner from the calling role and run the owner-only functions
-- below as the tables' owner (src/run_as_owner.c).
-- ---------------------------------------------------------------------------

CREATE FUNCTION iapi_tokens.access_tokens_of(owner regrole)
RETURNS TABLE (
	token_id uuid,
	description text,
	expired_at timestamptz,
	last_used timestamptz,
	created_at timestamptz)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	SELECT t.token_uuid, t.description, t.expires_at, t.last_used_at, t.created_at
	  FROM iapi_tokens.tokens t
	 WHERE t.owner_role = $1 AND t.revoked_at IS NULL
	 ORDER BY t.id DESC;
END;

COMMENT ON FUNCTION iapi_tokens.access_tokens_of(regrole) IS
	'Internal: a role''s personal tokens that are not deleted, newest first';

CREATE FUNCTION iapi_tokens.access_token_of(owner regrole, access_token_id uuid)
RETURNS TABLE (
	token_id uuid,
	description text,
	expired_at timestamptz,
	last_used timestamptz,
	created_at timestamptz)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF access_token_of.access_token_id IS NULL THEN
		RAISE EXCEPTION 'token_id must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	RETURN QUERY
		SELECT t.token_uuid, t.description, t.expires_at, t.last_used_at, t.created_at
		  FROM iapi_tokens.tokens t
		 WHERE t.token_uuid = access_token_of.access_token_id
		   AND t.owner_role = access_token_of.owner
		   AND t.revoked_at IS NULL;
	IF NOT FOUND THEN
		-- The same error for another role's token, so existence does not leak.
		RAISE EXCEPTION 'access token % does not exist', access_token_of.access_token_id
			USING ERRCODE = 'undefined_object';
	END IF;
END
$$;

COMMENT ON FUNCTION iapi_tokens.access_token_of(regrole, uuid) IS
	'Internal: one of a role''s personal tokens, or the "does not exist" error';

CREATE FUNCTION iapi_tokens.store_access_token(
	owner regrole,
	token_hash bytea,
	display_prefix text,
	description text,
	lifetime_seconds integer,
	created_at timestamptz)
RETURNS TABLE (
	token_id uuid,
	description text,
	expired_at timestamptz,
	last_used timestamptz,
	created_at timestamptz)
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	INSERT INTO iapi_tokens.tokens
		(owner_role, token_uuid, token_hash, display_prefix, description,
		 created_at, expires_at)
	VALUES ($1, pg_catalog.gen_random_uuid(), $2, $3, $4, $6,
			CASE WHEN $5 = -1 THEN NULL
				 ELSE $6 + pg_catalog.make_interval(secs => $5) END)
	RETURNING token_uuid, description, expires_at, last_used_at, created_at;
END;

COMMENT ON FUNCTION iapi_tokens.store_access_token(regrole, bytea, text, text, integer, timestamptz) IS
	'Internal: stores a personal token minted by create_access_token (its hash, never the token)';

CREATE FUNCTION iapi_tokens.delete_access_token_of(owner regrole, token_id uuid)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF delete_access_token_of.token_id IS NULL THEN
		RAISE EXCEPTION 'token_id must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	UPDATE iapi_tokens.tokens t
	   SET revoked_at = clock_timestamp()
	 WHERE t.token_uuid = delete_access_token_of.token_id
	   AND t.owner_role = delete_access_token_of.owner
	   AND t.revoked_at IS NULL;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'access token % does not exist', delete_access_token_of.token_id
			USING ERRCODE = 'undefined_object';
	END IF;
END
$$;

COMMENT ON FUNCTION iapi_tokens.delete_access_token_of(regrole, uuid) IS
	'Internal: revokes one of a role''s personal tokens, or raises the "does not exist" error';

-- Checks shared by both rotations; returns the replacement's expiry.
CREATE FUNCTION iapi_tokens.check_rotation(
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

COMMENT ON FUNCTION iapi_tokens.check_rotation(iapi_tokens.tokens, interval, timestamptz, integer) IS
	'Internal: the errors of a rotation, and the expiry of the replacement token';

-- The old token is updated before the new one is inserted: with no grace it
-- is revoked first, so a full source never goes over its cap.
CREATE FUNCTION iapi_tokens.replace_token(
	t iapi_tokens.tokens,
	grace interval,
	token_hash bytea,
	display_prefix text,
	now_ts timestamptz,
	new_expires_at timestamptz)
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

	INSERT INTO iapi_tokens.tokens
		(id, source_id, owner_role, token_uuid, token_hash, display_prefix,
		 description, created_at, expires_at)
	VALUES (new_id, t.source_id, t.owner_role,
			CASE WHEN t.owner_role IS NOT NULL THEN gen_random_uuid() END,
			token_hash, display_prefix, t.description, now_ts, new_expires_at)
	RETURNING * INTO replacement;
	RETURN replacement;
END
$$;

COMMENT ON FUNCTION iapi_tokens.replace_token(iapi_tokens.tokens, interval, bytea, text, timestamptz, timestamptz) IS
	'Internal: ends a token (at once, or after its grace period) and stores its replacement';

CREATE FUNCTION iapi_tokens.rotate_access_token_of(
	owner regrole,
	access_token_id uuid,
	grace interval,
	token_hash bytea,
	display_prefix text,
	now_ts timestamptz,
	max_lifetime integer)
RETURNS TABLE (
	token_id uuid,
	description text,
	expired_at timestamptz,
	last_used timestamptz,
	created_at timestamptz)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	old iapi_tokens.tokens;
	replacement iapi_tokens.tokens;
BEGIN
	IF rotate_access_token_of.access_token_id IS NULL THEN
		RAISE EXCEPTION 'token_id must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	-- The owner's row first, the token's second: the order in which
	-- create_access_token takes them, so the two cannot deadlock.
	INSERT INTO iapi_tokens.token_owners AS o (owner_role, token_changes)
	VALUES (rotate_access_token_of.owner, 0)
	ON CONFLICT (owner_role)
	DO UPDATE SET token_changes = o.token_changes + 1;
	SELECT * INTO old
	  FROM iapi_tokens.tokens t
	 WHERE t.token_uuid = rotate_access_token_of.access_token_id
	   AND t.owner_role = rotate_access_token_of.owner
	 FOR NO KEY UPDATE;
	IF NOT FOUND OR old.revoked_at IS NOT NULL THEN
		-- Revoked tokens are gone, as for get_access_token.
		RAISE EXCEPTION 'access token % does not exist', rotate_access_token_of.access_token_id
			USING ERRCODE = 'undefined_object';
	END IF;
	replacement := iapi_tokens.replace_token(
		old, grace, token_hash, display_prefix, now_ts,
		iapi_tokens.check_rotation(old, grace, now_ts, max_lifetime));
	RETURN QUERY SELECT replacement.token_uuid, replacement.description,
						replacement.expires_at, replacement.last_used_at,
						replacement.created_at;
END
$$;

COMMENT ON FUNCTION iapi_tokens.rotate_access_token_of(regrole, uuid, interval, bytea, text, timestamptz, integer) IS
	'Internal: rotates one of a role''s personal tokens';

CREATE FUNCTION iapi_tokens.create_access_token(
	lifetime_seconds integer,
	description text DEFAULT NULL)
RETURNS TABLE (
	token_value text,
	token_id uuid,
	description text,
	expired_at timestamptz,
	last_used timestamptz,
	created_at timestamptz)
AS 'MODULE_PATHNAME', 'iapi_tokens_create_access_token'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION iapi_tokens.create_access_token(integer, text) IS
	'Creates a personal token owned by the calling role, as POST /v4/apiAccessTokens; lifetime_seconds -1 never expires; token_value is shown only here';

CREATE FUNCTION iapi_tokens.list_access_tokens()
RETURNS TABLE (
	token_id uuid,
	description text,
	expired_at timestamptz,
	last_used timestamptz,
	created_at timestamptz)
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
	created_at timestamptz)
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
	created_at timestamptz)
LANGUAGE sql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	SELECT t.token_uuid, t.owner_role, t.description, t.expires_at,
		   t.last_used_at, t.created_at
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
	PERFORM iapi_tokens.delete_access_token_of(
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

CREATE FUNCTION iapi_tokens.rotate_source_token(
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
		PERFORM iapi_tokens.require_source(rotate_source_token.source_id);
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
	RETURN (iapi_tokens.replace_token(
		old, grace, token_hash, display_prefix, now_ts,
		iapi_tokens.check_rotation(old, grace, now_ts, 0))).id;
END
$$;

COMMENT ON FUNCTION iapi_tokens.rotate_source_token(bigint, bigint, interval, bytea, text, timestamptz) IS
	'Internal: rotates a source token minted by rotate_token';

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
-- Privileges
-- ---------------------------------------------------------------------------

-- As in 1.0, the objects made here start with no grant but their owner's:
-- none for PUBLIC, and none that ALTER DEFAULT PRIVILEGES added.  Only the
-- functions made here: users' grants on 1.0's stay.
DO $$
DECLARE
	stmt text;
BEGIN
	FOR stmt IN
		SELECT DISTINCT pg_catalog.format('REVOKE ALL ON %s %s FROM %I',
					CASE c.relkind WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END,
					c.oid::pg_catalog.regclass, r.rolname)
		  FROM pg_catalog.pg_class c,
			   pg_catalog.aclexplode(c.relacl) a
		  JOIN pg_catalog.pg_roles r ON r.oid = a.grantee
		 WHERE c.relnamespace = 'iapi_tokens'::pg_catalog.regnamespace
		   AND c.relname IN ('token_owners', 'audit', 'audit_id_seq')
		   AND a.grantee <> c.relowner
		UNION
		SELECT pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM %s',
					p.oid::pg_catalog.regprocedure, g.grantee)
		  FROM pg_catalog.pg_proc p,
			   LATERAL (SELECT 'PUBLIC'
						UNION
						SELECT pg_catalog.quote_ident(r.rolname)
						  FROM pg_catalog.aclexplode(p.proacl) a
						  JOIN pg_catalog.pg_roles r ON r.oid = a.grantee
						 WHERE a.grantee <> p.proowner) g(grantee)
		 WHERE p.pronamespace = 'iapi_tokens'::pg_catalog.regnamespace
		   AND p.proname IN ('verify_token', 'enforce_token_cap', 'minting',
				'acting_role', 'record_token_event', 'forbid_audit_change',
				'forbid_token_truncate',
				'access_tokens_of', 'access_token_of', 'store_access_token',
				'delete_access_token_of', 'check_rotation', 'replace_token',
				'rotate_access_token_of', 'create_access_token',
				'list_access_tokens', 'get_access_token', 'delete_access_token',
				'rotate_access_token', 'list_all_access_tokens',
				'revoke_access_token', 'rotate_source_token', 'rotate_token',
				'purge_tokens')
	LOOP
		EXECUTE stmt;
	END LOOP;
END
$$;

REVOKE ALL ON TABLE iapi_tokens.token_owners FROM PUBLIC;
REVOKE ALL ON TABLE iapi_tokens.audit FROM PUBLIC;
REVOKE ALL ON SEQUENCE iapi_tokens.audit_id_seq FROM PUBLIC;

-- verify_token: PUBLIC, as installed, unless 1.0's grants said otherwise.
DO $$
DECLARE
	saved text := pg_catalog.current_setting('iapi_tokens_update.verify_token_acl', true);
	grantee record;
BEGIN
	IF coalesce(saved, '') = '' OR EXISTS (
		SELECT FROM pg_catalog.aclexplode(saved::pg_catalog.aclitem[]) a
		 WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE') THEN
		GRANT EXECUTE ON FUNCTION iapi_tokens.verify_token(text) TO PUBLIC;
	END IF;
	IF coalesce(saved, '') = '' THEN
		RETURN;
	END IF;
	FOR grantee IN
		SELECT r.rolname, a.is_grantable
		  FROM pg_catalog.aclexplode(saved::pg_catalog.aclitem[]) a
		  JOIN pg_catalog.pg_roles r ON r.oid = a.grantee
		 WHERE a.privilege_type = 'EXECUTE'
		   AND a.grantee <> (SELECT p.proowner FROM pg_catalog.pg_proc p
							  WHERE p.oid = 'iapi_tokens.verify_token(text)'::pg_catalog.regprocedure)
	LOOP
		EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION iapi_tokens.verify_token(text) TO %I%s',
								  grantee.rolname,
								  CASE WHEN grantee.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
	END LOOP;
	IF NOT EXISTS (SELECT FROM pg_catalog.aclexplode(saved::pg_catalog.aclitem[]) a
					WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE') THEN
		RAISE WARNING 'iapi_tokens.verify_token(text) was re-created with the grants it had, without PUBLIC: %',
			(SELECT pg_catalog.string_agg(r.rolname, ', ' ORDER BY r.rolname)
			   FROM pg_catalog.aclexplode(saved::pg_catalog.aclitem[]) a
			   JOIN pg_catalog.pg_roles r ON r.oid = a.grantee
			  WHERE a.privilege_type = 'EXECUTE'
				AND a.grantee <> (SELECT p.proowner FROM pg_catalog.pg_proc p
								   WHERE p.oid = 'iapi_tokens.verify_token(text)'::pg_catalog.regprocedure))
			USING DETAIL = 'pg_dump now counts them as the extension''s own, so a dump restored into a fresh installation gives EXECUTE back to PUBLIC.',
				  HINT = 'After such a restore, run your REVOKE and GRANT on iapi_tokens.verify_token(text) again.';
	END IF;
END
$$;
