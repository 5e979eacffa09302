-- iapi_tokens 1.3 to 1.4: token use recorded off the caller's transaction.
--
-- With shared_preload_libraries = 'iapi_tokens', verification records use
-- in shared memory and a background worker applies it through
-- apply_usage(); tokens gain use_count, which the listing functions show.
-- The functions whose result gains a column take DROP and CREATE; their
-- grants are carried over.  A view of yours that selects from one of them
-- makes this update fail: drop it first and create it again after.

\echo Use "ALTER EXTENSION iapi_tokens UPDATE TO '1.4'" to load this file. \quit

SELECT pg_catalog.set_config('iapi_tokens_update.acls',
	(SELECT pg_catalog.jsonb_object_agg(p.oid::pg_catalog.regprocedure::text,
										coalesce(p.proacl::text, ''))
	   FROM pg_catalog.pg_proc p
	  WHERE p.oid IN ('iapi_tokens.list_token_details(bigint, boolean)'::pg_catalog.regprocedure,
					'iapi_tokens.list_access_tokens()'::pg_catalog.regprocedure,
					'iapi_tokens.get_access_token(uuid)'::pg_catalog.regprocedure,
					'iapi_tokens.list_all_access_tokens()'::pg_catalog.regprocedure))::text,
	true);

DROP FUNCTION iapi_tokens_internal.personal_tokens_of(regrole);
DROP FUNCTION iapi_tokens_internal.personal_token_of(regrole, uuid);
DROP FUNCTION iapi_tokens.list_token_details(bigint, boolean);
DROP FUNCTION iapi_tokens.list_access_tokens();
DROP FUNCTION iapi_tokens.get_access_token(uuid);
DROP FUNCTION iapi_tokens.list_all_access_tokens();

-- Functions with a SQL-standard body that take the row type forbid a new
-- column; they go and come back unchanged.
DROP FUNCTION iapi_tokens_internal.record_creation(iapi_tokens.tokens);
DROP FUNCTION iapi_tokens_internal.as_personal_token(iapi_tokens.tokens);

ALTER TABLE iapi_tokens.tokens ADD COLUMN use_count bigint NOT NULL DEFAULT 0;

COMMENT ON COLUMN iapi_tokens.tokens.last_used_at IS
	'Last successful verification, as of the last usage flush (iapi_tokens.usage_flush_interval); without shared_preload_libraries, written at most once per iapi_tokens.last_used_interval';
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

CREATE FUNCTION iapi_tokens_internal.personal_tokens_of(owner regrole)
RETURNS TABLE (
	token_id uuid,
	description text,
	expired_at timestamptz,
	last_used timestamptz,
	created_at timestamptz,
	use_count bigint)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	SELECT (iapi_tokens_internal.as_personal_token(t)).*, t.use_count
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
	use_count bigint)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF personal_token_of.access_token_id IS NULL THEN
		RAISE EXCEPTION 'token_id must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	RETURN QUERY
		SELECT (iapi_tokens_internal.as_personal_token(t)).*, t.use_count
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
	use_count bigint)
LANGUAGE plpgsql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM iapi_tokens_internal.require_source(list_token_details.source_id);
	RETURN QUERY
		SELECT t.id, t.display_prefix, t.description, t.created_at,
			   t.expires_at, t.last_used_at, t.revoked_at, v.status, t.use_count
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
	'A source''s tokens with prefix, description, expiry, last use, status and use count, newest first';

CREATE FUNCTION iapi_tokens.list_access_tokens()
RETURNS TABLE (
	token_id uuid,
	description text,
	expired_at timestamptz,
	last_used timestamptz,
	created_at timestamptz,
	use_count bigint)
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
	use_count bigint)
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
	use_count bigint)
LANGUAGE sql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	SELECT t.token_uuid, t.owner_role, t.description, t.expires_at,
		   t.last_used_at, t.created_at, t.use_count
	  FROM iapi_tokens.tokens t
	 WHERE t.owner_role IS NOT NULL AND t.revoked_at IS NULL
	 ORDER BY t.id DESC;
END;

COMMENT ON FUNCTION iapi_tokens.list_all_access_tokens() IS
	'Admin: every role''s personal tokens that are not deleted, newest first';

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

	RETURN QUERY
	WITH batch AS (
		-- A time ahead of this server's clock (a standby's skew) is clamped.
		SELECT u.id, max(least(u.at, clock_timestamp())) AS at, sum(u.n)::bigint AS n
		  FROM unnest(apply_usage.token_ids, apply_usage.used_at,
					  apply_usage.use_counts) AS u(id, at, n)
		 GROUP BY u.id),
	locked AS (
		SELECT t.id
		  FROM iapi_tokens.tokens t
		 WHERE t.id IN (SELECT b.id FROM batch b)
		   FOR NO KEY UPDATE SKIP LOCKED),
	updated AS (
		UPDATE iapi_tokens.tokens t
		   SET last_used_at = greatest(t.last_used_at, b.at),
			   use_count = t.use_count + b.n
		  FROM batch b
		 WHERE t.id = b.id AND t.id IN (SELECT l.id FROM locked l)
		RETURNING t.id, b.n)
	SELECT (SELECT coalesce(sum(u.n), 0)::bigint FROM updated u),
		   ARRAY(SELECT b.id FROM batch b
				  WHERE EXISTS (SELECT FROM iapi_tokens.tokens t WHERE t.id = b.id)
					AND NOT EXISTS (SELECT FROM updated u WHERE u.id = b.id)
				  ORDER BY b.id);
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
	'{}',
	ARRAY['iapi_tokens_internal.personal_tokens_of(regrole)',
		'iapi_tokens_internal.personal_token_of(regrole, uuid)',
		'iapi_tokens.list_token_details(bigint, boolean)',
		'iapi_tokens.list_access_tokens()',
		'iapi_tokens.get_access_token(uuid)',
		'iapi_tokens.list_all_access_tokens()',
		'iapi_tokens_internal.record_creation(iapi_tokens.tokens)',
		'iapi_tokens_internal.as_personal_token(iapi_tokens.tokens)',
		'iapi_tokens.apply_usage(bigint[], timestamptz[], bigint[])',
		'iapi_tokens.usage_stats()']::regprocedure[],
	'{}');

GRANT EXECUTE ON FUNCTION iapi_tokens.usage_stats() TO pg_monitor;

-- The grants the re-created functions had in 1.3.
-- As 1.1 warned for verify_token: grants made by an update script count as
-- the extension's initial privileges, which pg_dump leaves out.
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
		RAISE WARNING 'iapi_tokens 1.4 re-created functions with the grants they had: %',
			pg_catalog.array_to_string(regranted, '; ')
			USING DETAIL = 'pg_dump now counts them as the extension''s own, so a dump restored into a fresh installation leaves them out.',
				  HINT = 'After such a restore, run rest/roles.sql and your own GRANTs on these functions again.';
	END IF;
END
$$;
