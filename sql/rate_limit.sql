-- Rate limits (1.5): N verifications per window, counted in shared memory;
-- check_token's statuses and counters; refusals are not uses; a new window
-- admits again; every bad limit; changing, clearing and auditing a limit;
-- revocation and rotation; personal tokens; rate_limit_stats().  Counters
-- that are server-wide are compared before and after, never as absolutes.
-- Waiting polls with a deadline, never a bare sleep.
\set SHOW_CONTEXT never
CREATE EXTENSION iapi_tokens;

-- Waits, at most 30 s, until the recorded uses are applied (as usage.sql).
CREATE FUNCTION pg_temp.flushed() RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
	FOR i IN 1..300 LOOP
		IF (SELECT uses_pending FROM iapi_tokens.usage_stats()) = 0 THEN
			RETURN true;
		END IF;
		PERFORM pg_catalog.pg_sleep(0.1);
	END LOOP;
	RETURN false;
END
$$;

-- The SQLSTATE a statement fails with, or 'accepted'.
CREATE FUNCTION pg_temp.sqlstate_of(stmt text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE stmt;
	RETURN 'accepted';
EXCEPTION WHEN OTHERS THEN
	RETURN SQLSTATE;
END
$$;

CREATE ROLE regress_rl_owner NOLOGIN;
CREATE ROLE regress_rl_other NOLOGIN;
CREATE ROLE regress_rl_monitor NOLOGIN IN ROLE pg_monitor;
GRANT EXECUTE ON FUNCTION
	iapi_tokens.create_access_token(integer, text, text[], jsonb, integer, interval),
	iapi_tokens.set_access_token_rate_limit(uuid, integer, interval),
	iapi_tokens.delete_access_token(uuid),
	iapi_tokens.rotate_access_token(uuid, interval)
TO regress_rl_owner, regress_rl_other;

-- The server counts limits.
SELECT preloaded, max_tokens FROM iapi_tokens.rate_limit_stats();
SELECT tokens_tracked AS tracked0, tokens_in_window AS live0,
	   requests_admitted AS admitted0, requests_refused AS refused0
  FROM iapi_tokens.rate_limit_stats() \gset

-- 3 per minute: verify_token returns a row three times, then none (fail
-- closed).
SELECT iapi_tokens.create_source('limited') AS sid \gset
SELECT id AS a_id, access_token AS a_tok
  FROM iapi_tokens.generate_token(:sid, 'three a minute', rate_limit => 3, rate_window => '1 minute') \gset
SELECT rate_limit, rate_window FROM iapi_tokens.tokens WHERE id = :a_id;
SELECT g AS attempt, v.token_id = :a_id AS admitted
  FROM generate_series(1, 5) g
  LEFT JOIN LATERAL iapi_tokens.verify_token(CASE WHEN g > 0 THEN :'a_tok' END) v ON true
 ORDER BY g;
-- check_token says why, and when to come back.
SELECT status, token_id = :a_id AS same_token, source_id = :sid AS same_source,
	   rate_limit, rate_window, remaining,
	   reset_after BETWEEN 1 AND 60 AS reset_in_window,
	   retry_after BETWEEN 1 AND 60 AS retry_in_window,
	   retry_after = reset_after AS retry_is_reset
  FROM iapi_tokens.check_token(:'a_tok');

-- check_token counts too: remaining goes down, the window opened by the
-- first call resets in 60 s, and retry_after is set only when refused.
SELECT id AS b_id, access_token AS b_tok
  FROM iapi_tokens.generate_token(:sid, rate_limit => 3, rate_window => '60 seconds') \gset
SELECT g AS attempt, c.status, c.token_id = :b_id AS same_token, c.rate_limit, c.rate_window,
	   c.remaining, CASE g WHEN 1 THEN c.reset_after = 60 END AS opens_60s,
	   c.reset_after BETWEEN 1 AND 60 AS reset_in_window,
	   c.retry_after IS NULL AS no_retry_after,
	   c.retry_after BETWEEN 1 AND 60 AS retry_in_window
  FROM generate_series(1, 4) g,
	   LATERAL iapi_tokens.check_token(CASE WHEN g > 0 THEN :'b_tok' END) c
 ORDER BY g;

-- Six admitted and four refused, two more tokens tracked, both in a window.
SELECT tokens_tracked - :tracked0 AS tracked, tokens_in_window - :live0 AS in_window,
	   requests_admitted - :admitted0 AS admitted, requests_refused - :refused0 AS refused
  FROM iapi_tokens.rate_limit_stats();

-- authenticate() refuses a limited-out token as verify_token does.
BEGIN;
SELECT count(*) AS authenticated FROM iapi_tokens.authenticate(:'a_tok');
SELECT count(*) AS current FROM iapi_tokens.current_token();
COMMIT;

-- A token without a limit is never counted: no row is refused, nothing is
-- tracked, and check_token's limit columns are NULL.
SELECT iapi_tokens.create_source('unlimited') AS free_sid \gset
SELECT id AS free_id, access_token AS free_tok FROM iapi_tokens.generate_token(:free_sid) \gset
SELECT tokens_tracked AS tracked1, requests_admitted AS admitted1, requests_refused AS refused1
  FROM iapi_tokens.rate_limit_stats() \gset
SELECT count(*) AS admitted
  FROM generate_series(1, 200) g,
	   LATERAL iapi_tokens.verify_token(CASE WHEN g > 0 THEN :'free_tok' END) v;
SELECT count(*) FILTER (WHERE c.status = 'valid') AS valid,
	   count(*) FILTER (WHERE num_nonnulls(c.rate_limit, c.rate_window, c.remaining,
										   c.reset_after, c.retry_after) > 0) AS with_limit_columns
  FROM generate_series(1, 20) g,
	   LATERAL iapi_tokens.check_token(CASE WHEN g > 0 THEN :'free_tok' END) c;
SELECT tokens_tracked = :tracked1 AS none_tracked, requests_admitted = :admitted1 AS none_admitted,
	   requests_refused = :refused1 AS none_refused
  FROM iapi_tokens.rate_limit_stats();

-- A refused verification is not a use: 2 per minute, tried 7 times, is 2
-- uses once the flush has applied them.
SELECT pg_temp.flushed();
SELECT iapi_tokens.create_source('uses') AS use_sid \gset
SELECT id AS u_id, access_token AS u_tok
  FROM iapi_tokens.generate_token(:use_sid, rate_limit => 2, rate_window => '1 minute') \gset
SELECT count(*) AS admitted
  FROM generate_series(1, 5) g,
	   LATERAL iapi_tokens.verify_token(CASE WHEN g > 0 THEN :'u_tok' END) v;
SELECT status FROM iapi_tokens.check_token(:'u_tok');
BEGIN;
SELECT count(*) AS authenticated FROM iapi_tokens.authenticate(:'u_tok');
COMMIT;
SELECT pg_temp.flushed();
SELECT use_count, last_used_at IS NOT NULL AS used FROM iapi_tokens.tokens WHERE id = :u_id;

-- check_token never raises: NULL, empty, 1 MB, malformed, unknown and
-- revoked tokens are one invalid row with every other column NULL.
SELECT id AS gone_id, access_token AS gone_tok
  FROM iapi_tokens.generate_token(:use_sid, rate_limit => 5, rate_window => '1 minute') \gset
SELECT iapi_tokens.revoke_token(:use_sid, :gone_id) IS NOT NULL AS revoked;
SELECT t.label, c.status,
	   num_nonnulls(c.token_id, c.source_id, c.created_at, c.expires_at, c.last_used_at,
					c.owner, c.access_token_id, c.scopes, c.metadata, c.rate_limit,
					c.rate_window, c.remaining, c.reset_after, c.retry_after) AS other_columns
  FROM (VALUES (1, 'null', NULL),
			   (2, 'empty', ''),
			   (3, '1 MB', repeat('x', 1024 * 1024)),
			   (4, '1 MB prefixed', 'iapi_' || repeat('A', 1024 * 1024)),
			   (5, 'malformed', 'not a token'),
			   (6, 'unknown', left(:'a_tok', -1) || CASE WHEN right(:'a_tok', 1) = 'A' THEN 'B' ELSE 'A' END),
			   (7, 'revoked', :'gone_tok')) AS t(n, label, token),
	   LATERAL iapi_tokens.check_token(t.token) c
 ORDER BY t.n;
SELECT count(*) AS rows, bool_and(status = 'invalid') AS invalid
  FROM iapi_tokens.check_token(NULL, NULL);

-- check_token(token, true) authenticates a valid token, limited or not;
-- a rate-limited or invalid one leaves no current token, even after a
-- valid one; without true, nothing is authenticated.
BEGIN;
SELECT status, token_id = :free_id AS same_token FROM iapi_tokens.check_token(:'free_tok', true);
SELECT token_id = :free_id AS current FROM iapi_tokens.current_token();
SELECT status FROM iapi_tokens.check_token(:'a_tok', true);
SELECT count(*) AS after_rate_limited FROM iapi_tokens.current_token();
SELECT status FROM iapi_tokens.check_token(:'free_tok', true);
SELECT status FROM iapi_tokens.check_token('not a token', true);
SELECT count(*) AS after_invalid FROM iapi_tokens.current_token();
SELECT status FROM iapi_tokens.check_token(:'free_tok', true);
SELECT status FROM iapi_tokens.check_token(NULL, true);
SELECT count(*) AS after_null FROM iapi_tokens.current_token();
COMMIT;
SELECT count(*) AS gone_after_commit FROM iapi_tokens.current_token();
BEGIN;
SELECT status FROM iapi_tokens.check_token(:'free_tok');
SELECT count(*) AS not_authenticated FROM iapi_tokens.current_token();
SELECT id AS c_id, access_token AS c_tok
  FROM iapi_tokens.generate_token(:free_sid, rate_limit => 1, rate_window => '1 minute') \gset
SELECT status, remaining FROM iapi_tokens.check_token(:'c_tok', true);
SELECT token_id = :c_id AS limited_current FROM iapi_tokens.current_token();
COMMIT;

-- Changing a limit applies to the current window.
SELECT iapi_tokens.create_source('changing') AS ch_sid \gset
SELECT id AS ch_id, access_token AS ch_tok
  FROM iapi_tokens.generate_token(:ch_sid, rate_limit => 2, rate_window => '1 minute') \gset
SELECT g AS attempt, c.status, c.remaining
  FROM generate_series(1, 3) g,
	   LATERAL iapi_tokens.check_token(CASE WHEN g > 0 THEN :'ch_tok' END) c
 ORDER BY g;
-- Raised to 4: two more in the same window, then refused.
SELECT iapi_tokens.set_rate_limit(:ch_id, 4, '1 minute')::text = '' AS raised;
SELECT g AS attempt, c.status, c.rate_limit, c.remaining
  FROM generate_series(1, 3) g,
	   LATERAL iapi_tokens.check_token(CASE WHEN g > 0 THEN :'ch_tok' END) c
 ORDER BY g;
-- Lowered to 1: the four counted already exceed it.
SELECT iapi_tokens.set_rate_limit(:ch_id, 1, '1 minute')::text = '' AS lowered;
SELECT status, rate_limit, remaining, retry_after BETWEEN 1 AND 60 AS retry_in_window
  FROM iapi_tokens.check_token(:'ch_tok');
SELECT count(*) AS admitted FROM iapi_tokens.verify_token(:'ch_tok');
-- Cleared: unlimited.
SELECT iapi_tokens.set_rate_limit(:ch_id, NULL, NULL)::text = '' AS cleared;
SELECT count(*) AS admitted
  FROM generate_series(1, 20) g,
	   LATERAL iapi_tokens.verify_token(CASE WHEN g > 0 THEN :'ch_tok' END) v;
SELECT status, num_nonnulls(rate_limit, rate_window, remaining, reset_after, retry_after) AS limit_columns
  FROM iapi_tokens.check_token(:'ch_tok');
SELECT rate_limit IS NULL AS no_limit, rate_window IS NULL AS no_window
  FROM iapi_tokens.tokens WHERE id = :ch_id;
-- Each change is audited with the old and the new limit.
SELECT action, CASE acting_role WHEN session_user THEN '(session user)' ELSE acting_role END AS acting_role,
	   details
  FROM iapi_tokens.audit WHERE token_id = :ch_id AND action <> 'create' ORDER BY id;
-- Setting what is already set is no change and writes no audit row: the
-- same NULL, NULL; the same limit again; a window of '1 day' where the
-- same 24 hours are stored.
SELECT count(*) AS audit_rows FROM iapi_tokens.audit \gset
SELECT iapi_tokens.set_rate_limit(:ch_id, NULL, NULL)::text = '' AS same_null;
SELECT count(*) - :audit_rows AS new_audit_rows FROM iapi_tokens.audit;
SELECT iapi_tokens.set_rate_limit(:ch_id, 1000000, '24 hours')::text = '' AS changed;
SELECT count(*) AS audit_rows FROM iapi_tokens.audit \gset
SELECT iapi_tokens.set_rate_limit(:ch_id, 1000000, '24 hours')::text = '' AS same_again;
SELECT iapi_tokens.set_rate_limit(:ch_id, 1000000, '1 day')::text = '' AS same_in_days;
SELECT count(*) - :audit_rows AS new_audit_rows FROM iapi_tokens.audit;
SELECT rate_limit, rate_window FROM iapi_tokens.tokens WHERE id = :ch_id;

-- Bounds: 1 per second and 1000000 per day are accepted, in any units; the
-- window is stored in seconds.
SELECT iapi_tokens.create_source('bounds') AS bd_sid \gset
SELECT id AS lo_id FROM iapi_tokens.generate_token(:bd_sid, rate_limit => 1, rate_window => '1 second') \gset
SELECT id AS hi_id FROM iapi_tokens.generate_token(:bd_sid, rate_limit => 1000000, rate_window => '1 day') \gset
SELECT iapi_tokens.create_source('bounds2') AS bd2_sid \gset
SELECT id AS hr_id FROM iapi_tokens.generate_token(:bd2_sid, rate_limit => 1000000, rate_window => '24 hours') \gset
SELECT id AS ms_id FROM iapi_tokens.generate_token(:bd2_sid, rate_limit => 7, rate_window => '90000 milliseconds') \gset
SELECT id = :lo_id AS lo, id = :hi_id AS hi, id = :hr_id AS hours, id = :ms_id AS ms, rate_limit, rate_window
  FROM iapi_tokens.tokens WHERE id IN (:lo_id, :hi_id, :hr_id, :ms_id) ORDER BY id;
SELECT iapi_tokens.set_rate_limit(:lo_id, 1000000, '1 day')::text = '' AS set_hi;
SELECT iapi_tokens.set_rate_limit(:hi_id, 1, '1 second')::text = '' AS set_lo;
SELECT id = :lo_id AS lo, rate_limit, rate_window
  FROM iapi_tokens.tokens WHERE id IN (:lo_id, :hi_id) ORDER BY id;

-- Every bad limit: 22023 from each of the four functions, with the limit
-- and window in the message; nothing is stored or changed.
SELECT * FROM iapi_tokens.generate_token(:bd_sid, rate_limit => 0, rate_window => '1 minute');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM iapi_tokens.generate_token(:bd_sid, rate_limit => 10);
\echo :LAST_ERROR_SQLSTATE
CREATE TABLE pg_temp.bad_limits (n integer, rate_limit integer, rate_window text);
INSERT INTO pg_temp.bad_limits VALUES
	(1, 0, '1 minute'),
	(2, -1, '1 minute'),
	(3, 1000001, '1 minute'),
	(4, NULL, '1 minute'),
	(5, 10, NULL),
	(6, 10, '0.5 seconds'),
	(7, 10, '0'),
	(8, 10, '-1 second'),
	(9, 10, '1 day 1 second'),
	(10, 10, '1 mon');
GRANT SELECT ON pg_temp.bad_limits TO regress_rl_owner;
SELECT iapi_tokens.create_source('bad') AS bad_sid \gset
SELECT id AS t_id, access_token AS t_tok
  FROM iapi_tokens.generate_token(:bad_sid, rate_limit => 5, rate_window => '1 minute') \gset
SET ROLE regress_rl_owner;
SELECT token_value AS tp_tok, token_id AS tp_uuid
  FROM iapi_tokens.create_access_token(3600, 'target', rate_limit => 5, rate_window => '1 minute') \gset
RESET ROLE;
SELECT count(*) AS tokens_before FROM iapi_tokens.tokens \gset
SELECT count(*) AS audit_before FROM iapi_tokens.audit \gset
SELECT coalesce(b.rate_limit::text, 'NULL') AS rate_limit, coalesce(b.rate_window, 'NULL') AS rate_window,
	   pg_temp.sqlstate_of(format('SELECT * FROM iapi_tokens.generate_token(%s, rate_limit => %L, rate_window => %L)',
								  :bad_sid, b.rate_limit, b.rate_window)) AS generate_token,
	   pg_temp.sqlstate_of(format('SELECT iapi_tokens.set_rate_limit(%s, %L, %L)',
								  :t_id, b.rate_limit, b.rate_window)) AS set_rate_limit
  FROM pg_temp.bad_limits b ORDER BY b.n;
SET ROLE regress_rl_owner;
SELECT coalesce(b.rate_limit::text, 'NULL') AS rate_limit, coalesce(b.rate_window, 'NULL') AS rate_window,
	   pg_temp.sqlstate_of(format('SELECT * FROM iapi_tokens.create_access_token(3600, rate_limit => %L, rate_window => %L)',
								  b.rate_limit, b.rate_window)) AS create_access_token,
	   pg_temp.sqlstate_of(format('SELECT iapi_tokens.set_access_token_rate_limit(%L, %L, %L)',
								  :'tp_uuid', b.rate_limit, b.rate_window)) AS set_access_token_rate_limit
  FROM pg_temp.bad_limits b ORDER BY b.n;
RESET ROLE;
SELECT count(*) = :tokens_before AS no_token_stored FROM iapi_tokens.tokens;
SELECT count(*) = :audit_before AS no_audit_row FROM iapi_tokens.audit;
SELECT token_uuid IS NULL AS source_token, rate_limit, rate_window
  FROM iapi_tokens.tokens WHERE id = :t_id OR token_uuid = :'tp_uuid' ORDER BY id;

-- set_rate_limit: a NULL token is 22004; an unknown or revoked one 42704.
SELECT iapi_tokens.set_rate_limit(NULL, 5, '1 minute');
\echo :LAST_ERROR_SQLSTATE
SELECT iapi_tokens.set_rate_limit(999999999, 5, '1 minute');
\echo :LAST_ERROR_SQLSTATE
SELECT iapi_tokens.set_rate_limit(:gone_id, 5, '1 minute')::text = '' AS revoked;
\echo :LAST_ERROR_SQLSTATE
SELECT rate_limit, rate_window FROM iapi_tokens.tokens WHERE id = :gone_id;

-- A committed revocation drops the token's counts; a rolled-back one keeps
-- them, and the token goes on counting where it was.
SELECT iapi_tokens.create_source('revoking') AS rv_sid \gset
SELECT id AS rv_id, access_token AS rv_tok
  FROM iapi_tokens.generate_token(:rv_sid, rate_limit => 3, rate_window => '1 minute') \gset
SELECT status, remaining FROM iapi_tokens.check_token(:'rv_tok');
SELECT tokens_tracked AS tracked2 FROM iapi_tokens.rate_limit_stats() \gset
BEGIN;
SELECT iapi_tokens.revoke_token(:rv_sid, :rv_id) IS NOT NULL AS revoked;
ROLLBACK;
SELECT tokens_tracked - :tracked2 AS tracked_after_rollback FROM iapi_tokens.rate_limit_stats();
BEGIN;
SAVEPOINT s;
SELECT iapi_tokens.revoke_token(:rv_sid, :rv_id) IS NOT NULL AS revoked;
ROLLBACK TO s;
COMMIT;
SELECT tokens_tracked - :tracked2 AS tracked_after_rollback_to FROM iapi_tokens.rate_limit_stats();
SELECT status, remaining FROM iapi_tokens.check_token(:'rv_tok');
SELECT iapi_tokens.revoke_token(:rv_sid, :rv_id) IS NOT NULL AS revoked;
SELECT tokens_tracked - :tracked2 AS tracked_after_commit FROM iapi_tokens.rate_limit_stats();
SELECT status FROM iapi_tokens.check_token(:'rv_tok');
-- Removing a limit drops the counts at commit too, so a limit set again
-- starts a fresh window; a removal rolled back keeps them.
SELECT tokens_tracked AS tracked5 FROM iapi_tokens.rate_limit_stats() \gset
SELECT id AS cl_id, access_token AS cl_tok
  FROM iapi_tokens.generate_token(:rv_sid, rate_limit => 3, rate_window => '1 minute') \gset
SELECT status, remaining FROM iapi_tokens.check_token(:'cl_tok');
BEGIN;
SELECT iapi_tokens.set_rate_limit(:cl_id, NULL, NULL)::text = '' AS cleared;
ROLLBACK;
SELECT tokens_tracked - :tracked5 AS tracked_after_rollback FROM iapi_tokens.rate_limit_stats();
SELECT status, remaining FROM iapi_tokens.check_token(:'cl_tok');
SELECT iapi_tokens.set_rate_limit(:cl_id, NULL, NULL)::text = '' AS cleared;
SELECT tokens_tracked - :tracked5 AS tracked_after_commit FROM iapi_tokens.rate_limit_stats();
SELECT iapi_tokens.set_rate_limit(:cl_id, 3, '1 minute')::text = '' AS limited_again;
SELECT status, remaining, reset_after FROM iapi_tokens.check_token(:'cl_tok');

-- Rotation copies the limit to the replacement, whose window starts
-- afresh; the replaced token (no grace: revoked) leaves the counts.
SELECT iapi_tokens.create_source('rotating') AS rt_sid \gset
SELECT id AS rt_id, access_token AS rt_tok
  FROM iapi_tokens.generate_token(:rt_sid, rate_limit => 2, rate_window => '2 minutes') \gset
SELECT g AS attempt, c.status, c.remaining
  FROM generate_series(1, 3) g,
	   LATERAL iapi_tokens.check_token(CASE WHEN g > 0 THEN :'rt_tok' END) c
 ORDER BY g;
SELECT tokens_tracked AS tracked3 FROM iapi_tokens.rate_limit_stats() \gset
SELECT id AS rt2_id, access_token AS rt2_tok FROM iapi_tokens.rotate_token(:rt_sid, :rt_id) \gset
SELECT tokens_tracked - :tracked3 AS tracked_after_rotation FROM iapi_tokens.rate_limit_stats();
SELECT rate_limit, rate_window FROM iapi_tokens.tokens WHERE id = :rt2_id;
SELECT status, token_id = :rt2_id AS replacement, rate_limit, rate_window, remaining
  FROM iapi_tokens.check_token(:'rt2_tok');
SELECT status FROM iapi_tokens.check_token(:'rt_tok');

-- A window ends: 1 per second, refused until the window that the first
-- verification opened has ended, then admitted again, in a new window.
-- Polls every 50 ms, for at most 10 s.
SELECT iapi_tokens.create_source('windows') AS w_sid \gset
SELECT id AS w_id, access_token AS w_tok
  FROM iapi_tokens.generate_token(:w_sid, rate_limit => 1, rate_window => '1 second') \gset
CREATE FUNCTION pg_temp.next_window(tok text,
	OUT opened boolean, OUT refused_meanwhile boolean, OUT readmitted boolean,
	OUT not_before_window_end boolean)
LANGUAGE plpgsql AS $$
DECLARE
	started timestamptz := clock_timestamp();
	deadline timestamptz := started + interval '10 seconds';
	c record;
	refusals integer := 0;
BEGIN
	SELECT * INTO c FROM iapi_tokens.check_token(tok);
	opened := c.status = 'valid' AND c.remaining = 0 AND c.reset_after = 1
		AND c.retry_after IS NULL;
	LOOP
		SELECT * INTO c FROM iapi_tokens.check_token(tok);
		EXIT WHEN c.status IS DISTINCT FROM 'rate_limited';
		IF c.remaining <> 0 OR c.reset_after <> 1 OR c.retry_after <> 1 THEN
			RAISE EXCEPTION 'refused with remaining %, reset_after %, retry_after %',
				c.remaining, c.reset_after, c.retry_after;
		END IF;
		refusals := refusals + 1;
		IF clock_timestamp() > deadline THEN
			RAISE EXCEPTION 'still rate limited after 10 s';
		END IF;
		PERFORM pg_catalog.pg_sleep(0.05);
	END LOOP;
	-- The loop goes on only on a refusal: the poll before this one was one.
	refused_meanwhile := refusals > 0;
	readmitted := c.status = 'valid' AND c.remaining = 0 AND c.reset_after = 1
		AND c.retry_after IS NULL;
	-- Counts have millisecond resolution: a window of 1 s lasts more than
	-- 999 ms since it opened, which was after started.
	not_before_window_end := clock_timestamp() - started > interval '0.999 seconds';
END
$$;
SELECT * FROM pg_temp.next_window(:'w_tok');

-- Personal tokens: the owner creates one with a limit and changes it.
SET ROLE regress_rl_owner;
SELECT token_value AS p_tok, token_id AS p_uuid
  FROM iapi_tokens.create_access_token(3600, 'limited', rate_limit => 2, rate_window => '1 minute') \gset
SELECT g AS attempt, c.status, c.owner, c.access_token_id = :'p_uuid' AS same_token,
	   c.rate_limit, c.rate_window, c.remaining
  FROM generate_series(1, 3) g,
	   LATERAL iapi_tokens.check_token(CASE WHEN g > 0 THEN :'p_tok' END) c
 ORDER BY g;
SELECT iapi_tokens.set_access_token_rate_limit(:'p_uuid', 3, '1 minute')::text = '' AS raised;
SELECT status, rate_limit, remaining FROM iapi_tokens.check_token(:'p_tok');
SELECT count(*) AS admitted FROM iapi_tokens.verify_token(:'p_tok');
RESET ROLE;
SELECT action, acting_role, owner_role, details
  FROM iapi_tokens.audit WHERE access_token_id = :'p_uuid' AND action <> 'create' ORDER BY id;
-- Rotation copies a personal token's limit too.
SET ROLE regress_rl_owner;
SELECT token_value AS p2_tok, token_id AS p2_uuid
  FROM iapi_tokens.rotate_access_token(:'p_uuid') \gset
SELECT status, rate_limit, rate_window, remaining FROM iapi_tokens.check_token(:'p2_tok');
-- Another role's token does not exist for it, nor does an unknown or a
-- deleted one; nothing changes.
SET ROLE regress_rl_other;
SELECT token_value AS o_tok, token_id AS o_uuid
  FROM iapi_tokens.create_access_token(3600, 'other''s', rate_limit => 5, rate_window => '1 hour') \gset
SET ROLE regress_rl_owner;
\set VERBOSITY sqlstate
SELECT iapi_tokens.set_access_token_rate_limit(:'o_uuid', 1, '1 second');
SELECT iapi_tokens.set_access_token_rate_limit(:'o_uuid', NULL, NULL);
SELECT iapi_tokens.set_access_token_rate_limit('00000000-0000-4000-8000-000000000000', 1, '1 second');
SELECT iapi_tokens.set_access_token_rate_limit(:'p_uuid', 1, '1 second');
\set VERBOSITY default
-- Deleting a token drops its counts.
RESET ROLE;
SELECT tokens_tracked AS tracked4 FROM iapi_tokens.rate_limit_stats() \gset
SET ROLE regress_rl_owner;
SELECT iapi_tokens.delete_access_token(:'p2_uuid')::text = '' AS deleted;
SET ROLE regress_rl_other;
-- Not a role's to call without a grant: set_rate_limit, rate_limit_stats.
SELECT iapi_tokens.set_rate_limit(:a_id, 100, '1 minute');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM iapi_tokens.rate_limit_stats();
\echo :LAST_ERROR_SQLSTATE
-- pg_monitor reads the stats; a role without the grant cannot set a
-- personal token's limit; check_token is PUBLIC's.
SET ROLE regress_rl_monitor;
SELECT preloaded, max_tokens, tokens_tracked - :tracked4 AS tracked_after_delete
  FROM iapi_tokens.rate_limit_stats();
SELECT iapi_tokens.set_access_token_rate_limit(:'o_uuid', 1, '1 second');
\echo :LAST_ERROR_SQLSTATE
SELECT status, rate_limit, rate_window, remaining FROM iapi_tokens.check_token(:'o_tok');
RESET ROLE;
SELECT owner_role::text, rate_limit, rate_window
  FROM iapi_tokens.tokens WHERE token_uuid = :'o_uuid';
SELECT rate_limit, rate_window FROM iapi_tokens.tokens WHERE id = :a_id;

DROP TABLE pg_temp.bad_limits;
DROP EXTENSION iapi_tokens;
DROP ROLE regress_rl_owner, regress_rl_other, regress_rl_monitor;
