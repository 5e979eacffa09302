-- (c) what people write today: bench.verify_plpgsql (see lib/schema.sql).
\set i random(1, :n)
SELECT * FROM bench.verify_plpgsql((SELECT token FROM bench.plain WHERE i = :i));
