-- The extension's catalog contract: comments, volatility, SECURITY DEFINER
-- hygiene, grants, and pg_dump registration.
CREATE EXTENSION iapi_tokens;

-- Every function, public and internal, with its volatility, strictness,
-- parallel safety, and whether it runs as the owner.
SELECT p.oid::regprocedure AS function, p.provolatile AS vol, p.proisstrict AS strict,
	   p.proparallel AS par, p.prosecdef AS definer
  FROM pg_proc p
 WHERE p.pronamespace IN ('iapi_tokens'::regnamespace, 'iapi_tokens_internal'::regnamespace)
 ORDER BY p.pronamespace::regnamespace::text, p.oid::regprocedure::text;

-- Every SECURITY DEFINER function pins search_path.
SELECT p.oid::regprocedure AS definer_without_pinned_path
  FROM pg_proc p
 WHERE p.pronamespace IN ('iapi_tokens'::regnamespace, 'iapi_tokens_internal'::regnamespace)
   AND p.prosecdef
   AND NOT coalesce(p.proconfig, '{}') @> ARRAY['search_path=pg_catalog, pg_temp'];

-- Every function, table, type and schema has a comment.
SELECT p.oid::regprocedure AS function_without_comment
  FROM pg_proc p
 WHERE p.pronamespace IN ('iapi_tokens'::regnamespace, 'iapi_tokens_internal'::regnamespace)
   AND obj_description(p.oid, 'pg_proc') IS NULL;
SELECT c.oid::regclass AS table_without_comment
  FROM pg_class c
 WHERE c.relnamespace IN ('iapi_tokens'::regnamespace, 'iapi_tokens_internal'::regnamespace)
   AND c.relkind = 'r'
   AND obj_description(c.oid, 'pg_class') IS NULL;
SELECT t.oid::regtype AS type_without_comment
  FROM pg_type t JOIN pg_class c ON c.oid = t.typrelid
 WHERE t.typnamespace IN ('iapi_tokens'::regnamespace, 'iapi_tokens_internal'::regnamespace)
   AND c.relkind = 'c' AND obj_description(t.oid, 'pg_type') IS NULL;
SELECT n.nspname AS schema_without_comment
  FROM pg_namespace n
 WHERE n.nspname = 'iapi_tokens_internal' AND obj_description(n.oid, 'pg_namespace') IS NULL;

-- The public schema holds no helper: every function there is documented in
-- README.md's reference.  (A new one must be added to both.)
SELECT p.proname AS undocumented
  FROM pg_proc p
 WHERE p.pronamespace = 'iapi_tokens'::regnamespace
   AND p.proname NOT IN ('authenticate', 'create_access_token', 'create_source',
		'current_token', 'delete_access_token', 'delete_source', 'generate_token',
		'get_access_token', 'hash_token', 'iso8601', 'list_access_tokens',
		'list_all_access_tokens', 'list_sources', 'list_token_details',
		'list_tokens', 'purge_tokens', 'revoke_access_token', 'revoke_token',
		'rotate_access_token', 'rotate_token', 'set_owner_limit', 'source_json',
		'check_tokens', 'expiring_tokens', 'revoke_leaked', 'apply_usage', 'usage_stats',
		'define_scope', 'drop_scope', 'has_scope', 'require_scope',
		'check_token', 'set_rate_limit', 'set_access_token_rate_limit', 'rate_limit_stats',
		'verify_token');

-- Nobody but the owner can use the internal schema or run its functions
-- (pg_read_all_data and pg_write_all_data have USAGE on every schema).
SELECT r.rolname AS may_use_internal_schema
  FROM pg_roles r
 WHERE r.oid <> (SELECT nspowner FROM pg_namespace WHERE nspname = 'iapi_tokens_internal')
   AND has_schema_privilege(r.oid, 'iapi_tokens_internal', 'USAGE')
   AND NOT r.rolsuper
   AND r.rolname NOT IN ('pg_read_all_data', 'pg_write_all_data');
SELECT has_schema_privilege('public', 'iapi_tokens_internal', 'USAGE') AS public_uses_internal;
SELECT p.oid::regprocedure AS internal_executable_by_public
  FROM pg_proc p
 WHERE p.pronamespace = 'iapi_tokens_internal'::regnamespace
   AND EXISTS (SELECT FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
			   WHERE a.grantee = 0);

