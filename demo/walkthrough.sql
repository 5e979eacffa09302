-- The seeds' walkthrough (Stitch Connect "Managing and Revoking Import API
-- Access Tokens"), played in SQL against a throw-away cluster.
\set ON_ERROR_STOP on
\set QUIET on
\pset format unaligned
\pset tuples_only on
CREATE EXTENSION iapi_tokens;

\echo '\n== An Import API source (POST /v4/sources)'
SELECT iapi_tokens.create_source('import_api_tokens_example',
								 'Import API tokens example', 116078) AS source_id \gset
\echo source_id = :source_id

\echo '\n== Generate: step 1, find the source (GET /v4/sources)'
SELECT jsonb_pretty(jsonb_agg(s)) FROM iapi_tokens.list_sources(116078) s;

\echo '\n== Generate: step 2, create the access token (POST /v4/sources/{source_id}/tokens)'
SELECT id AS original_id, access_token AS original_token
  FROM iapi_tokens.generate_token(:source_id, 'original') \gset
SELECT jsonb_pretty(jsonb_build_object('id', :original_id, 'access_token', :'original_token'));
\echo 'The plaintext is shown this once; the database keeps only its SHA-256:'
SELECT '  token_hash = ' || encode(token_hash, 'hex') || E'\n  display_prefix = ' || display_prefix
  FROM iapi_tokens.tokens WHERE id = :original_id;

\echo '\n== Rotate: step 2, create a second token'
SELECT id AS new_id, access_token AS new_token
  FROM iapi_tokens.generate_token(:source_id, 'replacement') \gset
SELECT jsonb_pretty(jsonb_build_object('id', :new_id, 'access_token', :'new_token'));

\echo '\n== A third active token is refused: at most two per source'
DO $$
BEGIN
	PERFORM iapi_tokens.generate_token(
		(SELECT id FROM iapi_tokens.sources WHERE name = 'import_api_tokens_example'));
EXCEPTION WHEN check_violation THEN
	RAISE NOTICE 'SQLSTATE 23514: %', SQLERRM;
END $$;

\echo '\n== Rotate: step 3, the token ids, newest first (GET /v4/sources/{source_id}/tokens)'
SELECT jsonb_pretty(jsonb_agg(jsonb_build_object(
		'token_id', token_id, 'created_at', iapi_tokens.iso8601(created_at))))
  FROM iapi_tokens.list_tokens(:source_id);

\echo '\n== Rotate: step 4, the application switches; both tokens verify meanwhile'
SELECT '  original -> token_id ' || coalesce((SELECT token_id::text FROM iapi_tokens.verify_token(:'original_token')), 'none');
SELECT '  new      -> token_id ' || coalesce((SELECT token_id::text FROM iapi_tokens.verify_token(:'new_token')), 'none');

\echo '\n== Rotate: step 5, revoke the original (DELETE /v4/sources/{source_id}/tokens/{token_id})'
SELECT jsonb_pretty(iapi_tokens.revoke_token(:source_id, :original_id));

\echo '\n== Rotate: step 6, only the new token is left'
SELECT jsonb_pretty(jsonb_agg(token_id)) FROM iapi_tokens.list_tokens(:source_id);
SELECT '  original -> ' || coalesce((SELECT token_id::text FROM iapi_tokens.verify_token(:'original_token')), 'no row: revoked');
SELECT '  new      -> token_id ' || coalesce((SELECT token_id::text FROM iapi_tokens.verify_token(:'new_token')), 'none');

\echo '\n== Malformed or look-alike tokens are rejected by their checksum, with no error'
SELECT '  ' || label || ' -> ' || (SELECT count(*) FROM iapi_tokens.verify_token(t)) || ' rows'
  FROM (VALUES ('last character changed', left(:'new_token', -1) || 'x'),
			   ('garbage', 'iapi_hello'),
			   ('NULL', NULL)) v(label, t);

\echo '\n== Expiry: a token with a 2-second lifetime'
SELECT id AS short_id, access_token AS short_token
  FROM iapi_tokens.generate_token(:source_id, 'short-lived', '2 seconds') \gset
