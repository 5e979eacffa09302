-- (a) and (r): verify_token on a random warmed-up token (n = STEADY); with
-- n = 1, (h): every call on the same token.
\set i random(1, :n)
SELECT * FROM iapi_tokens.verify_token((SELECT token FROM bench.plain WHERE i = :i));
