-- (a0) a first use: every call verifies a token that no call verified before.
-- Call k of client c takes the never-used token first + permute(j, pool) for
-- j = offset + (k - 1) * nclients + c: a fixed pseudorandom permutation of
-- the pool (so as scattered over the table as (a)'s random tokens), each j
-- once (run with -D k=0, an offset per round, and -t so that each round
-- stays in its share).  The statement is verify.sql's.
\set k :k + 1
\set i :first + permute(:offset + (:k - 1) * :nclients + :client_id, :pool, 20261202)
SELECT * FROM iapi_tokens.verify_token((SELECT token FROM bench.plain WHERE i = :i));
