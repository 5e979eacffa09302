-- Per-role limits on active personal tokens (iapi_tokens.owner_limits),
-- set with set_owner_limit().  Unlike ALTER ROLE ... SET, they apply after
-- SET ROLE, which is how PostgREST becomes the request's role.
\set SHOW_CONTEXT never
CREATE EXTENSION iapi_tokens;
CREATE ROLE regress_limit_alice;
CREATE ROLE regress_limit_bob;
GRANT EXECUTE ON FUNCTION iapi_tokens.create_access_token(integer, text, text[], jsonb, integer, interval),
	iapi_tokens.delete_access_token(uuid)
  TO regress_limit_alice, regress_limit_bob;

-- A role setting does not follow SET ROLE: this is the gap the table closes.
ALTER ROLE regress_limit_alice SET iapi_tokens.max_tokens_per_owner = 1;
SET ROLE regress_limit_alice;
SHOW iapi_tokens.max_tokens_per_owner;
RESET ROLE;
ALTER ROLE regress_limit_alice RESET iapi_tokens.max_tokens_per_owner;

-- alice may hold one active token, bob is unlimited.
SELECT iapi_tokens.set_owner_limit('regress_limit_alice', 1);
SELECT owner_role, max_tokens FROM iapi_tokens.owner_limits;
SET ROLE regress_limit_alice;
SELECT token_id AS a1 FROM iapi_tokens.create_access_token(60, 'first') \gset
SELECT * FROM iapi_tokens.create_access_token(60, 'second');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SET ROLE regress_limit_bob;
SELECT count(*) AS bob_created
  FROM generate_series(1, 3), LATERAL iapi_tokens.create_access_token(60) t;
RESET ROLE;

-- The role's own limit wins over the setting, both ways.
SET iapi_tokens.max_tokens_per_owner = 5;
SET ROLE regress_limit_alice;
SELECT * FROM iapi_tokens.create_access_token(60, 'still one');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SET iapi_tokens.max_tokens_per_owner = 2;
SELECT iapi_tokens.set_owner_limit('regress_limit_bob', 0);		-- 0: no limit
SET ROLE regress_limit_bob;
SELECT count(*) AS bob_fourth FROM iapi_tokens.create_access_token(60);
RESET ROLE;

-- NULL removes the row: the setting applies again (2 here; bob has 4).
SELECT iapi_tokens.set_owner_limit('regress_limit_bob', NULL);
SELECT count(*) AS rows_left FROM iapi_tokens.owner_limits;
SET ROLE regress_limit_bob;
SELECT * FROM iapi_tokens.create_access_token(60);
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
RESET iapi_tokens.max_tokens_per_owner;

-- Raising alice's limit lets her in again; deleting a token frees a place.
SELECT iapi_tokens.set_owner_limit('regress_limit_alice', 2);
SET ROLE regress_limit_alice;
SELECT count(*) AS alice_second FROM iapi_tokens.create_access_token(60, 'second');
SELECT iapi_tokens.delete_access_token(:'a1');
SELECT count(*) AS alice_third FROM iapi_tokens.create_access_token(60, 'third');
RESET ROLE;

-- Bad input
SELECT iapi_tokens.set_owner_limit(NULL, 1);
\echo :LAST_ERROR_SQLSTATE
SELECT iapi_tokens.set_owner_limit('regress_limit_alice', -1);
\echo :LAST_ERROR_SQLSTATE
SELECT iapi_tokens.set_owner_limit('no_such_role', 1);
\echo :LAST_ERROR_SQLSTATE
-- A direct write is held to the same rule.
INSERT INTO iapi_tokens.owner_limits VALUES ('regress_limit_bob', -3);
\echo :LAST_ERROR_SQLSTATE

-- Only the owner, or a role granted it, sets limits.
SET ROLE regress_limit_alice;
SELECT iapi_tokens.set_owner_limit('regress_limit_alice', 100);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM iapi_tokens.owner_limits;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

-- pg_dump keeps the limits.
SELECT 'iapi_tokens.owner_limits'::regclass = ANY (extconfig) AS dumped
  FROM pg_extension WHERE extname = 'iapi_tokens';

DROP EXTENSION iapi_tokens;
DROP ROLE regress_limit_alice;
DROP ROLE regress_limit_bob;
