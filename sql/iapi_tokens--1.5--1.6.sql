-- iapi_tokens 1.5 to 1.6: verification's result as named composite types.
--
-- verify_token() and authenticate() return SETOF iapi_tokens.verified_token
-- and check_token() SETOF iapi_tokens.token_check, with the same columns as
-- before.  The executor rebuilt a RETURNS TABLE result's row descriptor from
-- pg_proc on every call; a composite type's comes from the type cache, which
-- takes a tenth off each verification.  A return type cannot be changed in
-- place, so the three functions are dropped and created again, with their
-- owner and grants.  A view or SQL-standard function of yours that uses one
-- of them makes this update fail: drop it first and create it again after.
-- current_token() is left as it is, since RLS policies may depend on it.
-- Last, pg_dump's record of the extension's own grants is set to a fresh
-- installation's, which also repairs what earlier updates left there.

\echo Use "ALTER EXTENSION iapi_tokens UPDATE TO '1.6'" to load this file. \quit

-- The owners and grants of the functions re-created below; a NULL ACL is
-- the default one, which has PUBLIC.
SELECT pg_catalog.set_config('iapi_tokens_update.saved',
	(SELECT pg_catalog.jsonb_object_agg(f.signature,
			pg_catalog.jsonb_build_object('owner', p.proowner,
				'acl', coalesce(p.proacl, pg_catalog.acldefault('f', p.proowner))::text))
	   FROM (VALUES ('iapi_tokens.verify_token(text)'),
				('iapi_tokens.authenticate(text)'),
				('iapi_tokens.check_token(text, boolean)')) f(signature)
	   JOIN pg_catalog.pg_proc p ON p.oid = f.signature::pg_catalog.regprocedure)::text,
	true);

DROP FUNCTION iapi_tokens.verify_token(text);
DROP FUNCTION iapi_tokens.authenticate(text);
DROP FUNCTION iapi_tokens.check_token(text, boolean);

-- The row verify_token, authenticate and check_token return.  A named type
-- rather than RETURNS TABLE: the executor builds a RETURNS TABLE result's
-- row descriptor from pg_proc on every call, which cost verification a
-- tenth of its time; a composite type's comes from the type cache.
-- current_token() keeps RETURNS TABLE, as RLS policies may depend on it.
CREATE TYPE iapi_tokens.verified_token AS (
	token_id bigint,
	source_id bigint,
	created_at timestamptz,
	expires_at timestamptz,
	last_used_at timestamptz,
	owner regrole,
	access_token_id uuid,
	scopes text[],
	metadata jsonb);

COMMENT ON TYPE iapi_tokens.verified_token IS
	'A valid token as verify_token and authenticate return it: source_id for a source token, owner and access_token_id for a personal token, its scopes and metadata';

CREATE FUNCTION iapi_tokens.verify_token(token text)
RETURNS SETOF iapi_tokens.verified_token
AS 'MODULE_PATHNAME', 'iapi_tokens_verify_token_1_1'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE ROWS 1;

COMMENT ON FUNCTION iapi_tokens.verify_token(text) IS
	'Returns one row for a valid token of either family (source_id for a source token, owner and access_token_id for a personal token, and its scopes and metadata) and no row otherwise; never raises an error for any input';

-- Not STRICT: authenticate(NULL) must forget the previous token.
CREATE FUNCTION iapi_tokens.authenticate(token text)
RETURNS SETOF iapi_tokens.verified_token
AS 'MODULE_PATHNAME', 'iapi_tokens_authenticate'
LANGUAGE C VOLATILE PARALLEL UNSAFE ROWS 1;

COMMENT ON FUNCTION iapi_tokens.authenticate(text) IS
	'Verifies a token as verify_token does and, if it is valid, makes it the transaction''s current token; otherwise no row and no current token';

-- Its own type, for the reason verified_token gives.
CREATE TYPE iapi_tokens.token_check AS (
	status text,
	token_id bigint,
	source_id bigint,
	created_at timestamptz,
	expires_at timestamptz,
	last_used_at timestamptz,
	owner regrole,
	access_token_id uuid,
	scopes text[],
	metadata jsonb,
	rate_limit integer,
	rate_window interval,
	remaining integer,
	reset_after integer,
	retry_after integer);

COMMENT ON TYPE iapi_tokens.token_check IS
	'What check_token returns: status valid, invalid or rate_limited, the token''s columns, its rate limit, the admissions remaining, the seconds until its window resets and, when refused, retry_after';