-- PUBLIC may execute exactly these, the documented ones: verify (and check a
-- token with its rate limit), hash, authenticate, read the current token and
-- check its scopes.
SELECT p.oid::regprocedure AS public_can_execute
  FROM pg_proc p
 WHERE p.pronamespace = 'iapi_tokens'::regnamespace
   AND EXISTS (SELECT FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
			   WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE')
 ORDER BY p.oid::regprocedure::text;
-- ...and has no privilege on any table or sequence.
SELECT c.oid::regclass AS public_privilege, a.privilege_type
  FROM pg_class c, aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a
 WHERE c.relnamespace = 'iapi_tokens'::regnamespace AND a.grantee = 0;

-- Default privileges cannot hand the new objects to anyone: the install
-- script removes every grant it did not make itself.
DROP EXTENSION iapi_tokens;
CREATE ROLE regress_iapi_reader;
ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO regress_iapi_reader;
ALTER DEFAULT PRIVILEGES GRANT SELECT ON SEQUENCES TO regress_iapi_reader;
ALTER DEFAULT PRIVILEGES GRANT EXECUTE ON FUNCTIONS TO regress_iapi_reader;
ALTER DEFAULT PRIVILEGES GRANT CREATE ON SCHEMAS TO regress_iapi_reader;
CREATE EXTENSION iapi_tokens;
SELECT has_table_privilege('regress_iapi_reader', 'iapi_tokens.tokens', 'SELECT') AS read_tokens,
	   has_table_privilege('regress_iapi_reader', 'iapi_tokens.sources', 'SELECT') AS read_sources,
	   has_sequence_privilege('regress_iapi_reader', 'iapi_tokens.token_id_seq', 'SELECT') AS read_sequence,
	   has_function_privilege('regress_iapi_reader', 'iapi_tokens.generate_token(bigint,text,interval,text[],jsonb,integer,interval)', 'EXECUTE') AS generate,
	   has_function_privilege('regress_iapi_reader', 'iapi_tokens_internal.enforce_token_cap()', 'EXECUTE') AS cap_trigger,
	   has_table_privilege('regress_iapi_reader', 'iapi_tokens.owner_limits', 'SELECT') AS read_limits,
	   has_schema_privilege('regress_iapi_reader', 'iapi_tokens', 'CREATE') AS create_in_schema,
	   has_schema_privilege('regress_iapi_reader', 'iapi_tokens_internal', 'USAGE') AS use_internal,
	   has_function_privilege('regress_iapi_reader', 'iapi_tokens.verify_token(text)', 'EXECUTE') AS verify;
ALTER DEFAULT PRIVILEGES REVOKE ALL ON TABLES FROM regress_iapi_reader;
ALTER DEFAULT PRIVILEGES REVOKE ALL ON SEQUENCES FROM regress_iapi_reader;
ALTER DEFAULT PRIVILEGES REVOKE ALL ON FUNCTIONS FROM regress_iapi_reader;
ALTER DEFAULT PRIVILEGES REVOKE ALL ON SCHEMAS FROM regress_iapi_reader;
ALTER DEFAULT PRIVILEGES GRANT EXECUTE ON FUNCTIONS TO PUBLIC;
DROP ROLE regress_iapi_reader;

-- pg_dump keeps the tables' rows and the sequences' positions.
SELECT c::regclass::text AS dumped
  FROM pg_extension, unnest(extconfig) c
 WHERE extname = 'iapi_tokens' ORDER BY 1;
SELECT extrelocatable, extnamespace::regnamespace FROM pg_extension
 WHERE extname = 'iapi_tokens';

-- The GUC prefix is reserved: a typo is an error, not a silent placeholder.
SET iapi_tokens.last_used_intervall = 0;

-- Dropping and re-creating the extension in the same session works: the
-- cached relation and plans follow the new objects.
SELECT id AS tid, access_token AS tok
  FROM iapi_tokens.generate_token(iapi_tokens.create_source('first_life')) \gset
SELECT count(*) AS verified FROM iapi_tokens.verify_token(:'tok');
DROP EXTENSION iapi_tokens;
CREATE EXTENSION iapi_tokens;
SELECT count(*) AS old_token_gone FROM iapi_tokens.verify_token(:'tok');
SELECT id AS tid2, access_token AS tok2
  FROM iapi_tokens.generate_token(iapi_tokens.create_source('second_life')) \gset
SELECT count(*) AS verified FROM iapi_tokens.verify_token(:'tok2');

-- The result types are the extension's own; one altered apart from the C
-- that fills it stops every call (an internal error) rather than writing
-- datums of the wrong type.  Only their owner, a superuser, can do this.
BEGIN;
ALTER TYPE iapi_tokens.verified_token ALTER ATTRIBUTE scopes TYPE text;
SELECT count(*) FROM iapi_tokens.verify_token(:'tok2');
ROLLBACK;
BEGIN;
ALTER TYPE iapi_tokens.token_check ALTER ATTRIBUTE remaining TYPE bigint;
SELECT count(*) FROM iapi_tokens.check_token(:'tok2');
ROLLBACK;
BEGIN;
ALTER TYPE iapi_tokens.token_check DROP ATTRIBUTE retry_after;
SELECT count(*) FROM iapi_tokens.check_token(:'tok2');
ROLLBACK;
SELECT count(*) AS verified_again FROM iapi_tokens.verify_token(:'tok2');

DROP EXTENSION iapi_tokens;
