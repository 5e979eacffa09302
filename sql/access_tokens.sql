-- Personal access tokens (Trifacta v4 apiAccessTokens): the seed's example,
-- tokens that never expire, every error, owner isolation between two roles,
-- the admin functions, verification and the per-owner limit.
\set SHOW_CONTEXT never
CREATE EXTENSION iapi_tokens;

CREATE ROLE regress_iapi_alice NOLOGIN;
CREATE ROLE regress_iapi_bob NOLOGIN;
CREATE ROLE regress_iapi_admin NOLOGIN;
CREATE ROLE "regress_iapi_Mixed Case" NOLOGIN;
GRANT EXECUTE ON FUNCTION
	iapi_tokens.create_access_token(integer, text, text[], jsonb, integer, interval),
	iapi_tokens.list_access_tokens(),
	iapi_tokens.get_access_token(uuid),
	iapi_tokens.delete_access_token(uuid),
	iapi_tokens.rotate_access_token(uuid, interval)
TO regress_iapi_alice, regress_iapi_bob, "regress_iapi_Mixed Case";
GRANT EXECUTE ON FUNCTION
	iapi_tokens.list_all_access_tokens(),
	iapi_tokens.revoke_access_token(uuid)
TO regress_iapi_admin;

-- The seed: POST /v4/apiAccessTokens {"lifetimeSeconds": 100, "description":
-- "My 100-second token"}.  expiredAt is createdAt + 100 s; lastUsed is null.
SET ROLE regress_iapi_alice;
SELECT token_value AS a_tok, token_id AS a_id
  FROM iapi_tokens.create_access_token(100, 'My 100-second token') \gset
SELECT :'a_tok' ~ '^iapi_[0-9A-Za-z]{39}$' AS token_value_well_formed,
	   :'a_id' ~ '^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$' AS token_id_is_uuid_v4;
SELECT description, expired_at - created_at AS lifetime, last_used IS NULL AS never_used
  FROM iapi_tokens.get_access_token(:'a_id');

-- The first use sets lastUsed once the usage flush has run (bounded wait).
SELECT owner, access_token_id = :'a_id' AS same_id, source_id IS NULL AS no_source
  FROM iapi_tokens.verify_token(:'a_tok');
RESET ROLE;
DO $$
BEGIN
	FOR i IN 1..300 LOOP
		EXIT WHEN (SELECT uses_pending FROM iapi_tokens.usage_stats()) = 0;
		PERFORM pg_sleep(0.1);
	END LOOP;
END
$$;
SET ROLE regress_iapi_alice;
SELECT last_used IS NOT NULL AS used FROM iapi_tokens.get_access_token(:'a_id');

-- lifetimeSeconds -1: the token never expires (expiredAt is null).
SELECT token_value AS forever_tok, token_id AS forever_id
  FROM iapi_tokens.create_access_token(-1) \gset
SELECT description IS NULL AS no_description, expired_at IS NULL AS never_expires
  FROM iapi_tokens.get_access_token(:'forever_id');
SELECT expires_at IS NULL AS never_expires FROM iapi_tokens.verify_token(:'forever_tok');

-- The list: the caller's tokens, newest first.
SELECT token_id = :'forever_id' AS newest_first, description
  FROM iapi_tokens.list_access_tokens();

-- The plaintext is shown once: nothing stored holds it.
RESET ROLE;
SELECT count(*) AS rows_holding_plaintext
  FROM iapi_tokens.tokens t
 WHERE strpos(t::text, substr(:'a_tok', 10)) > 0;
SELECT token_hash = iapi_tokens.hash_token(:'a_tok') AS stored_as_sha256
  FROM iapi_tokens.tokens WHERE token_uuid = :'a_id';

-- Owner isolation: bob sees none of alice's tokens, and cannot read, delete
-- or rotate them; the error is the one for a token that does not exist.
SET ROLE regress_iapi_bob;
SELECT count(*) AS bob_sees FROM iapi_tokens.list_access_tokens();
SELECT * FROM iapi_tokens.get_access_token('00000000-0000-4000-8000-000000000000');
\echo :LAST_ERROR_SQLSTATE
-- (The messages name random uuids, so only the SQLSTATE is shown.)
\set VERBOSITY sqlstate
SELECT * FROM iapi_tokens.get_access_token(:'a_id');
\echo :LAST_ERROR_SQLSTATE
SELECT iapi_tokens.delete_access_token(:'a_id');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM iapi_tokens.rotate_access_token(:'a_id');
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY default
SELECT token_id AS b_id, token_value AS b_tok
  FROM iapi_tokens.create_access_token(3600, 'bob''s') \gset
SELECT description FROM iapi_tokens.list_access_tokens();
-- Tables stay closed to the roles.
SELECT count(*) FROM iapi_tokens.tokens;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

SET ROLE regress_iapi_alice;
SELECT count(*) AS alice_sees, bool_and(description IS DISTINCT FROM 'bob''s') AS none_of_bobs
  FROM iapi_tokens.list_access_tokens();