SELECT '  now        -> ' || count(*) || ' row' FROM iapi_tokens.verify_token(:'short_token');
SELECT pg_sleep(2.1) \g /dev/null
SELECT '  2 s later  -> ' || count(*) || ' rows' FROM iapi_tokens.verify_token(:'short_token');

\echo '\n== Use is recorded off the transaction: a read-only one (a PostgREST GET) counts too'
BEGIN READ ONLY;
SELECT count(*) AS ro_uses FROM generate_series(1, 3) g,
	   LATERAL iapi_tokens.verify_token(CASE WHEN g > 0 THEN :'new_token' END) v \gset
COMMIT;
DO $$
BEGIN
	FOR i IN 1..300 LOOP	-- the background worker flushes every 100 ms here
		EXIT WHEN (SELECT uses_pending FROM iapi_tokens.usage_stats()) = 0;
		PERFORM pg_sleep(0.1);
	END LOOP;
END
$$;
SELECT '  after ' || :ro_uses || ' more, read-only -> use_count ' || use_count
	   || ', last used ' || to_char(clock_timestamp() - last_used_at, 'SS.MS') || ' s ago'
  FROM iapi_tokens.list_token_details(:source_id) WHERE token_id = :new_id;

\echo '\n== Rotation with overlap: a new token now, the current one keeps working for an hour'
SELECT id AS rotated_id, access_token AS rotated_token
  FROM iapi_tokens.rotate_token(:source_id, :new_id, '1 hour') \gset
SELECT '  previous -> ' || coalesce((SELECT 'valid until ' || to_char(expires_at - now(), 'HH24:MI:SS') || ' from now'
									   FROM iapi_tokens.verify_token(:'new_token')), 'none');
SELECT '  rotated  -> token_id ' || coalesce((SELECT token_id::text FROM iapi_tokens.verify_token(:'rotated_token')), 'none');

\echo '\n== Personal access tokens (Trifacta POST /v4/apiAccessTokens), owned by the calling role'
CREATE ROLE demo_analyst NOLOGIN;
GRANT EXECUTE ON FUNCTION iapi_tokens.create_access_token(integer, text, text[], jsonb, integer, interval),
	iapi_tokens.list_access_tokens(), iapi_tokens.delete_access_token(uuid)
	TO demo_analyst;
SET ROLE demo_analyst;
SELECT token_value AS personal_token, token_id AS personal_id
  FROM iapi_tokens.create_access_token(100, 'My 100-second token') \gset
SELECT jsonb_pretty(jsonb_build_object(
		'tokenValue', :'personal_token',
		'tokenInfo', jsonb_build_object('tokenId', token_id, 'description', description,
										'expiredAt', expired_at, 'lastUsed', last_used,
										'createdAt', created_at)))
  FROM iapi_tokens.list_access_tokens();
RESET ROLE;
SELECT '  verify   -> owner ' || owner || ', tokenId ' || access_token_id
  FROM iapi_tokens.verify_token(:'personal_token');
SET ROLE demo_analyst;
SELECT iapi_tokens.delete_access_token(:'personal_id') \g /dev/null
RESET ROLE;
SELECT '  deleted  -> ' || count(*) || ' rows' FROM iapi_tokens.verify_token(:'personal_token');

\echo '\n== Every token of the source, for an audit'
\pset format aligned
\pset tuples_only off
SELECT token_id, display_prefix, description, status,
	   last_used_at IS NOT NULL AS used
  FROM iapi_tokens.list_token_details(:source_id, include_inactive => true);
\pset format unaligned
\pset tuples_only on

\echo '\n== Delete the source: its tokens are revoked in the same transaction'
SELECT jsonb_pretty(iapi_tokens.delete_source(:source_id) - 'report_card');
SELECT '  new token -> ' || count(*) || ' rows' FROM iapi_tokens.verify_token(:'new_token');

