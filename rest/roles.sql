-- The roles PostgREST uses for iapi_tokens_rest, and their grants.  Run once
-- per cluster as a superuser, after CREATE EXTENSION iapi_tokens_rest:
--
--   psql -v ON_ERROR_STOP=1 -v authenticator_password='...' -f rest/roles.sql
--
-- and then, also as a superuser, once per user who may hold personal tokens,
-- for example for a JWT {"role": "alice"}:
--
--   psql -v ON_ERROR_STOP=1 -v token_user=alice -f rest/roles.sql
--
--   iapi_authenticator  PostgREST's login (db-uri); NOINHERIT, so it holds no
--                       privilege itself, only the roles it may switch to.
--   iapi_anon           requests without a JWT (db-anon-role): API-key routes
--                       only, i.e. GET /rpc/whoami.
--   iapi_source_admin   the JWT role of Stitch Connect clients: the source
--                       routes, scoped by the stitch_client_id claim.
--   iapi_token_user     group of the roles that own personal tokens: each
--                       user is a role of its own, a member of this group,
--                       named by the JWT's role claim (see README.md).
--   iapi_leak_reporter  the JWT role of a secret scanner: POST
--                       /rpc/revoke_leaked only.
--
-- The roles are NOLOGIN: only the authenticator reaches them, after
-- PostgREST has checked the JWT that names them.  Anyone who could log in as
-- one of them could also set request.jwt.claims.

\if :{?token_user}
-- A user: a role of its own (made NOLOGIN if it does not exist), a member of
-- iapi_token_user, which PostgREST may switch to.  The authenticator must
-- never become the group itself: a group's personal tokens would be shared
-- by every member, and the routes refuse a group role with 403.  From 16 on
-- the user's membership is granted WITH SET FALSE, so that neither the user
-- nor the authenticator, through the user, can SET ROLE to the group; the
-- user still has its grants (INHERIT TRUE).  On an existing member this
-- changes the options of its membership.  15 has no SET option: there the
-- authenticator can switch to the group through any member, and only the
-- routes' 403 stands in the way.
SELECT pg_catalog.current_setting('server_version_num')::integer >= 160000
	AS iapi_has_set_option \gset
SELECT pg_catalog.format('CREATE ROLE %I NOLOGIN', :'token_user')
 WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_roles r WHERE r.rolname = :'token_user') \gexec
\if :iapi_has_set_option
GRANT iapi_token_user TO :"token_user" WITH INHERIT TRUE, SET FALSE;
\else
GRANT iapi_token_user TO :"token_user";
\endif
GRANT :"token_user" TO iapi_authenticator;
\quit
\endif

\if :{?authenticator_password}
\else
\echo 'usage: psql -v authenticator_password=... -f rest/roles.sql'
\echo '       psql -v token_user=... -f rest/roles.sql'
\quit
\endif

CREATE ROLE iapi_authenticator LOGIN NOINHERIT PASSWORD :'authenticator_password';
CREATE ROLE iapi_anon NOLOGIN;
CREATE ROLE iapi_source_admin NOLOGIN;
CREATE ROLE iapi_token_user NOLOGIN;
CREATE ROLE iapi_leak_reporter NOLOGIN;
GRANT iapi_anon, iapi_source_admin, iapi_leak_reporter TO iapi_authenticator;

-- PostgREST passes request.headers, which holds X-Api-Key and the JWT, as a
-- bind parameter: keep bind parameters of its statements out of the log,
-- even under log_statement = all.
ALTER ROLE iapi_authenticator SET log_parameter_max_length = 0;
ALTER ROLE iapi_authenticator SET log_parameter_max_length_on_error = 0;
-- auto_explain, wherever it is loaded from, logs the plans of those
-- statements: with log_verbose, a custom plan prints each bind parameter as
-- a constant, and from 16 on auto_explain lists the parameters itself.  No
-- plan of the authenticator's sessions is logged.  The setting is PGC_SUSET,
-- so only a superuser can undo it, and it is stored whether or not
-- auto_explain is loaded when this runs.
ALTER ROLE iapi_authenticator SET auto_explain.log_min_duration = -1;

