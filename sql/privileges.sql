-- Privileges: PUBLIC may verify and hash and nothing else; the management
-- functions need explicit grants; nobody but the owner reads the tables.
\set SHOW_CONTEXT never
CREATE EXTENSION iapi_tokens;
SELECT iapi_tokens.create_source('privileges_source') AS sid \gset
SELECT id AS tid, access_token AS tok FROM iapi_tokens.generate_token(:sid) \gset

CREATE ROLE regress_iapi_app NOLOGIN;
CREATE ROLE regress_iapi_nobody NOLOGIN;

-- An unprivileged role can verify (and its use is recorded) and hash.
SET iapi_tokens.last_used_interval = 0;
SET ROLE regress_iapi_nobody;
SELECT token_id = :tid AS verified FROM iapi_tokens.verify_token(:'tok');
SELECT count(*) AS bad_token_rows FROM iapi_tokens.verify_token('iapi_nope');
SELECT octet_length(iapi_tokens.hash_token('x')) AS hash_bytes;

-- ...and nothing else.
SELECT * FROM iapi_tokens.generate_token(:sid);
\echo :LAST_ERROR_SQLSTATE
SELECT iapi_tokens.create_source('nope');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM iapi_tokens.list_tokens(:sid);
\echo :LAST_ERROR_SQLSTATE
SELECT iapi_tokens.revoke_token(:sid, :tid);
\echo :LAST_ERROR_SQLSTATE
SELECT iapi_tokens.delete_source(:sid);
\echo :LAST_ERROR_SQLSTATE
SELECT iapi_tokens.source_json(:sid);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM iapi_tokens.list_sources();
\echo :LAST_ERROR_SQLSTATE
SELECT token_hash FROM iapi_tokens.tokens;
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM iapi_tokens.sources;
\echo :LAST_ERROR_SQLSTATE
UPDATE iapi_tokens.tokens SET revoked_at = NULL;
\echo :LAST_ERROR_SQLSTATE
SELECT nextval('iapi_tokens.token_id_seq');
\echo :LAST_ERROR_SQLSTATE
-- Security settings are the superuser's.
SET iapi_tokens.token_prefix = 'evil_';
\echo :LAST_ERROR_SQLSTATE
SET iapi_tokens.last_used_interval = -1;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
-- Once the usage flush has run (bounded wait):
DO $$
BEGIN
	FOR i IN 1..300 LOOP
		EXIT WHEN (SELECT uses_pending FROM iapi_tokens.usage_stats()) = 0;
		PERFORM pg_sleep(0.1);
	END LOOP;
END
$$;
SELECT last_used_at IS NOT NULL AS use_recorded_for_unprivileged_caller
  FROM iapi_tokens.tokens WHERE id = :tid;

-- The grants an application role needs (as in README.md).
GRANT EXECUTE ON FUNCTION
	iapi_tokens.create_source(text, text, bigint),
	iapi_tokens.source_json(bigint),
	iapi_tokens.list_sources(bigint),
	iapi_tokens.delete_source(bigint),
	iapi_tokens.generate_token(bigint, text, interval, text[], jsonb, integer, interval),
	iapi_tokens.list_tokens(bigint),
	iapi_tokens.list_token_details(bigint, boolean),
	iapi_tokens.revoke_token(bigint, bigint)
	TO regress_iapi_app;

SET ROLE regress_iapi_app;
SELECT iapi_tokens.create_source('app_source') AS app_sid \gset
SELECT id AS app_tid, access_token AS app_tok
  FROM iapi_tokens.generate_token(:app_sid) \gset
SELECT count(*) AS listed FROM iapi_tokens.list_tokens(:app_sid);
SELECT count(*) AS verified FROM iapi_tokens.verify_token(:'app_tok');
SELECT iapi_tokens.revoke_token(:app_sid, :app_tid)->>'name' AS revoked_on;
-- Still no direct access to the tables or the hashes.
SELECT token_hash FROM iapi_tokens.tokens;
\echo :LAST_ERROR_SQLSTATE

-- A hostile search_path cannot hijack the extension's operators: an
-- always-true "=" in the caller's schema, found before pg_catalog.
RESET ROLE;
CREATE SCHEMA hostile AUTHORIZATION regress_iapi_app;
SET ROLE regress_iapi_app;
CREATE FUNCTION hostile.always_equal(bigint, bigint) RETURNS boolean
	LANGUAGE plpgsql AS $$ BEGIN RAISE NOTICE 'hijacked'; RETURN true; END $$;
CREATE OPERATOR hostile.= (LEFTARG = bigint, RIGHTARG = bigint,
						   FUNCTION = hostile.always_equal);
SET search_path = hostile, pg_catalog;
SELECT id AS app_tid2, access_token AS app_tok2
  FROM iapi_tokens.generate_token(:app_sid) \gset
SELECT count(*) AS verified FROM iapi_tokens.verify_token(:'app_tok2');
SELECT count(*) AS listed FROM iapi_tokens.list_tokens(:app_sid);
SELECT iapi_tokens.revoke_token(:app_sid, :app_tid2) IS NOT NULL AS revoked;
RESET search_path;
RESET ROLE;
-- Only the intended row was touched.
DO $$
BEGIN
	FOR i IN 1..300 LOOP
		EXIT WHEN (SELECT uses_pending FROM iapi_tokens.usage_stats()) = 0;
		PERFORM pg_sleep(0.1);
	END LOOP;
END
$$;
SELECT count(*) FILTER (WHERE last_used_at IS NOT NULL) AS used,
	   count(*) FILTER (WHERE revoked_at IS NOT NULL) AS revoked
  FROM iapi_tokens.tokens WHERE source_id = :app_sid;
SELECT count(*) AS other_tokens_untouched
  FROM iapi_tokens.tokens WHERE source_id = :sid AND revoked_at IS NULL;

RESET iapi_tokens.last_used_interval;
DROP SCHEMA hostile CASCADE;
DROP EXTENSION iapi_tokens;
DROP ROLE regress_iapi_app;
DROP ROLE regress_iapi_nobody;