\echo '\n== The audit trail: every event, with the acting role, and no token'
\pset format aligned
\pset tuples_only off
SELECT id, action, token_id, source_id, owner_role, acting_role, details - 'expires_at' AS details
  FROM iapi_tokens.audit ORDER BY id;
\pset format unaligned
\pset tuples_only on
\echo '\n== Over HTTP (iapi_tokens_rest): the routes PostgREST serves, called as it calls them'
\echo 'PostgREST sets the verified JWT claims, calls the route, and renders its row as JSON; the status comes back in response.status.'
CREATE EXTENSION iapi_tokens_rest;
BEGIN;
SELECT set_config('request.jwt.claims', '{"role": "iapi_source_admin", "stitch_client_id": 116078}', true) \g /dev/null
SELECT id AS http_source FROM iapi_rest.create_source('http_example', 'HTTP example') \gset
SELECT '  POST /v4/sources -> ' || current_setting('response.status') || ', source ' || :http_source;
SELECT access_token AS http_token FROM iapi_rest.generate_token(:http_source) \gset
SELECT '  POST /v4/sources/' || :http_source || '/tokens -> 200, {"id", "access_token"}';
SELECT '  GET /v4/sources/' || :http_source || '/tokens -> ' || json_agg(t)
  FROM iapi_rest.list_tokens(:http_source) t;
COMMIT;

\echo '\n== Another client (stitch_client_id 116079) asks for that source: 404, as if it did not exist'
DO $$
BEGIN
	PERFORM set_config('request.jwt.claims', '{"role": "iapi_source_admin", "stitch_client_id": 116079}', true);
	PERFORM iapi_rest.list_tokens((SELECT id FROM iapi_tokens.sources WHERE name = 'http_example'));
EXCEPTION WHEN OTHERS THEN
	RAISE NOTICE 'SQLSTATE %: %', SQLSTATE, SQLERRM;
END $$;

\echo '\n== X-Api-Key: the pre-request verifies it, read-only, and GET /v4/whoami says whose it is'
BEGIN READ ONLY;
SELECT set_config('request.headers', json_build_object('x-api-key', :'http_token')::text, true) \g /dev/null
SELECT iapi_rest.authenticate() \g /dev/null
SELECT '  ' || row_to_json(w) FROM iapi_rest.whoami() w;
COMMIT;

\echo '\n== Scopes: a key limited to what it may do, refused with 403 and then accepted'
SELECT iapi_tokens.define_scope('sources:read', 'Read the source of the key') \g /dev/null
SELECT iapi_tokens.define_scope('tokens:write', 'Create tokens') \g /dev/null
BEGIN;
SELECT set_config('request.jwt.claims', '{"role": "iapi_source_admin", "stitch_client_id": 116078}', true) \g /dev/null
SELECT token_id AS other_http_token_id FROM iapi_tokens.list_tokens(:http_source) LIMIT 1 \gset
SELECT iapi_rest.revoke_token(:http_source, :other_http_token_id) \g /dev/null
-- POST /v4/sources/{id}/tokens {"scopes": ["tokens:write"], "metadata": {"plan": "pro"}}
SELECT access_token AS narrow_token
  FROM iapi_rest.generate_token(:http_source, ARRAY['tokens:write'], '{"plan": "pro"}') \gset
-- ... and one with sources:read
SELECT access_token AS reader_token
  FROM iapi_rest.generate_token(:http_source, ARRAY['sources:read']) \gset
