-- Token format, checksum rejection and hashing.
\set SHOW_CONTEXT never
CREATE EXTENSION iapi_tokens;
SELECT iapi_tokens.create_source('format_source') AS sid \gset
SELECT id AS tid, access_token AS tok FROM iapi_tokens.generate_token(:sid) \gset

-- iapi_, then 33 base62 random characters, then a 6-character checksum.
SELECT :'tok' ~ '^iapi_[0-9A-Za-z]{39}$' AS well_formed, length(:'tok') AS length;

-- Two tokens never share their random part.
SELECT access_token AS tok2 FROM iapi_tokens.generate_token(
	iapi_tokens.create_source('format_source_2')) \gset
SELECT substr(:'tok', 6, 33) <> substr(:'tok2', 6, 33) AS distinct_bodies;

-- Stored: the SHA-256 of the token and a short display prefix, nothing else.
SELECT t.token_hash = digest(:'tok', 'sha256') AS hash_is_sha256,
	   t.display_prefix = left(:'tok', 9) AS display_prefix_is_prefix_plus_4,
	   octet_length(t.token_hash) AS hash_bytes
  FROM iapi_tokens.tokens t WHERE t.id = :tid;
SELECT count(*) AS rows_holding_plaintext
  FROM iapi_tokens.tokens t
 WHERE strpos(t::text, substr(:'tok', 10)) > 0
	OR strpos(encode(t.token_hash, 'escape'), substr(:'tok', 10)) > 0;

-- hash_token is pgcrypto's digest(..., 'sha256'), for any text.
SELECT x = '' AS empty, iapi_tokens.hash_token(x) = digest(x, 'sha256') AS same
  FROM (VALUES (''), ('abc'), ('ünïcødé ✓'), (repeat('x', 100000)), (:'tok')) v(x);
SELECT encode(iapi_tokens.hash_token('abc'), 'hex') AS sha256_abc;
SELECT iapi_tokens.hash_token(NULL) IS NULL AS strict;

-- A valid token verifies.
SELECT token_id = :tid AS same_token, source_id = :sid AS same_source,
	   expires_at IS NULL AS never_expires
  FROM iapi_tokens.verify_token(:'tok');

-- A checksum mismatch is rejected before the lookup: plant a row whose hash
-- is that of a token with a bad checksum; verify_token must still refuse it.
SELECT left(:'tok', 5) || translate(substr(:'tok', 6, 1), '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz', '123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0') || substr(:'tok', 7) AS bad_body \gset
SELECT left(:'tok', -1) || CASE right(:'tok', 1) WHEN 'z' THEN 'y' ELSE 'z' END AS bad_checksum \gset
SELECT iapi_tokens.create_source('planted') AS planted_sid \gset
INSERT INTO iapi_tokens.tokens (source_id, token_hash, display_prefix)
VALUES (:planted_sid, iapi_tokens.hash_token(:'bad_body'), 'planted'),
	   (:planted_sid, iapi_tokens.hash_token(:'bad_checksum'), 'planted');
SELECT count(*) AS bad_body_rows FROM iapi_tokens.verify_token(:'bad_body');
SELECT count(*) AS bad_checksum_rows FROM iapi_tokens.verify_token(:'bad_checksum');

-- Malformed input of every kind: no row, and no error.
SELECT label, (SELECT count(*) FROM iapi_tokens.verify_token(candidate)) AS rows
  FROM (VALUES
	('empty', ''),
	('prefix only', 'iapi_'),
	('one char short', left(:'tok', -1)),
	('one char long', :'tok' || 'a'),
	('leading space', ' ' || :'tok'),
	('trailing newline', :'tok' || E'\n'),
	('lower-cased', lower(:'tok')),
	('upper-cased', upper(:'tok')),
	('dash in body', left(:'tok', 10) || '-' || substr(:'tok', 12)),
	('no underscore', 'iapi' || substr(:'tok', 6)),
	('prefix with dash', 'ia-pi_' || substr(:'tok', 6)),
	('prefix too long', repeat('a', 32) || '_' || substr(:'tok', 6)),
	('non-ascii', 'iapí_' || substr(:'tok', 6)),
	('all zero body', 'iapi_' || repeat('0', 39)),
	('all z body (overflow)', 'iapi_' || repeat('z', 39)),
	('sql injection', ''' OR 1=1 --'),
	('1 MB', repeat('a', 1000000))
  ) v(label, candidate);
SELECT count(*) AS null_rows FROM iapi_tokens.verify_token(NULL);
-- A toasted 1 MB value is rejected by its size, without being detoasted.
CREATE TEMP TABLE big AS SELECT repeat('iapi_', 200000) AS candidate;
SELECT count(*) AS toasted_rows FROM big, iapi_tokens.verify_token(big.candidate);

-- Every way of calling it works: target list, LATERAL, PL/pgSQL, a STABLE
-- SQL function, and a prepared statement past its switch to a generic plan.
SELECT (iapi_tokens.verify_token(:'tok')).token_id = :tid AS target_list;
SELECT count(*) AS lateral_rows
  FROM (VALUES (:'tok'), ('iapi_nope'), (NULL)) v(t), LATERAL iapi_tokens.verify_token(t);
DO $$
DECLARE r record;
BEGIN
	SELECT * INTO r FROM iapi_tokens.verify_token('iapi_nope');
	RAISE NOTICE 'plpgsql: found = %', FOUND;
END $$;
CREATE FUNCTION pg_temp.token_owner(t text) RETURNS bigint LANGUAGE sql STABLE
	AS $$ SELECT source_id FROM iapi_tokens.verify_token(t) $$;
SELECT pg_temp.token_owner(:'tok') = :sid AS from_stable_function;
PREPARE verify_stmt(text) AS SELECT token_id FROM iapi_tokens.verify_token($1);
EXECUTE verify_stmt(:'tok');
EXECUTE verify_stmt(:'tok');
EXECUTE verify_stmt(:'tok');
EXECUTE verify_stmt(:'tok');
EXECUTE verify_stmt(:'tok');
EXECUTE verify_stmt(:'tok');
EXECUTE verify_stmt('iapi_nope');
DEALLOCATE verify_stmt;

-- The prefix is set by the superuser; tokens made under an old prefix still
-- verify, because the hash covers the whole token.
SHOW iapi_tokens.token_prefix;
SET iapi_tokens.token_prefix = 'sk_live_';
SELECT iapi_tokens.create_source('live') AS live_sid \gset
SELECT access_token AS live_tok FROM iapi_tokens.generate_token(:live_sid) \gset
SELECT :'live_tok' ~ '^sk_live_[0-9A-Za-z]{39}$' AS new_prefix;
SELECT count(*) AS new_prefix_verifies FROM iapi_tokens.verify_token(:'live_tok');
SELECT count(*) AS old_prefix_still_verifies FROM iapi_tokens.verify_token(:'tok');
SELECT display_prefix ~ '^sk_live_[0-9A-Za-z]{4}$' AS display_prefix
  FROM iapi_tokens.tokens WHERE source_id = :live_sid;
RESET iapi_tokens.token_prefix;
SELECT count(*) AS still_verifies_after_reset FROM iapi_tokens.verify_token(:'live_tok');

DROP EXTENSION iapi_tokens;
