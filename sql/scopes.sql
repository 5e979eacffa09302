-- Scopes and metadata: the registry, creation with both families, what
-- verification returns, has_scope and require_scope (also in an RLS
-- policy), rotation, drop_scope, and every bad input.
\set SHOW_CONTEXT never
CREATE EXTENSION iapi_tokens;
SELECT iapi_tokens.create_source('scoped') AS sid \gset

-- The registry.
SELECT iapi_tokens.define_scope('sources:read', 'Read sources');
SELECT iapi_tokens.define_scope('sources:write');
SELECT iapi_tokens.define_scope('notes:read', 'Read notes');
SELECT iapi_tokens.define_scope('sources:read', 'Read the sources');	-- a new description
SELECT name, description FROM iapi_tokens.scopes ORDER BY name;

-- Bad names and descriptions: 22023, 22004, 22001; nothing is stored.
SELECT iapi_tokens.define_scope('Sources');
\echo :LAST_ERROR_SQLSTATE
SELECT iapi_tokens.define_scope('1read');
\echo :LAST_ERROR_SQLSTATE
SELECT iapi_tokens.define_scope('sources:');
\echo :LAST_ERROR_SQLSTATE
SELECT iapi_tokens.define_scope('a::b');
\echo :LAST_ERROR_SQLSTATE
SELECT iapi_tokens.define_scope(repeat('a', 65));
\echo :LAST_ERROR_SQLSTATE
SELECT iapi_tokens.define_scope(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT iapi_tokens.define_scope('fine', repeat('d', 256));
\echo :LAST_ERROR_SQLSTATE
SELECT iapi_tokens.define_scope(repeat('a', 64))::text = '' AS sixty_four_is_fine;
SELECT count(*) FROM iapi_tokens.scopes;

-- A source token with scopes (duplicates folded, sorted) and metadata.
SELECT id AS tid, access_token AS tok
  FROM iapi_tokens.generate_token(:sid, 'scoped key', '10 days',
		ARRAY['sources:write', 'sources:read', 'sources:read'],
		'{"plan": "pro", "customer": 42}') \gset
SELECT token_id = :tid AS verified, scopes, metadata
  FROM iapi_tokens.verify_token(:'tok');

-- Unrestricted (NULL) and identify-only (empty) tokens.
SELECT iapi_tokens.define_scope('spare');
SELECT iapi_tokens.create_source('scoped2') AS sid2 \gset
SELECT id AS free_id, access_token AS free_tok FROM iapi_tokens.generate_token(:sid2) \gset
SELECT id AS none_id, access_token AS none_tok
  FROM iapi_tokens.generate_token(:sid2, NULL, NULL, '{}') \gset
SELECT scopes IS NULL AS unrestricted, metadata IS NULL AS no_metadata
  FROM iapi_tokens.verify_token(:'free_tok');
SELECT scopes AS identify_only FROM iapi_tokens.verify_token(:'none_tok');

-- Bad scopes and metadata: a specific error that names the problem, and no
-- token is stored.
SELECT count(*) AS before FROM iapi_tokens.tokens \gset
SELECT * FROM iapi_tokens.generate_token(:sid, NULL, NULL, ARRAY['sources:raed']);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM iapi_tokens.generate_token(:sid, NULL, NULL, ARRAY['Sources']);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM iapi_tokens.generate_token(:sid, NULL, NULL, ARRAY['sources:read', NULL]);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM iapi_tokens.generate_token(:sid, NULL, NULL,
	ARRAY(SELECT 's' || g FROM generate_series(1, 33) g));
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM iapi_tokens.generate_token(:sid, NULL, NULL, NULL, '[1, 2]');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM iapi_tokens.generate_token(:sid, NULL, NULL, NULL, '"plan"');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM iapi_tokens.generate_token(:sid, NULL, NULL, NULL,
	jsonb_build_object('blob', repeat('x', 4100)));
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) = :before AS nothing_stored FROM iapi_tokens.tokens;
-- 33 names, 32 of them distinct: folded to 32, which is allowed.
SELECT iapi_tokens.create_source('scoped3') AS sid3 \gset
SELECT iapi_tokens.define_scope('s' || g) FROM generate_series(1, 32) g \g /dev/null
SELECT id AS many_id, access_token AS many_tok FROM iapi_tokens.generate_token(:sid3, NULL, NULL,
	ARRAY(SELECT 's' || g FROM generate_series(1, 32) g) || ARRAY['s1']) \gset
SELECT cardinality(scopes) FROM iapi_tokens.verify_token(:'many_tok');
SELECT iapi_tokens.revoke_token(:sid3, :many_id) IS NOT NULL AS revoked;

-- has_scope and require_scope read the current token.
SELECT iapi_tokens.has_scope('sources:read') AS without_token;
SELECT iapi_tokens.require_scope('sources:read');
\echo :LAST_ERROR_SQLSTATE
BEGIN;
SELECT count(*) FROM iapi_tokens.authenticate(:'tok');
SELECT iapi_tokens.has_scope('sources:read') AS read, iapi_tokens.has_scope('sources:write') AS write,
	   iapi_tokens.has_scope('notes:read') AS notes, iapi_tokens.has_scope(NULL) AS null_scope;
