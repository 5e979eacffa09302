-- ALTER EXTENSION UPDATE from 1.0, through 1.1, 1.2, 1.3, 1.4 and 1.5 to 1.6, keeps
-- the tokens, their verification and the grants users made, and ends in the
-- same catalog state as a fresh installation.  The two are built by different
-- scripts: a fresh install runs iapi_tokens--1.6.sql alone, the update runs
-- 1.0's full script and then each update script.
\set SHOW_CONTEXT never
CREATE ROLE regress_iapi_app NOLOGIN;

-- A fresh install.
CREATE EXTENSION iapi_tokens;

-- Privileges as they take effect: a NULL ACL means the default one (which
-- pg_upgrade leaves where a fresh install has it spelled out), in one order.
CREATE FUNCTION public.iapi_acl(acl aclitem[], kind "char", owner oid) RETURNS text
LANGUAGE sql STABLE
RETURN (SELECT string_agg(a::text, ',' ORDER BY a::text)
		  FROM unnest(coalesce(acl, acldefault(kind, owner))) a);

-- (Created here, as its body names the schemas.)  The catalog fingerprint of
-- an installation: every object of the extension in both of its schemas,
-- with its definition, volatility, security, settings, grants and comment.
CREATE FUNCTION public.iapi_fingerprint() RETURNS TABLE (object text, state text)
LANGUAGE sql AS $$
	WITH nsp(oid) AS (
		SELECT n.oid FROM pg_namespace n
		 WHERE n.nspname IN ('iapi_tokens', 'iapi_tokens_internal')),
	members(classid, objid, objsubid) AS (
		SELECT d.classid, d.objid, d.objsubid FROM pg_depend d
		 WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
		   AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'iapi_tokens'))
	SELECT 'schema ' || n.nspname,
		   concat_ws(' | ', public.iapi_acl(n.nspacl, 'n', n.nspowner),
					 obj_description(n.oid, 'pg_namespace'))
	  FROM pg_namespace n WHERE n.oid IN (SELECT oid FROM nsp)
	UNION ALL
	SELECT p.oid::regprocedure::text,
		   concat_ws(' | ', p.provolatile, p.prosecdef, p.proisstrict, p.proparallel,
					 p.proconfig::text, public.iapi_acl(p.proacl, 'f', p.proowner),
					 pg_get_function_result(p.oid),
					 md5(pg_get_functiondef(p.oid)),
					 md5(obj_description(p.oid, 'pg_proc')))
	  FROM pg_proc p WHERE p.pronamespace IN (SELECT oid FROM nsp)
	UNION ALL
	SELECT c.oid::regclass::text,
		   concat_ws(' | ', c.relkind,
					 public.iapi_acl(c.relacl, (CASE c.relkind WHEN 'S' THEN 's' ELSE 'r' END)::"char", c.relowner),
					 c.relrowsecurity,
					 c.reloptions::text,
					 (SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
										|| ' ' || a.attnotnull || ' '
										|| coalesce(pg_get_expr(d.adbin, d.adrelid), '')
										|| ' ' || coalesce(md5(col_description(c.oid, a.attnum)), ''),
										', ' ORDER BY a.attnum)
						FROM pg_attribute a
						LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
					   WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
					 md5(obj_description(c.oid, 'pg_class')))
	  FROM pg_class c WHERE c.relnamespace IN (SELECT oid FROM nsp)
	UNION ALL
	SELECT 'type ' || t.oid::regtype, concat_ws(' | ', t.typtype,
											   public.iapi_acl(t.typacl, 'T', t.typowner),
											   md5(obj_description(t.oid, 'pg_type')))
	  FROM pg_type t WHERE t.typnamespace IN (SELECT oid FROM nsp) AND t.typtype = 'c'
		AND NOT EXISTS (SELECT FROM pg_class c WHERE c.oid = t.typrelid AND c.relkind <> 'c')
	UNION ALL
	-- NOT NULL is attnotnull above; 18 also keeps it as a constraint ('n').
	SELECT conrelid::regclass || '.' || conname, pg_get_constraintdef(oid)
	  FROM pg_constraint WHERE connamespace IN (SELECT oid FROM nsp)
	   AND contype <> 'n'
	UNION ALL
	SELECT tgrelid::regclass || '.' || tgname, pg_get_triggerdef(oid)
	  FROM pg_trigger WHERE tgrelid IN (SELECT oid FROM pg_class
										 WHERE relnamespace IN (SELECT oid FROM nsp))
	   AND NOT tgisinternal
	UNION ALL
	SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid)
	  FROM pg_index WHERE indrelid IN (SELECT oid FROM pg_class
									   WHERE relnamespace IN (SELECT oid FROM nsp))
	UNION ALL
	SELECT polrelid::regclass || '.' || polname,
		   concat_ws(' | ', polcmd, polroles::text, pg_get_expr(polqual, polrelid))
	  FROM pg_policy
	UNION ALL
	SELECT 'config_dump ' || unnest(extconfig)::regclass, ''
	  FROM pg_extension WHERE extname = 'iapi_tokens'
	UNION ALL
	-- What pg_dump counts as the extension's own grants: it dumps the rest.
	-- A record equal to the object's default ACL means what no record means
	-- (pg_upgrade leaves none), so only the others are compared.
	SELECT 'initprivs ' || pg_describe_object(ip.classoid, ip.objoid, ip.objsubid),
		   public.iapi_acl(ip.initprivs, k.kind, k.owner)
	  FROM pg_init_privs ip
	  JOIN LATERAL (
			SELECT 'f'::"char", p.proowner FROM pg_proc p
			 WHERE ip.classoid = 'pg_proc'::regclass AND p.oid = ip.objoid
			UNION ALL
			SELECT (CASE c.relkind WHEN 'S' THEN 's' ELSE 'r' END)::"char", c.relowner FROM pg_class c
			 WHERE ip.classoid = 'pg_class'::regclass AND c.oid = ip.objoid AND ip.objsubid = 0
			UNION ALL
			SELECT 'n'::"char", n.nspowner FROM pg_namespace n
			 WHERE ip.classoid = 'pg_namespace'::regclass AND n.oid = ip.objoid
			UNION ALL
			SELECT 'T'::"char", t.typowner FROM pg_type t
			 WHERE ip.classoid = 'pg_type'::regclass AND t.oid = ip.objoid) k(kind, owner) ON true
	 WHERE ip.privtype = 'e'
	   AND public.iapi_acl(ip.initprivs, k.kind, k.owner) <> public.iapi_acl(NULL, k.kind, k.owner)
	   AND (ip.classoid, ip.objoid) IN (
			SELECT m.classid, m.objid FROM members m
			UNION ALL
			SELECT 'pg_namespace'::regclass, oid FROM nsp)
	UNION ALL
	-- 17+: the other roles those records name, for DROP ROLE (none before 17).
	SELECT 'initprivs role ' || pg_describe_object(d.classid, d.objid, d.objsubid)
		   || ' ' || d.refobjid::regrole, ''
	  FROM pg_shdepend d
	 WHERE d.deptype = 'i'
	   AND d.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
	   AND d.refobjid NOT IN (SELECT p.proowner FROM pg_proc p WHERE p.oid = d.objid
							  UNION ALL
							  SELECT c.relowner FROM pg_class c WHERE c.oid = d.objid)
	   AND (d.classid, d.objid) IN (SELECT m.classid, m.objid FROM members m)
	UNION ALL
	SELECT 'member ' || pg_describe_object(m.classid, m.objid, m.objsubid), ''
	  FROM members m