-- Not STRICT: check_token(NULL) is one invalid row, like any other input.
CREATE FUNCTION iapi_tokens.check_token(token text, authenticate boolean DEFAULT false)
RETURNS SETOF iapi_tokens.token_check
AS 'MODULE_PATHNAME', 'iapi_tokens_check_token'
LANGUAGE C VOLATILE PARALLEL UNSAFE ROWS 1;

COMMENT ON FUNCTION iapi_tokens.check_token(text, boolean) IS
	'Verifies a token as verify_token does and returns one row whatever the input: status valid, invalid or rate_limited, the token''s columns, and for a limited token the admissions remaining, the seconds until its window resets and, when refused, retry_after; with authenticate, a valid token becomes the current token';

SELECT iapi_tokens_internal.revoke_all_grants(
	'{}',
	ARRAY['iapi_tokens.verify_token(text)', 'iapi_tokens.authenticate(text)',
		  'iapi_tokens.check_token(text, boolean)']::pg_catalog.regprocedure[],
	'{}');

-- The three get back their owner (the role that ran this update may be
-- another superuser) and exactly the grants they had, PUBLIC's included
-- or not.  A grant someone other than the owner made is made again by that
-- role, so that REVOKE ... CASCADE from it still reaches it: in passes, as
-- a grant may depend on one made in an earlier pass.
DO $$
DECLARE
	updater text := current_user;
	extension_owner text := (SELECT pg_catalog.pg_get_userbyid(p.proowner)
							   FROM pg_catalog.pg_proc p
							  WHERE p.oid = 'iapi_tokens.hash_token(text)'::pg_catalog.regprocedure);
	saved record;
	entry record;
	done text[] := '{}';
	waiting integer;
	progress boolean;
BEGIN
	FOR saved IN
		SELECT s.key::pg_catalog.regprocedure AS function,
			   (s.value ->> 'owner')::pg_catalog.oid AS owner
		  FROM pg_catalog.jsonb_each(
				 pg_catalog.current_setting('iapi_tokens_update.saved')::pg_catalog.jsonb) s
	LOOP
		IF (SELECT p.proowner FROM pg_catalog.pg_proc p WHERE p.oid = saved.function) <> saved.owner THEN
			EXECUTE pg_catalog.format('ALTER FUNCTION %s OWNER TO %I', saved.function,
									  pg_catalog.pg_get_userbyid(saved.owner));
		END IF;
	END LOOP;

	-- The new types, owned as the rest of the extension (hash_token stayed).
	IF extension_owner <> updater THEN
		EXECUTE pg_catalog.format('ALTER TYPE iapi_tokens.verified_token OWNER TO %I', extension_owner);
		EXECUTE pg_catalog.format('ALTER TYPE iapi_tokens.token_check OWNER TO %I', extension_owner);
	END IF;

	LOOP
		progress := false;
		waiting := 0;
		FOR entry IN
			SELECT s.key::pg_catalog.regprocedure AS function,
				   (s.value ->> 'owner')::pg_catalog.oid AS owner,
				   a.grantor, a.grantee, a.is_grantable,
				   pg_catalog.concat_ws('/', s.key, a.grantor, a.grantee) AS done_key
			  FROM pg_catalog.jsonb_each(
					 pg_catalog.current_setting('iapi_tokens_update.saved')::pg_catalog.jsonb) s,
				   pg_catalog.aclexplode((s.value ->> 'acl')::pg_catalog.aclitem[]) a
			 WHERE a.privilege_type = 'EXECUTE'
			   AND a.grantee <> (s.value ->> 'owner')::pg_catalog.oid
			 ORDER BY a.grantor <> (s.value ->> 'owner')::pg_catalog.oid, 6
		LOOP
			CONTINUE WHEN entry.done_key = ANY (done);
			-- The owner's grants first; another's once its grant option is back.
			IF entry.grantor <> entry.owner
				AND NOT pg_catalog.has_function_privilege(entry.grantor, entry.function,
														  'EXECUTE WITH GRANT OPTION') THEN
				waiting := waiting + 1;
				CONTINUE;
			END IF;
			IF entry.grantor <> entry.owner THEN
				EXECUTE pg_catalog.format('SET LOCAL ROLE %I', pg_catalog.pg_get_userbyid(entry.grantor));
			END IF;
			EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO %s%s',
				entry.function,
				CASE WHEN entry.grantee = 0 THEN 'PUBLIC'
					 ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(entry.grantee)) END,
				CASE WHEN entry.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
			EXECUTE pg_catalog.format('SET LOCAL ROLE %I', updater);
			done := done || entry.done_key;
			progress := true;
		END LOOP;
		EXIT WHEN waiting = 0 OR NOT progress;
	END LOOP;
	IF waiting > 0 THEN
		RAISE EXCEPTION 'iapi_tokens 1.6 could not carry over % grants', waiting
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  DETAIL = 'Their grantors no longer hold the grant option.',
				  HINT = 'Revoke those grants, update, and make them again.';
	END IF;