SELECT iapi_tokens.require_scope('sources:read')::text = '' AS allowed;
SELECT iapi_tokens.require_scope('notes:read');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
BEGIN;
SELECT count(*) FROM iapi_tokens.authenticate(:'free_tok');
SELECT iapi_tokens.has_scope('notes:read') AS unrestricted_has_any,
	   iapi_tokens.has_scope('never:defined') AS even_undefined;
SELECT scopes IS NULL AS unrestricted, metadata FROM iapi_tokens.current_token();
ROLLBACK;
BEGIN;
SELECT count(*) FROM iapi_tokens.authenticate(:'none_tok');
SELECT iapi_tokens.has_scope('sources:read') AS identify_only_has_none;
ROLLBACK;

-- The error, with its detail and hint, names the scope and never the token.
BEGIN;
SELECT count(*) FROM iapi_tokens.authenticate(:'tok');
SELECT iapi_tokens.require_scope('notes:read');
ROLLBACK;

-- An RLS policy on has_scope.
CREATE TABLE notes (id int, body text);
INSERT INTO notes VALUES (1, 'first'), (2, 'second');
ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
CREATE POLICY notes_by_scope ON notes FOR SELECT USING (iapi_tokens.has_scope('notes:read'));
CREATE ROLE regress_scope_app;
GRANT SELECT ON notes TO regress_scope_app;
SELECT id AS notes_id, access_token AS notes_tok
  FROM iapi_tokens.generate_token(:sid3, 'notes', NULL, ARRAY['notes:read']) \gset
SET ROLE regress_scope_app;
BEGIN;
SELECT count(*) FROM iapi_tokens.authenticate(:'notes_tok');
SELECT count(*) AS notes_seen FROM notes;
ROLLBACK;
BEGIN;
SELECT count(*) FROM iapi_tokens.authenticate(:'none_tok');
SELECT count(*) AS notes_seen FROM notes;
ROLLBACK;
SELECT count(*) AS notes_seen_without_token FROM notes;
-- Unprivileged: the registry is the owner's; has_scope is everyone's.
SELECT iapi_tokens.define_scope('mine');
\echo :LAST_ERROR_SQLSTATE
SELECT iapi_tokens.drop_scope('notes:read');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM iapi_tokens.scopes;
\echo :LAST_ERROR_SQLSTATE
SELECT iapi_tokens.has_scope('notes:read') AS no_token_no_scope;
RESET ROLE;

-- Listings show scopes, metadata and the whole days left.
SELECT token_id = :tid AS scoped, scopes, metadata, expires_in_days
  FROM iapi_tokens.list_token_details(:sid);

-- Personal tokens take them too.
CREATE ROLE regress_scope_owner;
GRANT EXECUTE ON FUNCTION iapi_tokens.create_access_token(integer, text, text[], jsonb, integer, interval),
	iapi_tokens.list_access_tokens(), iapi_tokens.get_access_token(uuid),
	iapi_tokens.rotate_access_token(uuid, interval) TO regress_scope_owner;
SET ROLE regress_scope_owner;
SELECT token_value AS ptok, token_id AS puuid
  FROM iapi_tokens.create_access_token(86400 * 3, 'personal', ARRAY['notes:read'],
									   '{"region": "eu"}') \gset
SELECT description, scopes, metadata, expires_in_days FROM iapi_tokens.list_access_tokens();
SELECT scopes, metadata FROM iapi_tokens.get_access_token(:'puuid');
SELECT * FROM iapi_tokens.create_access_token(60, NULL, ARRAY['nope']);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM iapi_tokens.create_access_token(60, NULL, NULL, '[]');
\echo :LAST_ERROR_SQLSTATE
-- Rotation copies scopes and metadata.
SELECT token_value AS ptok2, token_id AS puuid2 FROM iapi_tokens.rotate_access_token(:'puuid') \gset
SELECT scopes, metadata FROM iapi_tokens.get_access_token(:'puuid2');
RESET ROLE;
SELECT owner, scopes, metadata FROM iapi_tokens.verify_token(:'ptok2');
SELECT id AS tid_rot, access_token AS tok_rot FROM iapi_tokens.rotate_token(:sid, :tid) \gset
SELECT scopes, metadata FROM iapi_tokens.verify_token(:'tok_rot');
SELECT owner, scopes, metadata, expires_in_days FROM iapi_tokens.list_all_access_tokens();

-- drop_scope refuses while a live token holds the scope; not after.
SELECT iapi_tokens.drop_scope('notes:read');
\echo :LAST_ERROR_SQLSTATE
SELECT iapi_tokens.drop_scope('no:such');
\echo :LAST_ERROR_SQLSTATE
SELECT iapi_tokens.drop_scope(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT iapi_tokens.drop_scope('spare')::text = '' AS dropped_unused;
SELECT iapi_tokens.revoke_token(:sid3, :notes_id) IS NOT NULL AS revoked;
SELECT iapi_tokens.revoke_access_token(:'puuid2')::text = '' AS revoked;
SELECT iapi_tokens.drop_scope('notes:read')::text = '' AS dropped_after_revocation;
SELECT name FROM iapi_tokens.scopes WHERE name NOT LIKE 's%' OR name LIKE 'sources%' ORDER BY name;

DROP TABLE notes;
DROP EXTENSION iapi_tokens;
DROP ROLE regress_scope_app, regress_scope_owner;
