-- Purge and the audit trail: purge deletes only tokens inactive for longer
-- than its argument; every create, rotate, revoke, delete and purge leaves
-- one audit row, which names the acting role and never holds a token.
\set SHOW_CONTEXT never
CREATE EXTENSION iapi_tokens;
CREATE ROLE regress_iapi_owner NOLOGIN;
CREATE ROLE regress_iapi_operator NOLOGIN;
GRANT EXECUTE ON FUNCTION
	iapi_tokens.create_access_token(integer, text, text[], jsonb, integer, interval),
	iapi_tokens.delete_access_token(uuid)
TO regress_iapi_owner;
GRANT EXECUTE ON FUNCTION
	iapi_tokens.generate_token(bigint, text, interval, text[], jsonb, integer, interval),
	iapi_tokens.rotate_token(bigint, bigint, interval),
	iapi_tokens.revoke_token(bigint, bigint),
	iapi_tokens.purge_tokens(interval)
TO regress_iapi_operator;

-- Events, each by a known role.
SELECT iapi_tokens.create_source('audited') AS sid \gset
SET ROLE regress_iapi_operator;
SELECT id AS t1, access_token AS tok1 FROM iapi_tokens.generate_token(:sid, 'one') \gset
SELECT id AS t2, access_token AS tok2 FROM iapi_tokens.rotate_token(:sid, :t1, '1 hour') \gset
SELECT iapi_tokens.revoke_token(:sid, :t2) IS NOT NULL AS revoked;
RESET ROLE;
SET ROLE regress_iapi_owner;
SELECT token_id AS p1, token_value AS ptok1 FROM iapi_tokens.create_access_token(60) \gset
SELECT iapi_tokens.delete_access_token(:'p1');
RESET ROLE;

-- Purge: nothing is old enough yet; then backdate the revocations a day.
SELECT iapi_tokens.purge_tokens('1 hour') AS purged_now;
UPDATE iapi_tokens.tokens SET revoked_at = revoked_at - interval '1 day'
 WHERE revoked_at IS NOT NULL;
-- An active token, an expired-but-recent one, and one expired long ago.
SELECT id AS active_id FROM iapi_tokens.generate_token(:sid, 'active') \gset
SELECT id AS recent_id FROM iapi_tokens.generate_token(iapi_tokens.create_source('recent'), 'recent', '1 second') \gset
SELECT pg_sleep(1.1);
SELECT id AS old_id FROM iapi_tokens.generate_token(iapi_tokens.create_source('old'), 'old', '1 second') \gset
UPDATE iapi_tokens.tokens SET created_at = created_at - interval '2 days',
	   expires_at = expires_at - interval '2 days'
 WHERE id = :old_id;
-- t1 is still in its grace period: expired? no; revoked? no.  It stays.
SET ROLE regress_iapi_operator;
SELECT iapi_tokens.purge_tokens('12 hours') AS purged;
RESET ROLE;
SELECT id = :t1 AS in_grace, id = :active_id AS active, id = :recent_id AS recently_expired
  FROM iapi_tokens.tokens ORDER BY id;
SELECT iapi_tokens.purge_tokens('0') AS purged_expired;
SELECT count(*) AS left_active, bool_and(revoked_at IS NULL) AS none_revoked
  FROM iapi_tokens.tokens;
SELECT count(*) AS t1_still_verifies FROM iapi_tokens.verify_token(:'tok1');

-- Errors, and the privilege.
SELECT iapi_tokens.purge_tokens(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT iapi_tokens.purge_tokens('-1 day');
\echo :LAST_ERROR_SQLSTATE
SET ROLE regress_iapi_owner;
SELECT iapi_tokens.purge_tokens('0');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

-- The trail, in order.  Each row names the token, its source or owner, and
-- the acting role (the role set with SET ROLE, not a definer).
SELECT a.action,
	   CASE a.token_id WHEN :t1 THEN 't1' WHEN :t2 THEN 't2'
			WHEN :active_id THEN 'active' WHEN :recent_id THEN 'recent'
			WHEN :old_id THEN 'old' ELSE 'p1' END AS token,
	   a.access_token_id = :'p1' AS is_p1, a.source_id IS NOT NULL AS has_source,
	   a.owner_role,
	   CASE a.acting_role WHEN session_user THEN '(session user)' ELSE a.acting_role END AS acting_role,
	   a.session_role = session_user AS session_role_ok,
	   CASE WHEN a.action = 'rotate' THEN a.details->>'replaced_by' = :'t2' END AS rotate_names_replacement
  FROM iapi_tokens.audit a ORDER BY a.id;
-- Direct DML by the owner is recorded too ("modify"), with before and after.
SELECT iapi_tokens.revoke_token(:sid, :active_id) IS NOT NULL AS revoked;
UPDATE iapi_tokens.tokens SET revoked_at = NULL WHERE id = :active_id;
SELECT action, details->'old'->>'revoked_at' IS NOT NULL AS was_revoked,
	   details->'new'->>'revoked_at' IS NULL AS now_active
  FROM iapi_tokens.audit ORDER BY id DESC LIMIT 1;
-- Recording last use is not an event.
SELECT count(*) AS before FROM iapi_tokens.audit \gset
SET iapi_tokens.last_used_interval = 0;
SELECT count(*) AS verified FROM iapi_tokens.verify_token(:'tok1');
RESET iapi_tokens.last_used_interval;
SELECT count(*) - :before AS new_audit_rows FROM iapi_tokens.audit;

-- It holds neither tokens nor hashes: no such column, no such value.
SELECT attname FROM pg_attribute
 WHERE attrelid = 'iapi_tokens.audit'::regclass AND attnum > 0 AND NOT attisdropped
 ORDER BY attnum;
SELECT count(*) AS rows_with_secrets FROM iapi_tokens.audit a
 WHERE strpos(a::text, substr(:'tok1', 10)) > 0
	OR strpos(a::text, substr(:'ptok1', 10)) > 0
	OR strpos(a::text, encode(iapi_tokens.hash_token(:'tok1'), 'hex')) > 0;

-- Append-only: not even the owner may change or remove rows.
UPDATE iapi_tokens.audit SET action = 'create';
\echo :LAST_ERROR_SQLSTATE
DELETE FROM iapi_tokens.audit;
\echo :LAST_ERROR_SQLSTATE
TRUNCATE iapi_tokens.audit;
\echo :LAST_ERROR_SQLSTATE
-- TRUNCATE of the tokens would bypass the row triggers, so it is refused.
TRUNCATE iapi_tokens.tokens;
\echo :LAST_ERROR_SQLSTATE
-- Ordinary roles cannot read, write or delete it at all.
SET ROLE regress_iapi_operator;
SELECT count(*) FROM iapi_tokens.audit;
\echo :LAST_ERROR_SQLSTATE
INSERT INTO iapi_tokens.audit (action, token_id, acting_role, session_role)
VALUES ('create', 1, 'x', 'x');
\echo :LAST_ERROR_SQLSTATE
DELETE FROM iapi_tokens.audit;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
-- A restore re-inserts tokens without recording creations (see TAP 002);
-- so does any insert that is not a minted token.
SELECT count(*) AS before FROM iapi_tokens.audit \gset
INSERT INTO iapi_tokens.tokens (source_id, token_hash, display_prefix, revoked_at)
VALUES (:sid, iapi_tokens.hash_token('restored'), 'iapi_rest', now());
SELECT count(*) - :before AS new_audit_rows FROM iapi_tokens.audit;

DROP EXTENSION iapi_tokens;
DROP ROLE regress_iapi_owner;
DROP ROLE regress_iapi_operator;
