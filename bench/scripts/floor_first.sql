-- (b0) the floor on the tokens (a0) and (a0d) walk: floor.sql's statement,
-- driven as first_use.sql drives verify.sql (the same permutation, -t and
-- share), so that a first use is compared with a floor whose client does
-- the same work and whose run ends the same way.  The floor records no use,
-- so the tokens stay never used whichever of the two runs first.
\set k :k + 1
\set i :first + permute(:offset + (:k - 1) * :nclients + :client_id, :pool, 20261202)
SELECT id, source_id, created_at, expires_at, last_used_at
  FROM iapi_tokens.tokens
 WHERE token_hash = sha256(convert_to((SELECT token FROM bench.plain WHERE i = :i), 'UTF8'))
   AND revoked_at IS NULL
   AND (expires_at IS NULL OR expires_at > now());
