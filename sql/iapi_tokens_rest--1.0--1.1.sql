-- iapi_tokens_rest 1.0 -> 1.1.
--
-- A fresh CREATE EXTENSION runs sql/iapi_tokens_rest.sql (1.1) alone;
-- sql/rest_catalog.sql checks that 1.0 updated by this script ends in the
-- same catalog.
--
-- Functions whose body changes keep their signature, so they are replaced
-- in place (CREATE OR REPLACE, on the extension's own functions): the grants
-- rest/roles.sql and users made on them stay as they were, and stay the
-- user's.  Dropping and re-creating them would lose those grants, and
-- granting them again here would record them as the extension's initial
-- privileges, which pg_dump leaves out.

\echo Use "ALTER EXTENSION iapi_tokens_rest UPDATE TO '1.1'" to load this file. \quit

-- ---------------------------------------------------------------------------
-- No plaintext in a statement the executor runs: auto_explain with
-- log_verbose prints the constants a custom plan makes of PL/pgSQL
-- variables.  generate_token_v3 put the new token, and authenticate the
-- X-Api-Key, in such a query.
-- ---------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION iapi_rest.generate_token_v3(source_id bigint DEFAULT NULL)
RETURNS iapi_rest.import_api_token_v3
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	generated iapi_rest.import_api_token;
	sid bigint;
	tokens jsonb;
	source jsonb;
BEGIN
	-- Errors come out of generate_token with their HTTP status already.
	generated := iapi_rest.generate_token(generate_token_v3.source_id);
	SELECT t.source_id INTO sid FROM iapi_tokens.tokens t WHERE t.id = generated.id;

	SELECT coalesce(jsonb_object_agg(d.token_id::text, d.display_prefix || '...'), '{}')
	  INTO tokens
	  FROM iapi_tokens.list_token_details(sid) d
	 WHERE d.token_id <> generated.id;
	tokens := tokens || jsonb_build_object(generated.id::text, generated.access_token);

	source := iapi_tokens.source_json(sid);
	source := source || jsonb_build_object('properties',
		(source -> 'properties') || jsonb_build_object('token', tokens));
	RETURN ROW(generated.access_token, source)::iapi_rest.import_api_token_v3;
END
$$;

CREATE OR REPLACE FUNCTION iapi_rest.authenticate()
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF iapi_rest_internal.request_header('x-api-key') IS NULL THEN
		RETURN;
	END IF;
	PERFORM FROM iapi_tokens.authenticate(iapi_rest_internal.request_header('x-api-key'));
	IF NOT FOUND THEN
		PERFORM iapi_rest_internal.raise_unauthorized('the API key is not valid', 'invalid_token');
	END IF;
END
$$;
