-- (a) verify_token; run with the default last_used_interval for the steady
-- state and with PGOPTIONS='-c iapi_tokens.last_used_interval=0' for (a0).
\set i random(1, :n)
SELECT * FROM iapi_tokens.verify_token((SELECT token FROM bench.plain WHERE i = :i));
