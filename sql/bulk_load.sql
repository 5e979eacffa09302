-- Loading data in any order, as pg_restore -j does: triggers stand in for
-- the foreign key from tokens to sources, COPY takes rows as they are, and
-- check_tokens() reports what breaks the rules once the load is complete.
\set SHOW_CONTEXT never
CREATE EXTENSION iapi_tokens;
CREATE ROLE regress_bulk_owner;

-- An INSERT still needs its source; a COPY may come before it.
INSERT INTO iapi_tokens.tokens (source_id, token_hash, display_prefix)
VALUES (4242, iapi_tokens.hash_token('x'), 'iapi_x');
\echo :LAST_ERROR_SQLSTATE
COPY iapi_tokens.tokens (id, source_id, token_hash, display_prefix, created_at) FROM stdin;
900	4242	\\x0000000000000000000000000000000000000000000000000000000000000001	iapi_aaaa	2026-01-01 00:00:00+00
901	4242	\\x0000000000000000000000000000000000000000000000000000000000000002	iapi_bbbb	2026-01-01 00:00:00+00
902	4242	\\x0000000000000000000000000000000000000000000000000000000000000003	iapi_cccc	2026-01-01 00:00:00+00
\.
-- Three active tokens of a source that does not exist (yet): both reported.
SELECT * FROM iapi_tokens.check_tokens();
-- The sources arrive: only the cap is left to report.
COPY iapi_tokens.sources (id, name, display_name) FROM stdin;
4242	late_source	Late source
\.
SELECT * FROM iapi_tokens.check_tokens();
UPDATE iapi_tokens.tokens SET revoked_at = now() WHERE id = 902;
SELECT count(*) AS all_well FROM iapi_tokens.check_tokens();

-- Per-role limits are reported too.
COPY iapi_tokens.owner_limits FROM stdin;
regress_bulk_owner	1
\.
COPY iapi_tokens.tokens (id, owner_role, token_uuid, token_hash, display_prefix) FROM stdin;
910	regress_bulk_owner	00000000-0000-4000-8000-000000000001	\\x0000000000000000000000000000000000000000000000000000000000000011	iapi_dddd
911	regress_bulk_owner	00000000-0000-4000-8000-000000000002	\\x0000000000000000000000000000000000000000000000000000000000000012	iapi_eeee
\.
SELECT * FROM iapi_tokens.check_tokens();
-- A bulk load records no audit event: the rows are not new tokens.  The
-- one event is the revocation by UPDATE above.
SELECT action, token_id FROM iapi_tokens.audit;
-- A row-level CHECK still holds during a load.
COPY iapi_tokens.tokens (id, token_hash, display_prefix, created_at) FROM stdin;
920	\\x0000000000000000000000000000000000000000000000000000000000000021	iapi_ffff	2026-01-01 00:00:00+00
\.

-- A source that tokens refer to keeps its row and its id.
DELETE FROM iapi_tokens.sources WHERE id = 4242;
\echo :LAST_ERROR_SQLSTATE
UPDATE iapi_tokens.sources SET id = 4243 WHERE id = 4242;
\echo :LAST_ERROR_SQLSTATE
TRUNCATE iapi_tokens.sources;
\echo :LAST_ERROR_SQLSTATE
-- Other changes, and a source without tokens, are not held back.
UPDATE iapi_tokens.sources SET display_name = 'Renamed' WHERE id = 4242;
SELECT iapi_tokens.create_source('no_tokens') AS lonely \gset
UPDATE iapi_tokens.sources SET id = 4300 WHERE id = :lonely;
DELETE FROM iapi_tokens.sources WHERE id = 4300;
SELECT count(*) AS sources_left FROM iapi_tokens.sources;

-- check_tokens is the owner's, like the tables.
SET ROLE regress_bulk_owner;
SELECT * FROM iapi_tokens.check_tokens();
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

DROP EXTENSION iapi_tokens;
DROP ROLE regress_bulk_owner;
