-- iapi_tokens 1.0: Import API source tokens.
--
-- Tokens are stored only as SHA-256 hashes.  Generation, hashing and
-- verification are C (src/); the management functions below are SQL and
-- PL/pgSQL running as the extension owner with a pinned search_path.

\echo Use "CREATE EXTENSION iapi_tokens" to load this file. \quit

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
	source_id bigint NOT NULL,
	token_hash bytea NOT NULL,
	display_prefix text NOT NULL,
	description text,
	created_at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
	expires_at timestamptz,
	last_used_at timestamptz,
	revoked_at timestamptz,
	CONSTRAINT tokens_pkey PRIMARY KEY (id),
	CONSTRAINT tokens_token_hash_key UNIQUE (token_hash),
	CONSTRAINT tokens_source_id_fkey FOREIGN KEY (source_id)
		REFERENCES iapi_tokens.sources (id),
	CONSTRAINT tokens_token_hash_check
		CHECK (pg_catalog.octet_length(token_hash) = 32),
	CONSTRAINT tokens_expires_at_check CHECK (expires_at > created_at),
	CONSTRAINT tokens_description_check
		CHECK (pg_catalog.char_length(description) <= 255)
) WITH (fillfactor = 90);	-- room for HOT updates of last_used_at
ALTER SEQUENCE iapi_tokens.token_id_seq OWNED BY iapi_tokens.tokens.id;

CREATE INDEX tokens_active_source_idx
	ON iapi_tokens.tokens (source_id, id DESC)
	WHERE revoked_at IS NULL;

COMMENT ON TABLE iapi_tokens.sources IS
	'Import API sources (Stitch Connect Source objects); soft-deleted through deleted_at';
COMMENT ON TABLE iapi_tokens.tokens IS
	'Access tokens, stored only as SHA-256 hashes; revoked rows are kept for audit';
COMMENT ON COLUMN iapi_tokens.tokens.token_hash IS
	'SHA-256 of the whole token string; the token itself is never stored';
COMMENT ON COLUMN iapi_tokens.tokens.display_prefix IS
	'The token prefix and the first 4 random characters: enough to tell tokens apart, not enough to guess one';
COMMENT ON COLUMN iapi_tokens.tokens.last_used_at IS
	'Last successful verification, recorded at most once per iapi_tokens.last_used_interval';
COMMENT ON COLUMN iapi_tokens.sources.token_changes IS
	'Count of token inserts and reactivations; its update serializes the two-token cap';

SELECT pg_catalog.pg_extension_config_dump('iapi_tokens.sources', '');
SELECT pg_catalog.pg_extension_config_dump('iapi_tokens.tokens', '');
SELECT pg_catalog.pg_extension_config_dump('iapi_tokens.source_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('iapi_tokens.token_id_seq', '');

-- ---------------------------------------------------------------------------
-- C functions: hashing, generation, verification
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
	lifetime interval DEFAULT NULL)
RETURNS TABLE (id bigint, access_token text)
AS 'MODULE_PATHNAME', 'iapi_tokens_generate_token'
LANGUAGE C VOLATILE PARALLEL UNSAFE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION iapi_tokens.generate_token(bigint, text, interval) IS
	'Generates a token for a source and returns its id and plaintext; the plaintext is never shown again';

CREATE FUNCTION iapi_tokens.verify_token(token text)
RETURNS TABLE (
	token_id bigint,
	source_id bigint,
	created_at timestamptz,
	expires_at timestamptz,
	last_used_at timestamptz)
AS 'MODULE_PATHNAME', 'iapi_tokens_verify_token'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE ROWS 1;

COMMENT ON FUNCTION iapi_tokens.verify_token(text) IS
	'Returns one row for a valid token and no row otherwise; never raises an error for any input';

-- ---------------------------------------------------------------------------
-- The two-token cap
-- ---------------------------------------------------------------------------

