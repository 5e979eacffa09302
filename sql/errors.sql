-- Every error the extension raises: a clear message and a specific SQLSTATE.
\set SHOW_CONTEXT never
CREATE EXTENSION iapi_tokens;
SELECT iapi_tokens.create_source('errors_source', NULL, 1) AS sid \gset
SELECT iapi_tokens.create_source('other_source', NULL, 1) AS other_sid \gset
SELECT id AS other_tid FROM iapi_tokens.generate_token(:other_sid) \gset

-- create_source
SELECT iapi_tokens.create_source(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT iapi_tokens.create_source('Bad Name');
\echo :LAST_ERROR_SQLSTATE
SELECT iapi_tokens.create_source('');
\echo :LAST_ERROR_SQLSTATE
SELECT iapi_tokens.create_source(repeat('n', 64));
\echo :LAST_ERROR_SQLSTATE
SELECT iapi_tokens.create_source('long_display', repeat('d', 256));
\echo :LAST_ERROR_SQLSTATE
SELECT iapi_tokens.create_source('empty_display', '');
\echo :LAST_ERROR_SQLSTATE
SELECT iapi_tokens.create_source('errors_source', NULL, 1);
\echo :LAST_ERROR_SQLSTATE
-- The same name under another client is fine, and 63 characters is the limit.
SELECT iapi_tokens.create_source('errors_source', NULL, 2) IS NOT NULL AS other_client_ok;
SELECT iapi_tokens.create_source(repeat('n', 63)) IS NOT NULL AS max_length_ok;

-- source_json
SELECT iapi_tokens.source_json(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT iapi_tokens.source_json(-1);
\echo :LAST_ERROR_SQLSTATE

-- generate_token
SELECT * FROM iapi_tokens.generate_token(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM iapi_tokens.generate_token(-1);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM iapi_tokens.generate_token(:sid, NULL, '0 seconds');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM iapi_tokens.generate_token(:sid, NULL, '-5 minutes');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM iapi_tokens.generate_token(:sid, NULL, '1 month -31 days');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM iapi_tokens.generate_token(:sid, NULL, '300000 years');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM iapi_tokens.generate_token(:sid, repeat('d', 256));
\echo :LAST_ERROR_SQLSTATE
-- 255 characters is the limit, counted in characters, not bytes.
SELECT count(*) AS max_description_ok
  FROM iapi_tokens.generate_token(:sid, repeat('é', 255));
SELECT id AS tid FROM iapi_tokens.generate_token(:sid) \gset
SELECT * FROM iapi_tokens.generate_token(:sid);
\echo :LAST_ERROR_SQLSTATE
-- Nothing was stored by the failed calls.
SELECT count(*) AS stored FROM iapi_tokens.tokens WHERE source_id = :sid;

-- list_tokens and list_token_details
SELECT * FROM iapi_tokens.list_tokens(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM iapi_tokens.list_tokens(-1);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM iapi_tokens.list_token_details(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM iapi_tokens.list_token_details(-1);
\echo :LAST_ERROR_SQLSTATE

-- revoke_token
SELECT iapi_tokens.revoke_token(NULL, :tid);
\echo :LAST_ERROR_SQLSTATE
SELECT iapi_tokens.revoke_token(:sid, NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT iapi_tokens.revoke_token(-1, :tid);
\echo :LAST_ERROR_SQLSTATE
SELECT iapi_tokens.revoke_token(:sid, -1);
\echo :LAST_ERROR_SQLSTATE
-- Another source's token gets the same answer as a token that does not exist.
SELECT iapi_tokens.revoke_token(:sid, :other_tid);
\echo :LAST_ERROR_SQLSTATE
SELECT iapi_tokens.revoke_token(:sid, :tid) IS NOT NULL AS revoked;
SELECT iapi_tokens.revoke_token(:sid, :tid);
\echo :LAST_ERROR_SQLSTATE

-- delete_source
SELECT iapi_tokens.delete_source(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT iapi_tokens.delete_source(-1);
\echo :LAST_ERROR_SQLSTATE
SELECT iapi_tokens.delete_source(:sid) IS NOT NULL AS deleted;
SELECT iapi_tokens.delete_source(:sid);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM iapi_tokens.generate_token(:sid);
\echo :LAST_ERROR_SQLSTATE
-- ...not even one that expires at once; nor does a source that does not exist.
SELECT * FROM iapi_tokens.generate_token(:sid, NULL, '1 microsecond');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM iapi_tokens.generate_token(-1, NULL, '1 microsecond');
\echo :LAST_ERROR_SQLSTATE

-- A user trigger that silently skips the insert: no token may be handed out.
CREATE FUNCTION public.skip_insert() RETURNS trigger LANGUAGE plpgsql
AS $$ BEGIN RETURN NULL; END $$;
CREATE TRIGGER skip_insert BEFORE INSERT ON iapi_tokens.tokens
	FOR EACH ROW EXECUTE FUNCTION public.skip_insert();
SELECT * FROM iapi_tokens.generate_token(:other_sid);
\echo :LAST_ERROR_SQLSTATE
DROP TRIGGER skip_insert ON iapi_tokens.tokens;
DROP FUNCTION public.skip_insert();

-- Direct DML on the table meets the same rules.
INSERT INTO iapi_tokens.tokens (source_id, token_hash, display_prefix)
VALUES (-1, sha256('x'), 'x');
\echo :LAST_ERROR_SQLSTATE
-- (terse: the failing row's detail holds timestamps)
\set VERBOSITY terse
INSERT INTO iapi_tokens.tokens (source_id, token_hash, display_prefix)
VALUES (:other_sid, 'short', 'x');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO iapi_tokens.tokens (source_id, token_hash, display_prefix)
VALUES (:other_sid, sha256('y'), 'y'), (:other_sid, sha256('z'), 'z');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO iapi_tokens.sources (name, display_name) VALUES ('Upper', 'x');
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY default

DROP EXTENSION iapi_tokens;
