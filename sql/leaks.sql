-- revoke_leaked(): a secret scanner reports plaintexts without knowing whose
-- they are.  It revokes the active tokens among them, of either family,
-- returns how many, records "leaked" in the audit trail, and raises no
-- error for any input.  expiring_tokens(): what expires soon.
\set SHOW_CONTEXT never
CREATE EXTENSION iapi_tokens;
CREATE ROLE regress_leak_owner;
CREATE ROLE regress_leak_reporter;
GRANT EXECUTE ON FUNCTION iapi_tokens.create_access_token(integer, text, text[], jsonb, integer, interval)
  TO regress_leak_owner;

SELECT iapi_tokens.create_source('leaky') AS sid \gset
SELECT id AS t1, access_token AS tok1 FROM iapi_tokens.generate_token(:sid, 'one') \gset
SELECT id AS t2, access_token AS tok2 FROM iapi_tokens.generate_token(:sid, 'two', '1 hour') \gset
SET ROLE regress_leak_owner;
SELECT token_id AS p1, token_value AS ptok FROM iapi_tokens.create_access_token(-1, 'mine') \gset
RESET ROLE;

-- Nothing to revoke: 0, never an error.
SELECT iapi_tokens.revoke_leaked(NULL) AS null_input,
	   iapi_tokens.revoke_leaked('{}') AS empty,
	   iapi_tokens.revoke_leaked(ARRAY[NULL]::text[]) AS null_element,
	   iapi_tokens.revoke_leaked(ARRAY['', 'iapi_', 'not a token at all']) AS junk,
	   iapi_tokens.revoke_leaked(ARRAY[repeat('x', 1024 * 1024)]) AS one_megabyte,
	   iapi_tokens.revoke_leaked(ARRAY[
		   overlay(:'tok1' placing (CASE substr(:'tok1', 10, 1) WHEN 'A' THEN 'B' ELSE 'A' END) from 10 for 1),
		   overlay(:'tok1' placing (CASE right(:'tok1', 1) WHEN 'A' THEN 'B' ELSE 'A' END) from 44 for 1)
	   ]) AS bad_checksums;
-- A well-formed token that was never made.
SELECT iapi_tokens.revoke_leaked(ARRAY['iapi_000000000000000000000000000000000' ||
		(SELECT substr(:'tok1', 39))]) AS unknown;
-- More than 1,000 at once: refused as a whole, NULL, nothing revoked.
SELECT iapi_tokens.revoke_leaked(array_fill(:'tok1'::text, ARRAY[1001])) AS too_many;
SELECT count(*) AS still_valid FROM iapi_tokens.verify_token(:'tok1');

-- Mixed input: two tokens of different families and owners, a duplicate,
-- junk and a NULL.  The count says two; which inputs counted is not said.
SET ROLE regress_leak_reporter;
SELECT iapi_tokens.revoke_leaked(ARRAY[:'tok1', 'junk', NULL, :'ptok', :'tok1']);
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
GRANT EXECUTE ON FUNCTION iapi_tokens.revoke_leaked(text[]) TO regress_leak_reporter;
SET ROLE regress_leak_reporter;
SELECT iapi_tokens.revoke_leaked(ARRAY[:'tok1', 'junk', NULL, :'ptok', :'tok1']) AS revoked;
-- Reported again: already revoked, so none.
SELECT iapi_tokens.revoke_leaked(ARRAY[:'tok1', :'ptok']) AS revoked_again;
RESET ROLE;
SELECT count(*) AS tok1_verifies FROM iapi_tokens.verify_token(:'tok1');
SELECT count(*) AS ptok_verifies FROM iapi_tokens.verify_token(:'ptok');
SELECT count(*) AS tok2_verifies FROM iapi_tokens.verify_token(:'tok2');
SELECT id = :t1 AS is_t1, revoked_reason FROM iapi_tokens.tokens
 WHERE revoked_at IS NOT NULL ORDER BY id;
-- The audit trail: "leaked", with the reporter as the acting role.
SELECT action, token_id = :t1 AS is_t1, access_token_id = :'p1' AS is_p1,
	   owner_role, acting_role
  FROM iapi_tokens.audit WHERE action = 'leaked' ORDER BY id;
-- A leaked token stays refused: it cannot be made active again by mistake.
\set VERBOSITY terse
UPDATE iapi_tokens.tokens SET revoked_at = NULL WHERE id = :t1;
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY default

-- expiring_tokens: active tokens that expire within the interval.
SET ROLE regress_leak_owner;
SELECT token_id AS p2 FROM iapi_tokens.create_access_token(600, 'soon') \gset
RESET ROLE;
SELECT token_id = :t2 AS is_t2, access_token_id = :'p2' AS is_p2, source_id = :sid AS of_source,
	   owner, description
  FROM iapi_tokens.expiring_tokens('1 day');
SELECT count(*) AS within_a_minute FROM iapi_tokens.expiring_tokens('1 minute');
SELECT * FROM iapi_tokens.expiring_tokens(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM iapi_tokens.expiring_tokens('-1 day');
\echo :LAST_ERROR_SQLSTATE
SET ROLE regress_leak_reporter;
SELECT * FROM iapi_tokens.expiring_tokens('1 day');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

DROP EXTENSION iapi_tokens;
DROP ROLE regress_leak_owner;
DROP ROLE regress_leak_reporter;