CREATE FUNCTION iapi_tokens.enforce_token_cap()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	cap CONSTANT integer := 2;
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
		IF OLD.source_id = NEW.source_id AND OLD.revoked_at IS NULL
			AND (OLD.expires_at IS NULL OR OLD.expires_at > now_ts) THEN
			RETURN NEW;			-- already counted
		END IF;
	END IF;

	-- A real update of the source row, not a lock: under REPEATABLE READ and
	-- SERIALIZABLE a concurrent insert for the same source then fails with a
	-- serialization error instead of counting from a stale snapshot.
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

	IF active_count >= cap THEN
		RAISE EXCEPTION 'source % already has % active tokens, the maximum',
			NEW.source_id, cap
			USING ERRCODE = 'check_violation',
				  HINT = 'Revoke a token with iapi_tokens.revoke_token() before generating a new one.';
	END IF;
	RETURN NEW;
END
$$;

COMMENT ON FUNCTION iapi_tokens.enforce_token_cap() IS
	'Trigger: at most two active tokens per source, race-free at every isolation level';

CREATE TRIGGER tokens_cap_insert
	BEFORE INSERT ON iapi_tokens.tokens
	FOR EACH ROW
	WHEN (NEW.revoked_at IS NULL)
	EXECUTE FUNCTION iapi_tokens.enforce_token_cap();

CREATE TRIGGER tokens_cap_update
	BEFORE UPDATE OF source_id, revoked_at, expires_at ON iapi_tokens.tokens
	FOR EACH ROW
	WHEN (NEW.revoked_at IS NULL)
	EXECUTE FUNCTION iapi_tokens.enforce_token_cap();

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

CREATE FUNCTION iapi_tokens.require_source(source_id bigint)
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

COMMENT ON FUNCTION iapi_tokens.require_source(bigint) IS
	'Internal: the source row, or the documented error for a NULL or unknown id';

CREATE FUNCTION iapi_tokens.source_json(source_id bigint)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	s iapi_tokens.sources;
	configured boolean;
BEGIN
	s := iapi_tokens.require_source(source_json.source_id);

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
		PERFORM iapi_tokens.require_source(delete_source.source_id);
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
-- Token management
-- ---------------------------------------------------------------------------

CREATE FUNCTION iapi_tokens.list_tokens(source_id bigint)
RETURNS TABLE (token_id bigint, created_at timestamptz)
LANGUAGE plpgsql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM iapi_tokens.require_source(list_tokens.source_id);
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
	status text)
LANGUAGE plpgsql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM iapi_tokens.require_source(list_token_details.source_id);
	RETURN QUERY
		SELECT t.id, t.display_prefix, t.description, t.created_at,
			   t.expires_at, t.last_used_at, t.revoked_at, v.status
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
	'A source''s tokens with prefix, description, expiry, last use and status, newest first';

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
		PERFORM iapi_tokens.require_source(revoke_token.source_id);
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
-- Privileges: PUBLIC may verify and hash, nothing else.
-- ---------------------------------------------------------------------------

-- ALTER DEFAULT PRIVILEGES may have granted the new objects to other roles;
-- a token store starts with no grant but its own.
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
		   AND a.grantee <> c.relowner
		UNION
		SELECT pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM %I',
					p.oid::pg_catalog.regprocedure, r.rolname)
		  FROM pg_catalog.pg_proc p,
			   pg_catalog.aclexplode(p.proacl) a
		  JOIN pg_catalog.pg_roles r ON r.oid = a.grantee
		 WHERE p.pronamespace = 'iapi_tokens'::pg_catalog.regnamespace
		   AND a.grantee <> p.proowner
		UNION
		SELECT pg_catalog.format('REVOKE ALL ON SCHEMA iapi_tokens FROM %I', r.rolname)
		  FROM pg_catalog.pg_namespace n,
			   pg_catalog.aclexplode(n.nspacl) a
		  JOIN pg_catalog.pg_roles r ON r.oid = a.grantee
		 WHERE n.nspname = 'iapi_tokens' AND a.grantee <> n.nspowner
	LOOP
		EXECUTE stmt;
	END LOOP;
END
$$;

REVOKE ALL ON ALL TABLES IN SCHEMA iapi_tokens FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA iapi_tokens FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA iapi_tokens FROM PUBLIC;
GRANT USAGE ON SCHEMA iapi_tokens TO PUBLIC;
GRANT EXECUTE ON FUNCTION iapi_tokens.verify_token(text) TO PUBLIC;
GRANT EXECUTE ON FUNCTION iapi_tokens.hash_token(text) TO PUBLIC;