GRANT USAGE ON SCHEMA iapi_rest, iapi_rest_internal, iapi_tokens
	TO iapi_anon, iapi_source_admin, iapi_token_user, iapi_leak_reporter;

-- The pre-request runs for every request, as the request's role, and so do
-- the helpers of the SECURITY INVOKER routes: they read the request and
-- raise errors, nothing else.
GRANT EXECUTE ON FUNCTION
	iapi_rest.authenticate(),
	iapi_tokens.authenticate(text),
	iapi_tokens.check_token(text, boolean),
	iapi_tokens.current_token(),
	iapi_rest_internal.request_header(text),
	iapi_rest_internal.raise_http(integer, text, text, text),
	iapi_rest_internal.rethrow(text, text, text, text),
	iapi_rest_internal.raise_unauthorized(text, text),
	iapi_rest_internal.raise_rate_limited(integer, interval, integer),
	iapi_rest_internal.rate_limit_headers(integer, interval, integer, integer),
	iapi_rest_internal.path_param(anyelement, text, text),
	iapi_rest_internal.iso8601_ms(timestamptz),
	iapi_rest_internal.token_info(uuid, text, timestamptz, timestamptz, timestamptz),
	iapi_rest_internal.token_owner(),
	iapi_rest_internal.require_scope(text),
	iapi_tokens.has_scope(text)
	TO iapi_anon, iapi_source_admin, iapi_token_user, iapi_leak_reporter;

-- The API-key routes: who the key belongs to, and the scoped example.
GRANT EXECUTE ON FUNCTION
	iapi_rest.whoami(),
	iapi_rest.my_source()
	TO iapi_anon, iapi_source_admin, iapi_token_user;

-- A secret scanner's report.  The route runs as the extension's owner; the
-- audit trail records iapi_leak_reporter as the acting role.
GRANT EXECUTE ON FUNCTION iapi_rest.revoke_leaked(jsonb) TO iapi_leak_reporter;

GRANT EXECUTE ON FUNCTION
	iapi_rest.create_source(text, text),
	iapi_rest.list_sources(),
	iapi_rest.generate_token(bigint, text[], jsonb, integer, integer),
	iapi_rest.generate_token_v3(bigint),
	iapi_rest.list_tokens(bigint),
	iapi_rest.revoke_token(bigint, bigint)
	TO iapi_source_admin;

-- The personal-token routes run as the caller, who owns the tokens, so the
-- caller also needs the core functions they call.
GRANT EXECUTE ON FUNCTION
	iapi_rest.create_access_token(integer, text, text[], jsonb, integer, integer),
	iapi_rest.list_access_tokens(),
	iapi_rest.get_access_token(uuid),
	iapi_rest.delete_access_token(uuid),
	iapi_tokens.create_access_token(integer, text, text[], jsonb, integer, interval),
	iapi_tokens.list_access_tokens(),
	iapi_tokens.get_access_token(uuid),
	iapi_tokens.delete_access_token(uuid),
	iapi_tokens.set_access_token_rate_limit(uuid, integer, interval)
	TO iapi_token_user;

-- A user who may hold personal tokens, e.g. for a JWT {"role": "alice"}:
-- run this script with -v token_user=alice (above), which does, on 16 and
-- later:
--   CREATE ROLE alice NOLOGIN;
--   GRANT iapi_token_user TO alice WITH INHERIT TRUE, SET FALSE;
--   GRANT alice TO iapi_authenticator;
-- and on 15, which has no SET option:
--   CREATE ROLE alice NOLOGIN IN ROLE iapi_token_user;
--   GRANT alice TO iapi_authenticator;
-- Never grant iapi_token_user itself to iapi_authenticator.
