-- (b) the floor: the same lookup verify_token does, as a plain prepared
-- SELECT on the same table (no checksum check, no last_used_at bookkeeping).
\set i random(1, :n)
SELECT id, source_id, created_at, expires_at, last_used_at
  FROM iapi_tokens.tokens
 WHERE token_hash = sha256(convert_to((SELECT token FROM bench.plain WHERE i = :i), 'UTF8'))
   AND revoked_at IS NULL
   AND (expires_at IS NULL OR expires_at > now());
