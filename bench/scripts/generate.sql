-- (e) generate_token, each call on a fresh source so the two-token cap is
-- never hit (bench.fresh_src walks the fresh sources; :i is unused).
\set i random(1, :n)
SELECT * FROM iapi_tokens.generate_token(nextval('bench.fresh_src'));
