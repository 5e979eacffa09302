-- (d) the round trip: no table, no function.
\set i random(1, :n)
SELECT 1;