\set VERBOSITY sqlstate
SELECT * FROM iapi_tokens.get_access_token(:'b_id');
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY default
RESET ROLE;

-- The owner is current_user as the caller sees it: through a SECURITY
-- DEFINER wrapper owned by bob, alice creates a token that bob owns.
CREATE FUNCTION public.bob_makes_token() RETURNS uuid
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog
RETURN (SELECT token_id FROM iapi_tokens.create_access_token(60, 'via wrapper'));
ALTER FUNCTION public.bob_makes_token() OWNER TO regress_iapi_bob;
SET ROLE regress_iapi_alice;
SELECT public.bob_makes_token() AS wrapped_id \gset
SELECT count(*) AS alice_got_it FROM iapi_tokens.list_access_tokens()
 WHERE token_id = :'wrapped_id';
RESET ROLE;
SELECT owner_role FROM iapi_tokens.tokens WHERE token_uuid = :'wrapped_id';
DROP FUNCTION public.bob_makes_token();

-- Role names are taken exactly, quoting and case included.
SET ROLE "regress_iapi_Mixed Case";
SELECT token_value AS mixed_tok FROM iapi_tokens.create_access_token(60) \gset
SELECT count(*) AS mixed_sees FROM iapi_tokens.list_access_tokens();
RESET ROLE;
SELECT owner FROM iapi_tokens.verify_token(:'mixed_tok');

-- Row-level security: a role granted SELECT on the table directly still sees
-- only its own personal tokens, and no source token.
SELECT iapi_tokens.create_source('rls_source') AS sid \gset
SELECT access_token AS source_tok FROM iapi_tokens.generate_token(:sid) \gset
GRANT SELECT ON iapi_tokens.tokens TO regress_iapi_alice;
SET ROLE regress_iapi_alice;
SELECT count(*) AS rows_visible, bool_and(owner_role = 'regress_iapi_alice'::regrole) AS all_hers
  FROM iapi_tokens.tokens;
RESET ROLE;
REVOKE SELECT ON iapi_tokens.tokens FROM regress_iapi_alice;

-- Deleting: the token stops verifying and leaves the list; a second delete,
-- like a get, finds nothing.
SET ROLE regress_iapi_alice;
SELECT * FROM iapi_tokens.delete_access_token(:'forever_id');	-- the FROM form works too
SELECT count(*) AS verifies FROM iapi_tokens.verify_token(:'forever_tok');
SELECT count(*) AS listed FROM iapi_tokens.list_access_tokens() WHERE token_id = :'forever_id';
\set VERBOSITY sqlstate
SELECT iapi_tokens.delete_access_token(:'forever_id');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM iapi_tokens.get_access_token(:'forever_id');
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY default
RESET ROLE;

-- A one-second token verifies, then, once expired, does not; it stays listed
-- with its expiredAt in the past until it is deleted.
SET ROLE regress_iapi_alice;
SELECT token_value AS short_tok, token_id AS short_id
  FROM iapi_tokens.create_access_token(1, 'one second') \gset
SELECT count(*) AS before_expiry FROM iapi_tokens.verify_token(:'short_tok');
SELECT pg_sleep(1.2);
SELECT count(*) AS after_expiry FROM iapi_tokens.verify_token(:'short_tok');
SELECT expired_at < now() AS listed_as_expired FROM iapi_tokens.list_access_tokens()
 WHERE token_id = :'short_id';
RESET ROLE;

-- The admin privilege (EXECUTE on list_all_access_tokens and
-- revoke_access_token) sees and revokes everyone's tokens.
SET ROLE regress_iapi_admin;
SELECT owner, count(*) FROM iapi_tokens.list_all_access_tokens()
 GROUP BY owner ORDER BY owner::text;
SELECT iapi_tokens.revoke_access_token(:'b_id');
\set VERBOSITY sqlstate
SELECT iapi_tokens.revoke_access_token(:'b_id');
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY default
SELECT * FROM iapi_tokens.list_access_tokens();
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SELECT count(*) AS bob_token_verifies FROM iapi_tokens.verify_token(:'b_tok');
-- ...and the others do not have it.
SET ROLE regress_iapi_bob;
SELECT * FROM iapi_tokens.list_all_access_tokens();
\echo :LAST_ERROR_SQLSTATE
SELECT iapi_tokens.revoke_access_token(:'a_id');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

-- PUBLIC cannot create personal tokens: EXECUTE is granted deliberately.
CREATE ROLE regress_iapi_nobody NOLOGIN;
SET ROLE regress_iapi_nobody;
SELECT * FROM iapi_tokens.create_access_token(60);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM iapi_tokens.list_access_tokens();
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