END
$$;

-- What pg_dump counts as the extension's own grants (pg_init_privs) and so
-- leaves out of a dump.  Grants and revocations made by an update script
-- are recorded there, as those of 1.1, 1.4, 1.5 and the ones above were,
-- so that a dump lost what users had granted or revoked on the functions
-- those updates re-created.  Every function's record becomes a fresh
-- installation's: its owner, PUBLIC for the seven that a fresh install
-- grants to PUBLIC, pg_monitor for the two statistics functions.
UPDATE pg_catalog.pg_init_privs ip
   SET initprivs = ARRAY(
		SELECT pg_catalog.makeaclitem(g.grantee, p.proowner, 'EXECUTE', false)
		  FROM (SELECT p.proowner
				UNION ALL
				SELECT 0
				 WHERE p.oid IN ('iapi_tokens.hash_token(text)'::pg_catalog.regprocedure,
								 'iapi_tokens.verify_token(text)'::pg_catalog.regprocedure,
								 'iapi_tokens.authenticate(text)'::pg_catalog.regprocedure,
								 'iapi_tokens.current_token()'::pg_catalog.regprocedure,
								 'iapi_tokens.has_scope(text)'::pg_catalog.regprocedure,
								 'iapi_tokens.require_scope(text)'::pg_catalog.regprocedure,
								 'iapi_tokens.check_token(text, boolean)'::pg_catalog.regprocedure)
				UNION ALL
				SELECT 'pg_monitor'::pg_catalog.regrole
				 WHERE p.oid IN ('iapi_tokens.usage_stats()'::pg_catalog.regprocedure,
								 'iapi_tokens.rate_limit_stats()'::pg_catalog.regprocedure)) g(grantee))
  FROM pg_catalog.pg_proc p
 WHERE ip.classoid = 'pg_catalog.pg_proc'::pg_catalog.regclass
   AND ip.objoid = p.oid AND ip.objsubid = 0 AND ip.privtype = 'e'
   AND p.pronamespace IN ('iapi_tokens'::pg_catalog.regnamespace,
						  'iapi_tokens_internal'::pg_catalog.regnamespace);

-- From PostgreSQL 17 on, pg_shdepend records each role a pg_init_privs
-- entry names (deptype 'i'; the owner too, pinned roles never), so that
-- DROP ROLE knows of it.  They follow the record set above: the owner's
-- stays or is added, any other goes.  Before 17 there are none.
DELETE FROM pg_catalog.pg_shdepend d
 USING pg_catalog.pg_proc p
 WHERE d.dbid = (SELECT db.oid FROM pg_catalog.pg_database db
				  WHERE db.datname = pg_catalog.current_database())
   AND d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass
   AND d.objid = p.oid AND d.objsubid = 0 AND d.deptype = 'i'
   AND d.refobjid <> p.proowner
   AND p.pronamespace IN ('iapi_tokens'::pg_catalog.regnamespace,
						  'iapi_tokens_internal'::pg_catalog.regnamespace);

INSERT INTO pg_catalog.pg_shdepend (dbid, classid, objid, objsubid, refclassid, refobjid, deptype)
SELECT db.oid, 'pg_catalog.pg_proc'::pg_catalog.regclass, p.oid, 0,
	   'pg_catalog.pg_authid'::pg_catalog.regclass, p.proowner, 'i'
  FROM pg_catalog.pg_proc p, pg_catalog.pg_database db
 WHERE pg_catalog.current_setting('server_version_num')::integer >= 170000
   AND db.datname = pg_catalog.current_database()
   AND p.pronamespace IN ('iapi_tokens'::pg_catalog.regnamespace,
						  'iapi_tokens_internal'::pg_catalog.regnamespace)
   AND p.proowner::pg_catalog.int8 >= 12000	-- FirstUnpinnedObjectId
   AND EXISTS (SELECT FROM pg_catalog.pg_init_privs ip
				WHERE ip.classoid = 'pg_catalog.pg_proc'::pg_catalog.regclass
				  AND ip.objoid = p.oid AND ip.objsubid = 0)
   AND NOT EXISTS (SELECT FROM pg_catalog.pg_shdepend d
					WHERE d.dbid = db.oid
					  AND d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass
					  AND d.objid = p.oid AND d.objsubid = 0 AND d.deptype = 'i'
					  AND d.refobjid = p.proowner);
