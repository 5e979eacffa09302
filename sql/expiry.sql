-- Expiry: a token with a lifetime stops verifying, stops counting toward the
-- cap and leaves the list when its time is up.
\set SHOW_CONTEXT never
CREATE EXTENSION iapi_tokens;
SELECT iapi_tokens.create_source('expiring') AS sid \gset

-- A one-second token verifies, then, once expired, does not.
SELECT id AS short_id, access_token AS short_tok
  FROM iapi_tokens.generate_token(:sid, 'one second', '1 second') \gset
SELECT expires_at - created_at AS lifetime FROM iapi_tokens.tokens WHERE id = :short_id;
SELECT count(*) AS before_expiry FROM iapi_tokens.verify_token(:'short_tok');
SELECT pg_sleep(1.2);
SELECT count(*) AS after_expiry FROM iapi_tokens.verify_token(:'short_tok');
SELECT count(*) AS listed FROM iapi_tokens.list_tokens(:sid);
SELECT status FROM iapi_tokens.list_token_details(:sid, true);

-- Lifetimes use calendar arithmetic: a month is a month.
SELECT id AS month_id, access_token AS month_tok
  FROM iapi_tokens.generate_token(:sid, NULL, '1 month') \gset
SELECT expires_at = created_at + interval '1 month' AS one_month
  FROM iapi_tokens.tokens WHERE id = :month_id;
SELECT expires_at IS NOT NULL AS reports_expiry
  FROM iapi_tokens.verify_token(:'month_tok');

-- An expired token does not count toward the cap: two active plus one expired.
SELECT id AS forever_id FROM iapi_tokens.generate_token(:sid) \gset
SELECT count(*) AS active FROM iapi_tokens.list_tokens(:sid);
SELECT * FROM iapi_tokens.generate_token(:sid);
\echo :LAST_ERROR_SQLSTATE

-- Expire the month token now, by moving its window into the past.
UPDATE iapi_tokens.tokens
   SET created_at = now() - interval '2 months', expires_at = now() - interval '1 month'
 WHERE id = :month_id;
SELECT count(*) AS month_token_rows FROM iapi_tokens.verify_token(:'month_tok');
SELECT count(*) AS generated FROM iapi_tokens.generate_token(:sid);

-- Extending an expired token re-activates it, so the cap applies to that too.
UPDATE iapi_tokens.tokens SET expires_at = NULL WHERE id = :month_id;
\echo :LAST_ERROR_SQLSTATE
UPDATE iapi_tokens.tokens SET expires_at = now() + interval '1 day' WHERE id = :short_id;
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS still_expired FROM iapi_tokens.verify_token(:'month_tok');

-- Shortening an active token is always allowed.
UPDATE iapi_tokens.tokens SET expires_at = now() + interval '1 hour' WHERE id = :forever_id;
SELECT count(*) AS active FROM iapi_tokens.list_tokens(:sid);

-- Revoking an expired token is allowed (for the audit trail) and changes nothing else.
SELECT iapi_tokens.revoke_token(:sid, :short_id) IS NOT NULL AS revoked_expired;
SELECT status FROM iapi_tokens.list_token_details(:sid, true) WHERE token_id = :short_id;

DROP EXTENSION iapi_tokens;
