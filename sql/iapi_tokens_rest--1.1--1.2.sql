-- iapi_tokens_rest 1.1 -> 1.2: whoami shows the token's last use and use
-- count (iapi_tokens 1.4).  whoami keeps its signature and is replaced in
-- place, so the grants rest/roles.sql made on it stay the user's.

\echo Use "ALTER EXTENSION iapi_tokens_rest UPDATE TO '1.2'" to load this file. \quit

DO $$
BEGIN
	IF (SELECT pg_catalog.string_to_array(e.extversion, '.')::integer[]
		  FROM pg_catalog.pg_extension e WHERE e.extname = 'iapi_tokens')
	   OPERATOR(pg_catalog.<) '{1,4}'::integer[] THEN
		RAISE EXCEPTION 'iapi_tokens_rest 1.2 needs iapi_tokens 1.4 or later'
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'Run ALTER EXTENSION iapi_tokens UPDATE first.';
	END IF;
END
$$;

ALTER TYPE iapi_rest.identity ADD ATTRIBUTE last_used_at text;
ALTER TYPE iapi_rest.identity ADD ATTRIBUTE use_count bigint;

CREATE OR REPLACE FUNCTION iapi_rest.whoami()
RETURNS iapi_rest.identity
LANGUAGE plpgsql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	result iapi_rest.identity;
BEGIN
	-- Last use and count as the usage flushes applied them, not this request.
	SELECT t.token_id, t.source_id, s.stitch_client_id, t.owner::text, t.access_token_id,
		   iapi_tokens.iso8601(t.created_at), iapi_tokens.iso8601(t.expires_at),
		   iapi_tokens.iso8601(k.last_used_at), k.use_count
	  INTO result
	  FROM iapi_tokens.current_token() t
	  LEFT JOIN iapi_tokens.sources s ON s.id = t.source_id
	  LEFT JOIN iapi_tokens.tokens k ON k.id = t.token_id;
	IF NOT FOUND THEN
		PERFORM iapi_rest_internal.raise_unauthorized('no API key was given', NULL);
	END IF;
	RETURN result;
END
$$;

COMMENT ON FUNCTION iapi_rest.whoami() IS
	'GET /rpc/whoami: who the request''s X-Api-Key belongs to: a source (and its client) or a role';
