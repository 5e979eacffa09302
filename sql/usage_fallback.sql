-- Without shared_preload_libraries = 'iapi_tokens' (make
-- installcheck-no-preload): verification still works, warns once per
-- session, and records use in the verifying transaction, as before 1.4:
-- at most once per iapi_tokens.last_used_interval, never read-only.
\set SHOW_CONTEXT never
CREATE EXTENSION iapi_tokens;
SELECT preloaded, uses_pending, batches_flushed, uses_dropped FROM iapi_tokens.usage_stats();

SELECT iapi_tokens.create_source('fallback') AS sid \gset
SELECT id AS tid, access_token AS tok FROM iapi_tokens.generate_token(:sid) \gset

-- The first verification of the session warns; the row is still returned.
SELECT token_id = :tid AS verified, last_used_at IS NOT NULL AS written
  FROM iapi_tokens.verify_token(:'tok');
SELECT use_count, last_used_at IS NOT NULL AS written FROM iapi_tokens.tokens WHERE id = :tid;

-- No second warning; within the interval nothing more is written.
SELECT count(*) FROM iapi_tokens.verify_token(:'tok');
SELECT use_count FROM iapi_tokens.tokens WHERE id = :tid;

-- Interval 0: every verification in a writable transaction is written.
SET iapi_tokens.last_used_interval = 0;
SELECT count(*) FROM generate_series(1, 3) g,
	   LATERAL iapi_tokens.verify_token(CASE WHEN g > 0 THEN :'tok' END) v;
SELECT use_count FROM iapi_tokens.tokens WHERE id = :tid;

-- A read-only transaction verifies and writes nothing.
BEGIN READ ONLY;
SELECT count(*) FROM iapi_tokens.verify_token(:'tok');
COMMIT;
SELECT use_count FROM iapi_tokens.tokens WHERE id = :tid;

-- A new session warns again, once.
\connect
SELECT count(*) FROM iapi_tokens.verify_token(:'tok');
SELECT count(*) FROM iapi_tokens.verify_token(:'tok');

-- No background worker runs.
SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'iapi_tokens%';

-- Rate limits need the shared memory: none can be set, and a token that
-- has one (here by direct DML, as a restore would bring it) is refused,
-- with a warning once per session, rather than admitted uncounted.
SELECT preloaded, max_tokens FROM iapi_tokens.rate_limit_stats();
SELECT count(*) FROM iapi_tokens.generate_token(:sid, 'limited', rate_limit => 5, rate_window => '1 minute');
\echo :LAST_ERROR_SQLSTATE
SELECT iapi_tokens.set_rate_limit(:tid, 5, '1 minute');
\echo :LAST_ERROR_SQLSTATE
UPDATE iapi_tokens.tokens SET rate_limit = 5, rate_window = '1 minute' WHERE id = :tid;
SELECT count(*) AS admitted FROM iapi_tokens.verify_token(:'tok');
SELECT status, remaining, reset_after, retry_after FROM iapi_tokens.check_token(:'tok');
-- Removing the limit works without it, and the token verifies again.
SELECT iapi_tokens.set_rate_limit(:tid, NULL, NULL);
SELECT count(*) AS admitted FROM iapi_tokens.verify_token(:'tok');

DROP EXTENSION iapi_tokens;