$$;

SELECT extversion FROM pg_extension WHERE extname = 'iapi_tokens';
CREATE TEMP TABLE fresh AS SELECT * FROM public.iapi_fingerprint();
-- (Its size varies by major: 18 lists more catalog rows.)
SELECT count(*) >= 150 AS fingerprint_covers_catalog FROM fresh;
DROP EXTENSION iapi_tokens;

-- A 1.0 installation in use: a source, two tokens (one revoked), a grant.
CREATE EXTENSION iapi_tokens VERSION '1.0';
SELECT iapi_tokens.create_source('before_update') AS sid \gset
SELECT id AS t1, access_token AS tok1 FROM iapi_tokens.generate_token(:sid, 'kept') \gset
SELECT id AS t2 FROM iapi_tokens.generate_token(:sid) \gset
SELECT iapi_tokens.revoke_token(:sid, :t2) IS NOT NULL AS revoked;
GRANT EXECUTE ON FUNCTION iapi_tokens.revoke_token(bigint, bigint) TO regress_iapi_app;
-- verify_token restricted to one role, as the README suggests.
REVOKE EXECUTE ON FUNCTION iapi_tokens.verify_token(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION iapi_tokens.verify_token(text) TO regress_iapi_app;
-- The 1.1 library still serves 1.0's verify_token (five columns).
SELECT token_id = :t1 AS verifies_under_1_0, last_used_at IS NOT NULL AS use_recorded
  FROM iapi_tokens.verify_token(:'tok1');

ALTER EXTENSION iapi_tokens UPDATE TO '1.1';
SELECT extversion FROM pg_extension WHERE extname = 'iapi_tokens';

-- The token still verifies, now with the 1.1 columns.
SELECT token_id = :t1 AS same_token, source_id = :sid AS same_source,
	   owner IS NULL AS no_owner, access_token_id IS NULL AS no_uuid
  FROM iapi_tokens.verify_token(:'tok1');
SELECT count(*) AS tokens_kept,
	   count(*) FILTER (WHERE revoked_at IS NOT NULL) AS revoked_kept
  FROM iapi_tokens.tokens;
-- The user's grants survived, and verify_token, re-created with two more
-- columns, was not opened to PUBLIC again (the warning above says so).
SELECT has_function_privilege('regress_iapi_app',
							  'iapi_tokens.revoke_token(bigint, bigint)', 'EXECUTE') AS grant_kept;
CREATE ROLE regress_iapi_other NOLOGIN;
SELECT has_function_privilege('regress_iapi_app', 'iapi_tokens.verify_token(text)', 'EXECUTE') AS app_verifies,
	   has_function_privilege('regress_iapi_other', 'iapi_tokens.verify_token(text)', 'EXECUTE') AS public_verifies;
DROP ROLE regress_iapi_other;
-- The 1.1 functions work on the old data.
SELECT id AS t3, access_token AS tok3 FROM iapi_tokens.rotate_token(:sid, :t1, '1 minute') \gset
SELECT count(*) AS active FROM iapi_tokens.list_tokens(:sid);
SELECT action FROM iapi_tokens.audit ORDER BY id;

-- 1.1 -> 1.2 adds authenticate() and current_token().  authenticate()
-- verifies, so it gets verify_token's grants: here only regress_iapi_app's
-- (the warning says so), never PUBLIC's.
ALTER EXTENSION iapi_tokens UPDATE TO '1.2';
SELECT extversion FROM pg_extension WHERE extname = 'iapi_tokens';
CREATE ROLE regress_iapi_other NOLOGIN;
SELECT has_function_privilege('regress_iapi_app', 'iapi_tokens.authenticate(text)', 'EXECUTE') AS app_authenticates,
	   has_function_privilege('regress_iapi_other', 'iapi_tokens.authenticate(text)', 'EXECUTE') AS public_authenticates,
	   has_function_privilege('regress_iapi_other', 'iapi_tokens.current_token()', 'EXECUTE') AS public_reads_current;
DROP ROLE regress_iapi_other;
BEGIN;
SELECT token_id = :t3 AS authenticates FROM iapi_tokens.authenticate(:'tok3');
SELECT token_id = :t3 AS current FROM iapi_tokens.current_token();
COMMIT;

-- The 1.3 library serves 1.2's personal tokens until the update: its
-- statements take 1.2's function names, and 1.2's trigger reads the limit.
CREATE ROLE regress_iapi_p12;
GRANT EXECUTE ON FUNCTION iapi_tokens.create_access_token(integer, text),
	iapi_tokens.rotate_access_token(uuid, interval) TO regress_iapi_p12;
SET iapi_tokens.max_tokens_per_owner = 2;
SET ROLE regress_iapi_p12;
SELECT token_id AS p1 FROM iapi_tokens.create_access_token(60, 'p1') \gset
SELECT count(*) AS rotated FROM iapi_tokens.rotate_access_token(:'p1', '1 minute');
SELECT count(*) FROM iapi_tokens.create_access_token(60, 'over the limit');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
RESET iapi_tokens.max_tokens_per_owner;
SELECT action, count(*) FROM iapi_tokens.audit
 WHERE owner_role = 'regress_iapi_p12' GROUP BY action ORDER BY action;

-- 1.2 -> 1.3: the helpers leave the public schema, and per-role limits
-- arrive.  The tokens still verify, and the users' grants stay.
ALTER EXTENSION iapi_tokens UPDATE TO '1.3';
SELECT extversion FROM pg_extension WHERE extname = 'iapi_tokens';
SELECT token_id = :t3 AS still_verifies FROM iapi_tokens.verify_token(:'tok3');
SELECT has_function_privilege('regress_iapi_app', 'iapi_tokens.revoke_token(bigint, bigint)', 'EXECUTE') AS grant_kept,
	   has_function_privilege('regress_iapi_app', 'iapi_tokens.verify_token(text)', 'EXECUTE') AS app_verifies;
SELECT id AS t4, access_token AS tok4 FROM iapi_tokens.rotate_token(:sid, :t3) \gset
SELECT action, token_id = :t4 AS is_new FROM iapi_tokens.audit ORDER BY id DESC LIMIT 2;

-- The 1.4 library serves a 1.3 database until the update: it verifies,
-- and writes last_used_at in the verifying transaction, as 1.3 did.
SET iapi_tokens.last_used_interval = 0;
BEGIN;
SELECT count(*) FROM iapi_tokens.verify_token(:'tok4');
SELECT pg_current_xact_id_if_assigned() IS NOT NULL AS wrote_in_transaction;
COMMIT;
RESET iapi_tokens.last_used_interval;
SELECT last_used_at AS t4_used FROM iapi_tokens.tokens WHERE id = :t4 \gset
GRANT EXECUTE ON FUNCTION iapi_tokens.list_token_details(bigint, boolean) TO regress_iapi_app;

-- 1.3 -> 1.4: use_count, and use recorded in shared memory.  The functions
-- that gain use_count are re-created with their grants, and a warning that
-- pg_dump will count those as the extension's own.
ALTER EXTENSION iapi_tokens UPDATE TO '1.4';
SELECT extversion FROM pg_extension WHERE extname = 'iapi_tokens';
SELECT use_count, last_used_at = :'t4_used' AS last_use_kept
  FROM iapi_tokens.tokens WHERE id = :t4;
SELECT has_function_privilege('regress_iapi_app', 'iapi_tokens.list_token_details(bigint, boolean)', 'EXECUTE') AS grant_carried;
BEGIN;
SELECT count(*) FROM iapi_tokens.verify_token(:'tok4');
SELECT pg_current_xact_id_if_assigned() IS NULL AS no_write;
COMMIT;
DO $$
BEGIN
	FOR i IN 1..300 LOOP
		EXIT WHEN (SELECT uses_pending FROM iapi_tokens.usage_stats()) = 0;
		PERFORM pg_sleep(0.1);
	END LOOP;
END
$$;
SELECT use_count, last_used_at > :'t4_used' AS recorded
  FROM iapi_tokens.tokens WHERE id = :t4;

-- The 1.5 library serves a 1.4 database until the update: it generates
-- through 1.4's store function, and 1.4's tokens have no limit.
SELECT iapi_tokens.create_source('upgrade_15') AS sid15 \gset
SELECT id AS t5, access_token AS tok5 FROM iapi_tokens.generate_token(:sid15, 'before 1.5') \gset
SELECT count(*) AS verified FROM iapi_tokens.verify_token(:'tok5');

-- 1.4 -> 1.5: rate limits.  generate_token and create_access_token gain
-- arguments and are re-created with their grants, and the warning.
ALTER EXTENSION iapi_tokens UPDATE TO '1.5';
SELECT extversion FROM pg_extension WHERE extname = 'iapi_tokens';
SELECT has_function_privilege('regress_iapi_p12', 'iapi_tokens.create_access_token(integer, text, text[], jsonb, integer, interval)', 'EXECUTE') AS grant_carried;
SELECT status, rate_limit FROM iapi_tokens.check_token(:'tok5');
SELECT iapi_tokens.set_rate_limit(:t5, 1, '1 hour');
SELECT count(*) AS admitted FROM iapi_tokens.verify_token(:'tok5');
SELECT count(*) AS refused FROM iapi_tokens.verify_token(:'tok5');
SELECT status, retry_after BETWEEN 3500 AND 3600 AS retry_within_the_hour
  FROM iapi_tokens.check_token(:'tok5');
SELECT action, details FROM iapi_tokens.audit WHERE token_id = :t5 ORDER BY id;

-- The 1.6 library serves 1.5's declarations until the update.
SELECT token_id = :t1 AS verifies_under_1_5 FROM iapi_tokens.verify_token(:'tok1');

-- An object of the user's that depends on one of them stops the update
-- (2BP01, the dependents named) and leaves 1.5 as it was.
CREATE FUNCTION public.iapi_user_check(t text) RETURNS bigint LANGUAGE sql
BEGIN ATOMIC SELECT token_id FROM iapi_tokens.verify_token(t); END;
ALTER EXTENSION iapi_tokens UPDATE TO '1.6';
SELECT extversion FROM pg_extension WHERE extname = 'iapi_tokens';
SELECT public.iapi_user_check(:'tok1') = :t1 AS still_verifies;
DROP FUNCTION public.iapi_user_check(text);

-- 1.5 -> 1.6: verify_token, authenticate and check_token return named
-- composite types.  They are re-created with their owner and the grants
-- they had, each made again by its grantor.  Here another superuser runs
-- the update, and a grant was made by a role holding the grant option.
CREATE ROLE regress_iapi_super SUPERUSER NOLOGIN;
CREATE ROLE regress_iapi_granter NOLOGIN;
CREATE ROLE regress_iapi_grantee NOLOGIN;
GRANT EXECUTE ON FUNCTION iapi_tokens.check_token(text, boolean) TO regress_iapi_granter WITH GRANT OPTION;
SET ROLE regress_iapi_granter;
GRANT EXECUTE ON FUNCTION iapi_tokens.check_token(text, boolean) TO regress_iapi_grantee;
RESET ROLE;
SET ROLE regress_iapi_super;
ALTER EXTENSION iapi_tokens UPDATE TO '1.6';
RESET ROLE;
SELECT extversion FROM pg_extension WHERE extname = 'iapi_tokens';
SELECT p.proname, p.proowner = (SELECT proowner FROM pg_proc WHERE oid = 'iapi_tokens.hash_token(text)'::regprocedure) AS owner_kept
  FROM pg_proc p
 WHERE p.oid IN ('iapi_tokens.verify_token(text)'::regprocedure,
				 'iapi_tokens.authenticate(text)'::regprocedure,
				 'iapi_tokens.check_token(text, boolean)'::regprocedure)
 ORDER BY p.proname;
SELECT t.typname, t.typowner = (SELECT proowner FROM pg_proc WHERE oid = 'iapi_tokens.hash_token(text)'::regprocedure) AS owner_kept
  FROM pg_type t WHERE t.oid IN ('iapi_tokens.verified_token'::regtype, 'iapi_tokens.token_check'::regtype)
 ORDER BY t.typname;
SELECT CASE WHEN a.grantor = p.proowner THEN 'the owner' ELSE a.grantor::regrole::text END AS grantor,
	   a.grantee::regrole, a.is_grantable
  FROM pg_proc p, aclexplode(p.proacl) a
 WHERE p.oid = 'iapi_tokens.check_token(text, boolean)'::regprocedure
   AND a.grantee IN ('regress_iapi_granter'::regrole, 'regress_iapi_grantee'::regrole)
 ORDER BY 2;
-- Revoking the grant option still takes the grant made with it.
REVOKE EXECUTE ON FUNCTION iapi_tokens.check_token(text, boolean) FROM regress_iapi_granter CASCADE;
SELECT has_function_privilege('regress_iapi_grantee', 'iapi_tokens.check_token(text, boolean)', 'EXECUTE') AS grantee_keeps_through_public,
	   EXISTS (SELECT FROM pg_proc p, aclexplode(p.proacl) a
				WHERE p.oid = 'iapi_tokens.check_token(text, boolean)'::regprocedure
				  AND a.grantee = 'regress_iapi_grantee'::regrole) AS grantee_entry_left;
DROP ROLE regress_iapi_super, regress_iapi_granter, regress_iapi_grantee;
-- pg_dump's record of the extension's own grants is a fresh install's, so
-- that a dump keeps this database's revocation from PUBLIC and its grant.
SELECT EXISTS (SELECT FROM pg_init_privs ip, aclexplode(ip.initprivs) a
				WHERE ip.objoid = 'iapi_tokens.verify_token(text)'::regprocedure
				  AND a.grantee = 0) AS init_privs_have_public,
	   NOT EXISTS (SELECT FROM pg_init_privs ip, aclexplode(ip.initprivs) a
					WHERE ip.objoid = 'iapi_tokens.verify_token(text)'::regprocedure
					  AND a.grantee = 'regress_iapi_app'::regrole) AS app_grant_is_the_users;
SELECT p.oid::regprocedure AS function, pg_get_function_result(p.oid) AS result
  FROM pg_proc p
 WHERE p.oid IN ('iapi_tokens.verify_token(text)'::regprocedure,
				 'iapi_tokens.authenticate(text)'::regprocedure,
				 'iapi_tokens.check_token(text, boolean)'::regprocedure)
 ORDER BY p.proname;
SELECT has_function_privilege('regress_iapi_app', 'iapi_tokens.verify_token(text)', 'EXECUTE') AS app_keeps_verify,
	   has_function_privilege('regress_iapi_p12', 'iapi_tokens.verify_token(text)', 'EXECUTE') AS public_still_revoked,
	   has_function_privilege('regress_iapi_p12', 'iapi_tokens.check_token(text, boolean)', 'EXECUTE') AS public_keeps_check;
SELECT token_id = :t1 AS verifies_under_1_6 FROM iapi_tokens.verify_token(:'tok1');
SELECT token_id = :t1 AS authenticates, (SELECT token_id FROM iapi_tokens.current_token()) = :t1 AS current
  FROM iapi_tokens.authenticate(:'tok1');
SELECT status, token_id = :t5 AS same_token, rate_limit FROM iapi_tokens.check_token(:'tok5');
SELECT status FROM iapi_tokens.check_token('not a token');

-- Apart from those grants, the updated catalog is the fresh one.
REVOKE EXECUTE ON FUNCTION iapi_tokens.create_access_token(integer, text, text[], jsonb, integer, interval),
	iapi_tokens.rotate_access_token(uuid, interval) FROM regress_iapi_p12;
REVOKE EXECUTE ON FUNCTION iapi_tokens.revoke_token(bigint, bigint) FROM regress_iapi_app;
REVOKE EXECUTE ON FUNCTION iapi_tokens.list_token_details(bigint, boolean) FROM regress_iapi_app;
GRANT EXECUTE ON FUNCTION iapi_tokens.verify_token(text) TO PUBLIC;
REVOKE EXECUTE ON FUNCTION iapi_tokens.verify_token(text) FROM regress_iapi_app;
GRANT EXECUTE ON FUNCTION iapi_tokens.authenticate(text) TO PUBLIC;
REVOKE EXECUTE ON FUNCTION iapi_tokens.authenticate(text) FROM regress_iapi_app;
SELECT * FROM public.iapi_fingerprint() EXCEPT SELECT * FROM fresh;
SELECT * FROM fresh EXCEPT SELECT * FROM public.iapi_fingerprint();

DROP EXTENSION iapi_tokens;
DROP FUNCTION public.iapi_fingerprint();
DROP FUNCTION public.iapi_acl(aclitem[], "char", oid);
DROP ROLE regress_iapi_app;
DROP ROLE regress_iapi_p12;
