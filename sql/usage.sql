-- Token use with the library preloaded: verification records use in shared
-- memory and writes nothing; the background worker applies it.  Waiting
-- polls usage_stats() for at most 30 s, never a bare sleep.
\set SHOW_CONTEXT never
CREATE EXTENSION iapi_tokens;

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

-- Earlier tests' uses are applied first.
SELECT pg_temp.flushed();
-- (last_flush_error is the server's: an earlier test's DROP EXTENSION may
-- have failed a flush.  It is checked at the end, after this test's own.)
SELECT preloaded, uses_dropped FROM iapi_tokens.usage_stats();

SELECT iapi_tokens.create_source('usage') AS sid \gset
SELECT id AS tid, access_token AS tok FROM iapi_tokens.generate_token(:sid) \gset
SELECT last_used_at IS NULL AS never_used, use_count FROM iapi_tokens.tokens WHERE id = :tid;

-- A read-only transaction's verification is recorded, and returns the last
-- use as flushed so far.
BEGIN READ ONLY;
SELECT token_id = :tid AS verified, last_used_at IS NULL AS not_yet
  FROM iapi_tokens.verify_token(:'tok');
SELECT uses_pending, tokens_pending FROM iapi_tokens.usage_stats();
COMMIT;
SELECT pg_temp.flushed();
SELECT last_used_at IS NOT NULL AS recorded, use_count,
	   last_used_at <= clock_timestamp() AS not_in_future
  FROM iapi_tokens.tokens WHERE id = :tid;
SELECT last_used_at AS first_use FROM iapi_tokens.tokens WHERE id = :tid \gset

-- Verifying writes nothing in the caller's transaction: no XID is taken.
BEGIN;
SELECT count(*) FROM iapi_tokens.verify_token(:'tok');
SELECT pg_current_xact_id_if_assigned() IS NULL AS no_write;
COMMIT;

-- Counts are exact: 1 above, 1 there, and 50 here, one row each.
SELECT count(*) FROM generate_series(1, 50) g,
	   LATERAL iapi_tokens.verify_token(CASE WHEN g > 0 THEN :'tok' END) v;
SELECT pg_temp.flushed();
SELECT use_count, last_used_at > :'first_use' AS advanced
  FROM iapi_tokens.tokens WHERE id = :tid;

-- authenticate() records as verify_token() does; invalid tokens record
-- nothing.
BEGIN;
SELECT token_id = :tid AS authenticated FROM iapi_tokens.authenticate(:'tok');
COMMIT;
SELECT count(*) FROM iapi_tokens.verify_token(:'tok' || 'x');
SELECT count(*) FROM iapi_tokens.verify_token('iapi_notatoken');
SELECT pg_temp.flushed();
SELECT use_count FROM iapi_tokens.tokens WHERE id = :tid;

-- A revoked token verifies no more, so records no use; its last use stays.
SELECT id AS tid2, access_token AS tok2 FROM iapi_tokens.generate_token(:sid) \gset
SELECT count(*) FROM iapi_tokens.verify_token(:'tok2');
SELECT pg_temp.flushed();
SELECT iapi_tokens.revoke_token(:sid, :tid2) IS NOT NULL AS revoked;
SELECT count(*) FROM iapi_tokens.verify_token(:'tok2');
SELECT pg_temp.flushed();
SELECT use_count, last_used_at IS NOT NULL AS kept FROM iapi_tokens.tokens WHERE id = :tid2;

-- The listing functions show use_count, both families.
SELECT token_id = :tid AS first, use_count FROM iapi_tokens.list_token_details(:sid);
CREATE ROLE regress_usage_owner;
GRANT EXECUTE ON FUNCTION iapi_tokens.create_access_token(integer, text, text[], jsonb, integer, interval),
	iapi_tokens.list_access_tokens(), iapi_tokens.get_access_token(uuid)
	TO regress_usage_owner;
SET ROLE regress_usage_owner;
SELECT token_value AS ptok, token_id AS puuid
  FROM iapi_tokens.create_access_token(3600, 'usage') \gset
RESET ROLE;
-- A function in FROM without a lateral reference runs once: one use.
SELECT count(*) FROM iapi_tokens.verify_token(:'ptok'), generate_series(1, 3);
SELECT count(*) FROM generate_series(1, 3) g,
	   LATERAL iapi_tokens.verify_token(CASE WHEN g > 0 THEN :'ptok' END) v;
SELECT pg_temp.flushed();
SET ROLE regress_usage_owner;
SELECT description, use_count, last_used IS NOT NULL AS used FROM iapi_tokens.list_access_tokens();
SELECT use_count FROM iapi_tokens.get_access_token(:'puuid');
RESET ROLE;
SELECT owner, use_count FROM iapi_tokens.list_all_access_tokens();

-- Recording use is not an event: the audit trail has only the creations
-- and the revocation.
SELECT action, count(*) FROM iapi_tokens.audit GROUP BY action ORDER BY action;

-- apply_usage: the flush's function.  last_used_at never moves back, a
-- time ahead of the clock is clamped, an unknown token is ignored.
SELECT last_used_at AS before_apply FROM iapi_tokens.tokens WHERE id = :tid \gset
SELECT * FROM iapi_tokens.apply_usage(ARRAY[:tid, 999999]::bigint[],
	ARRAY['2000-01-01', '2000-01-01']::timestamptz[], ARRAY[2, 5]::bigint[]);
SELECT use_count, last_used_at = :'before_apply' AS not_moved_back
  FROM iapi_tokens.tokens WHERE id = :tid;
SELECT * FROM iapi_tokens.apply_usage(ARRAY[:tid, :tid]::bigint[],
	ARRAY['infinity', '2000-01-01']::timestamptz[], ARRAY[1, 1]::bigint[]);
SELECT use_count, last_used_at <= clock_timestamp() AS clamped
  FROM iapi_tokens.tokens WHERE id = :tid;
SELECT * FROM iapi_tokens.apply_usage('{}', '{}', '{}');

-- Bad batches: every one a specific error, and nothing applied.
SELECT * FROM iapi_tokens.apply_usage(NULL, '{}', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM iapi_tokens.apply_usage(ARRAY[:tid]::bigint[], '{}', ARRAY[1]::bigint[]);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM iapi_tokens.apply_usage(ARRAY[:tid]::bigint[], ARRAY[now()], ARRAY[0]::bigint[]);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM iapi_tokens.apply_usage(ARRAY[NULL]::bigint[], ARRAY[now()], ARRAY[1]::bigint[]);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM iapi_tokens.apply_usage(ARRAY[:tid]::bigint[], ARRAY[NULL]::timestamptz[], ARRAY[1]::bigint[]);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM iapi_tokens.apply_usage(array_fill(:tid::bigint, ARRAY[10001]),
	array_fill(now(), ARRAY[10001]), array_fill(1::bigint, ARRAY[10001]));
\echo :LAST_ERROR_SQLSTATE
SELECT use_count FROM iapi_tokens.tokens WHERE id = :tid;

-- Privileges: usage_stats() for the owner and pg_monitor, apply_usage()
-- for a role granted it alone.
CREATE ROLE regress_usage_monitor IN ROLE pg_monitor;
CREATE ROLE regress_usage_forwarder;
GRANT EXECUTE ON FUNCTION iapi_tokens.apply_usage(bigint[], timestamptz[], bigint[])
	TO regress_usage_forwarder;
SET ROLE regress_usage_owner;
SELECT * FROM iapi_tokens.usage_stats();
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM iapi_tokens.apply_usage(ARRAY[:tid]::bigint[], ARRAY[now()], ARRAY[1]::bigint[]);
\echo :LAST_ERROR_SQLSTATE
SET ROLE regress_usage_monitor;
SELECT preloaded FROM iapi_tokens.usage_stats();
SET ROLE regress_usage_forwarder;
SELECT applied_uses FROM iapi_tokens.apply_usage(ARRAY[:tid]::bigint[], ARRAY[now()], ARRAY[1]::bigint[]);
SELECT count(*) FROM iapi_tokens.tokens;
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM iapi_tokens.usage_stats();
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SELECT use_count FROM iapi_tokens.tokens WHERE id = :tid;

-- Nothing was dropped, and the last flush succeeded.
SELECT uses_dropped, last_flush_error, batches_flushed > 0 AS flushed,
	   uses_applied >= 58 AS applied
  FROM iapi_tokens.usage_stats();

DROP EXTENSION iapi_tokens;

-- Uses recorded just before the extension is dropped and created again
-- never reach the new tokens, whose ids start over.
CREATE EXTENSION iapi_tokens;
SELECT iapi_tokens.create_source('again') AS sid3 \gset
SELECT id AS old_id, access_token AS old_tok FROM iapi_tokens.generate_token(:sid3) \gset
BEGIN;
SELECT count(*) FROM generate_series(1, 5) g,
	   LATERAL iapi_tokens.verify_token(CASE WHEN g > 0 THEN :'old_tok' END) v;
DROP EXTENSION iapi_tokens;
CREATE EXTENSION iapi_tokens;
SELECT iapi_tokens.create_source('again') AS sid4 \gset
SELECT id = :old_id AS same_id_again FROM iapi_tokens.generate_token(:sid4);
COMMIT;
SELECT pg_temp.flushed();
SELECT use_count AS new_token_uses FROM iapi_tokens.tokens WHERE id = :old_id;
DROP EXTENSION iapi_tokens;
DROP ROLE regress_usage_owner, regress_usage_monitor, regress_usage_forwarder;
