-- Bench-only objects, created in the throw-away database only.
\set ON_ERROR_STOP on
SET client_min_messages = warning;

CREATE EXTENSION pgcrypto;
CREATE EXTENSION iapi_tokens;

CREATE SCHEMA bench;

-- The plaintexts generate_token handed back, i = 1..TOKENS.  The primary key
-- is added after the load (lib/bench.sh), which is faster than maintaining it.
CREATE UNLOGGED TABLE bench.plain (i int NOT NULL, token text);

-- (c) What people write today: hash with pgcrypto, and record the use with an
-- UPDATE on every call, whether or not last_used_at changed meaningfully.
CREATE FUNCTION bench.verify_plpgsql(tok text)
RETURNS TABLE (
	token_id bigint,
	source_id bigint,
	created_at timestamptz,
	expires_at timestamptz,
	last_used_at timestamptz,
	owner regrole,
	access_token_id uuid)
LANGUAGE plpgsql VOLATILE STRICT
AS $$
BEGIN
	RETURN QUERY
	UPDATE iapi_tokens.tokens t
	   SET last_used_at = now()
	 WHERE t.token_hash = public.digest(tok, 'sha256')
	   AND t.revoked_at IS NULL
	   AND (t.expires_at IS NULL OR t.expires_at > now())
	RETURNING t.id, t.source_id, t.created_at, t.expires_at, t.last_used_at,
			  t.owner_role, t.token_uuid;
END
$$;

-- The warm-up: verify tokens lo..hi once each, 1,000 per statement.  With
-- the library preloaded verify_token writes nothing; each use waits in
-- shared memory for the flush worker.  Before each statement this waits
-- while more than half of iapi_tokens.usage_buffer_size tokens are pending
-- (where the worker flushes early), so the loaders never fill the buffer,
-- which would drop uses.
CREATE PROCEDURE bench.warm(lo int, hi int, INOUT verified bigint DEFAULT 0)
LANGUAGE plpgsql
AS $$
DECLARE
	half bigint := coalesce(current_setting('iapi_tokens.usage_buffer_size', true), '65536')::bigint / 2;
	c int;
BEGIN
	FOR c IN SELECT generate_series(lo, hi, 1000)
	LOOP
		WHILE (SELECT tokens_pending FROM iapi_tokens.usage_stats()) > half
		LOOP
			PERFORM pg_sleep(0.01);
		END LOOP;
		verified := verified + (SELECT count(*)
								  FROM bench.plain p
								 CROSS JOIN LATERAL iapi_tokens.verify_token(p.token)
								 WHERE p.i BETWEEN c AND least(c + 999, hi));
	END LOOP;
END
$$;