-- Errors.
SET ROLE regress_iapi_alice;
SELECT * FROM iapi_tokens.create_access_token(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM iapi_tokens.create_access_token(0);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM iapi_tokens.create_access_token(-2);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM iapi_tokens.create_access_token(-2147483648);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM iapi_tokens.create_access_token(60, repeat('d', 256));
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM iapi_tokens.get_access_token(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT iapi_tokens.delete_access_token(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM iapi_tokens.get_access_token('not-a-uuid');
\echo :LAST_ERROR_SQLSTATE
-- The largest lifetime is accepted.
SELECT expired_at - created_at AS longest
  FROM iapi_tokens.create_access_token(2147483647, 'longest');
-- Only a superuser sets the limits.
SET iapi_tokens.max_lifetime = '1d';
\echo :LAST_ERROR_SQLSTATE
SET iapi_tokens.max_tokens_per_owner = 100;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

-- iapi_tokens.max_lifetime caps lifetimes, and then refuses -1.
SET iapi_tokens.max_lifetime = '1d';
SET ROLE regress_iapi_alice;
SELECT expired_at - created_at AS one_day
  FROM iapi_tokens.create_access_token(86400, 'a day');
SELECT * FROM iapi_tokens.create_access_token(86401);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM iapi_tokens.create_access_token(-1);
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
RESET iapi_tokens.max_lifetime;
-- iapi_tokens.max_tokens_per_owner caps active tokens per role; deleted
-- (and revoked) ones do not count, and other roles are not affected.
SET iapi_tokens.max_tokens_per_owner = 2;
SET ROLE regress_iapi_bob;
SELECT count(*) AS bob_active FROM iapi_tokens.list_access_tokens();
SELECT token_id AS b1 FROM iapi_tokens.create_access_token(60, 'b1') \gset
SELECT * FROM iapi_tokens.create_access_token(60, 'b2');
\echo :LAST_ERROR_SQLSTATE
SELECT iapi_tokens.delete_access_token(:'b1');
SELECT count(*) AS after_delete FROM iapi_tokens.create_access_token(60, 'b2');
RESET ROLE;
SET ROLE "regress_iapi_Mixed Case";
SELECT count(*) AS others_unaffected FROM iapi_tokens.create_access_token(60);
RESET ROLE;
RESET iapi_tokens.max_tokens_per_owner;

-- A token whose owner role was dropped verifies no more.
CREATE ROLE regress_iapi_gone NOLOGIN;
GRANT EXECUTE ON FUNCTION iapi_tokens.create_access_token(integer, text, text[], jsonb, integer, interval) TO regress_iapi_gone;
SET ROLE regress_iapi_gone;
SELECT token_value AS gone_tok FROM iapi_tokens.create_access_token(-1) \gset
RESET ROLE;
SELECT count(*) AS verifies_before FROM iapi_tokens.verify_token(:'gone_tok');
REVOKE EXECUTE ON FUNCTION iapi_tokens.create_access_token(integer, text, text[], jsonb, integer, interval) FROM regress_iapi_gone;
DROP ROLE regress_iapi_gone;
SELECT count(*) AS verifies_after FROM iapi_tokens.verify_token(:'gone_tok');
-- purge_tokens revokes it, so that no dump carries it live...
SELECT count(*) AS live_orphans FROM iapi_tokens.tokens
 WHERE owner_role IS NOT NULL AND revoked_at IS NULL
   AND NOT EXISTS (SELECT FROM pg_roles r WHERE r.oid = owner_role);
SELECT iapi_tokens.purge_tokens('1 day') AS purged;
SELECT count(*) AS live_orphans FROM iapi_tokens.tokens
 WHERE owner_role IS NOT NULL AND revoked_at IS NULL
   AND NOT EXISTS (SELECT FROM pg_roles r WHERE r.oid = owner_role);
-- ...and a row that arrives with an owner that does not exist (a restore
-- writes a dropped role as a bare OID, which a later role could receive) is
-- stored revoked.
INSERT INTO iapi_tokens.tokens (owner_role, token_uuid, token_hash, display_prefix)
VALUES ('4000000000', gen_random_uuid(), iapi_tokens.hash_token('orphan'), 'iapi_orph');
SELECT revoked_at IS NOT NULL AS stored_revoked FROM iapi_tokens.tokens
 WHERE token_hash = iapi_tokens.hash_token('orphan');

-- Both families share one table and one check: a row is one or the other.
\set VERBOSITY terse
INSERT INTO iapi_tokens.tokens (token_hash, display_prefix)
VALUES (iapi_tokens.hash_token('x'), 'iapi_xxxx');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO iapi_tokens.tokens (source_id, owner_role, token_uuid, token_hash, display_prefix)
VALUES (:sid, 'regress_iapi_alice', gen_random_uuid(), iapi_tokens.hash_token('y'), 'iapi_yyyy');
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY default

DROP EXTENSION iapi_tokens;
DROP ROLE regress_iapi_alice;
DROP ROLE regress_iapi_bob;
DROP ROLE regress_iapi_admin;
DROP ROLE "regress_iapi_Mixed Case";
DROP ROLE regress_iapi_nobody;
