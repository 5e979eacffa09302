-- (f) the subquery every other script shares: fetch the plaintext token.
\set i random(1, :n)
SELECT token FROM bench.plain WHERE i = :i;
