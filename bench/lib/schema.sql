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

-- The warm-up: verify tokens lo..hi once each.  verify_token records at most
-- 32 uses per transaction (each costs a subtransaction; see README.md), so
-- this commits after every 32 verifications.
CREATE PROCEDURE bench.warm(lo int, hi int, INOUT verified bigint DEFAULT 0)
LANGUAGE plpgsql
AS $$
DECLARE
	r record;
	n int := 0;
BEGIN
	FOR r IN SELECT p.token FROM bench.plain p WHERE p.i BETWEEN lo AND hi ORDER BY p.i
	LOOP
		verified := verified + (SELECT count(*) FROM iapi_tokens.verify_token(r.token));
		n := n + 1;
		IF n % 32 = 0 THEN
			COMMIT;
		END IF;
	END LOOP;
END
$$;