COMMIT;
-- GET /v4/source (GET /rpc/my_source) with each key, as PostgREST runs it.
CREATE FUNCTION pg_temp.get_my_source(key text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	body text;
	detail text;
BEGIN
	PERFORM set_config('request.headers', json_build_object('x-api-key', key)::text, true);
	PERFORM iapi_rest.authenticate();
	SELECT '200 ' || json_build_object('id', s.id, 'name', s.name) INTO body FROM iapi_rest.my_source() s;
	RETURN body;
EXCEPTION WHEN SQLSTATE 'PGRST' THEN
	GET STACKED DIAGNOSTICS body = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL;
	RETURN (detail::json->>'status') || ' ' || (body::json->>'message')
		   || E'\n    WWW-Authenticate: ' || (detail::json->'headers'->>'WWW-Authenticate');
END
$$;
BEGIN READ ONLY;
SELECT '  key with tokens:write only -> ' || pg_temp.get_my_source(:'narrow_token');
COMMIT;
BEGIN READ ONLY;
SELECT '  key with sources:read      -> ' || pg_temp.get_my_source(:'reader_token');
COMMIT;
BEGIN READ ONLY;
SELECT set_config('request.headers', json_build_object('x-api-key', :'narrow_token')::text, true) \g /dev/null
SELECT iapi_rest.authenticate() \g /dev/null
SELECT '  GET /v4/whoami -> scopes ' || scopes::text || ', metadata ' || metadata::text FROM iapi_rest.whoami();
COMMIT;

\echo '\n== Rate limits: a key over its limit is answered 429, then admitted again after its window'
BEGIN;
SELECT set_config('request.jwt.claims', '{"role": "iapi_source_admin", "stitch_client_id": 116078}', true) \g /dev/null
SELECT iapi_rest.revoke_token(:http_source, d.token_id)
  FROM iapi_tokens.list_token_details(:http_source) d WHERE 'tokens:write' = ANY (d.scopes) \g /dev/null
-- POST /v4/sources/{id}/tokens {"rateLimit": 2, "rateWindowSeconds": 3}
SELECT access_token AS limited_token
  FROM iapi_rest.generate_token(:http_source, "rateLimit" => 2, "rateWindowSeconds" => 3) \gset
COMMIT;
-- GET /v4/whoami with the key, as PostgREST runs it: the status and the
-- rate-limit headers of the response.
CREATE FUNCTION pg_temp.get_whoami(key text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	body text;
	detail text;
BEGIN
	PERFORM set_config('request.headers', json_build_object('x-api-key', key)::text, true);
	PERFORM iapi_rest.authenticate();
	PERFORM iapi_rest.whoami();
	SELECT '200  ' || string_agg(h.key || ': ' || h.value, '  ' ORDER BY h.key DESC) INTO body
	  FROM json_array_elements(current_setting('response.headers')::json) e, json_each_text(e) h;
	RETURN body;
EXCEPTION WHEN SQLSTATE 'PGRST' THEN
	GET STACKED DIAGNOSTICS body = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL;
	RETURN (detail::json->>'status') || '  ' || (body::json->>'message') || E'\n       '
		   || (SELECT string_agg(h.key || ': ' || h.value, '  ' ORDER BY h.key DESC)
				 FROM json_each_text(detail::json->'headers') h);
END
$$;
BEGIN READ ONLY;
SELECT '  request 1 -> ' || pg_temp.get_whoami(:'limited_token');
COMMIT;
BEGIN READ ONLY;
SELECT '  request 2 -> ' || pg_temp.get_whoami(:'limited_token');
COMMIT;
BEGIN READ ONLY;
SELECT '  request 3 -> ' || pg_temp.get_whoami(:'limited_token');
COMMIT;
SELECT retry_after FROM iapi_tokens.check_token(:'limited_token') \gset
\echo '  ... waiting' :retry_after 'seconds (Retry-After)'
SELECT pg_sleep(:retry_after) \g /dev/null
BEGIN READ ONLY;
SELECT '  request 4 -> ' || pg_temp.get_whoami(:'limited_token');
COMMIT;

\echo '\n== A secret scanner reports a leaked key: POST /v4/credentials/revoke'
BEGIN;
SELECT '  {"tokens": [leaked, junk]} -> ' || row_to_json(r)
  FROM iapi_rest.revoke_leaked(jsonb_build_array(:'reader_token', 'iapi_notatoken')) r;
COMMIT;
SELECT '  the leaked key now -> ' || count(*) || ' rows' FROM iapi_tokens.verify_token(:'reader_token');

DROP EXTENSION iapi_tokens_rest;
DROP SCHEMA iapi_rest;
DROP EXTENSION iapi_tokens;
DROP ROLE demo_analyst;
