-- authenticate() and current_token(): the token a transaction authenticated
-- with, readable by the functions and RLS policies that serve the request,
-- and gone when the transaction ends.
\set SHOW_CONTEXT never
CREATE EXTENSION iapi_tokens;
CREATE ROLE regress_iapi_caller NOLOGIN;
CREATE ROLE regress_iapi_owner NOLOGIN;
GRANT EXECUTE ON FUNCTION iapi_tokens.create_access_token(integer, text, text[], jsonb, integer, interval) TO regress_iapi_owner;
SELECT iapi_tokens.create_source('auth') AS sid \gset
SELECT id AS tid, access_token AS tok FROM iapi_tokens.generate_token(:sid) \gset
SELECT id AS revoked_id, access_token AS revoked_tok FROM iapi_tokens.generate_token(:sid) \gset
SELECT iapi_tokens.revoke_token(:sid, :revoked_id) IS NOT NULL AS revoked;
SET ROLE regress_iapi_owner;
SELECT token_value AS ptok, token_id AS puuid
  FROM iapi_tokens.create_access_token(-1, 'personal') \gset
RESET ROLE;

-- Nobody is authenticated until authenticate() accepts a token.
SELECT count(*) AS nobody FROM iapi_tokens.current_token();

-- Any role may authenticate (PUBLIC may verify), and sees the same row.
SET ROLE regress_iapi_caller;
BEGIN;
SELECT token_id = :tid AS accepted, source_id = :sid AS source, owner IS NULL AS no_owner
  FROM iapi_tokens.authenticate(:'tok');
SELECT token_id = :tid AS current, source_id = :sid AS source
  FROM iapi_tokens.current_token();
-- Read by a policy-like predicate.
SELECT EXISTS (SELECT FROM iapi_tokens.current_token() WHERE source_id = :sid) AS may_write;
COMMIT;
-- The next transaction starts with nobody, as the next PostgREST request
-- on a pooled connection does.
SELECT count(*) AS gone_after_commit FROM iapi_tokens.current_token();

BEGIN;
SELECT count(*) AS accepted FROM iapi_tokens.authenticate(:'tok');
ROLLBACK;
SELECT count(*) AS gone_after_rollback FROM iapi_tokens.current_token();

-- A bad, revoked, malformed or NULL token yields no row and forgets the
-- previous token, so a failed attempt never leaves an earlier one in place.
BEGIN;
SELECT count(*) AS accepted FROM iapi_tokens.authenticate(:'tok');
SELECT count(*) AS revoked FROM iapi_tokens.authenticate(:'revoked_tok');
SELECT count(*) AS after_revoked FROM iapi_tokens.current_token();
SELECT count(*) AS accepted FROM iapi_tokens.authenticate(:'tok');
SELECT count(*) AS malformed FROM iapi_tokens.authenticate('not a token');
SELECT count(*) AS after_malformed FROM iapi_tokens.current_token();
SELECT count(*) AS accepted FROM iapi_tokens.authenticate(:'tok');
SELECT count(*) AS null_token FROM iapi_tokens.authenticate(NULL);
SELECT count(*) AS after_null FROM iapi_tokens.current_token();
COMMIT;

-- Savepoints: a rolled-back one takes back the authentication made inside
-- it, a released one keeps it, and one rolled back later still takes it.
BEGIN;
SAVEPOINT a;
SELECT count(*) AS accepted FROM iapi_tokens.authenticate(:'tok');
ROLLBACK TO a;
SELECT count(*) AS after_rollback_to FROM iapi_tokens.current_token();
SAVEPOINT b;
SAVEPOINT c;
SELECT count(*) AS accepted FROM iapi_tokens.authenticate(:'tok');
RELEASE c;
SELECT count(*) AS after_release FROM iapi_tokens.current_token();
ROLLBACK TO b;
SELECT count(*) AS after_outer_rollback FROM iapi_tokens.current_token();
SELECT count(*) AS accepted FROM iapi_tokens.authenticate(:'tok');
SAVEPOINT d;
SELECT 1 / 0;
ROLLBACK TO d;
SELECT count(*) AS kept_across_unrelated_rollback FROM iapi_tokens.current_token();
COMMIT;

-- A personal token names its owner and its uuid.
BEGIN;
SELECT owner = 'regress_iapi_owner'::regrole AS owner, access_token_id = :'puuid' AS uuid,
	   source_id IS NULL AS no_source
  FROM iapi_tokens.authenticate(:'ptok');
SELECT owner::text, access_token_id = :'puuid' AS uuid FROM iapi_tokens.current_token();
COMMIT;

-- It works in a read-only transaction (a GET under PostgREST).
BEGIN READ ONLY;
SELECT token_id = :tid AS accepted_read_only FROM iapi_tokens.authenticate(:'tok');
SELECT token_id = :tid AS current_read_only FROM iapi_tokens.current_token();
COMMIT;
RESET ROLE;

-- Labels: authenticate changes state, current_token reads it.
SELECT p.oid::regprocedure AS function, p.provolatile, p.proparallel, p.proisstrict, p.prosecdef
  FROM pg_proc p
 WHERE p.oid IN ('iapi_tokens.authenticate(text)'::regprocedure,
				 'iapi_tokens.current_token()'::regprocedure)
 ORDER BY 1;

DROP EXTENSION iapi_tokens;
DROP ROLE regress_iapi_caller;
DROP ROLE regress_iapi_owner;
