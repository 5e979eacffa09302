-- Rotation with overlap, for both families: with no grace the old token is
-- revoked at once (so a full source can rotate); with a grace period it
-- keeps working until the grace ends, and counts against the caps until then.
\set SHOW_CONTEXT never
CREATE EXTENSION iapi_tokens;
SELECT iapi_tokens.create_source('rotating') AS sid \gset
SELECT id AS t1, access_token AS tok1 FROM iapi_tokens.generate_token(:sid, 'first') \gset
SELECT id AS t2, access_token AS tok2 FROM iapi_tokens.generate_token(:sid, 'second') \gset

-- A full source rotates without going over the cap: t1 is revoked first.
SELECT id AS t3, access_token AS tok3 FROM iapi_tokens.rotate_token(:sid, :t1) \gset
SELECT :t3 > :t2 AS new_id, :'tok3' ~ '^iapi_[0-9A-Za-z]{39}$' AS well_formed;
SELECT count(*) AS old_verifies FROM iapi_tokens.verify_token(:'tok1');
SELECT token_id = :t3 AS new_verifies FROM iapi_tokens.verify_token(:'tok3');
SELECT array_agg(token_id ORDER BY token_id DESC) = ARRAY[:t3, :t2]::bigint[] AS listed
  FROM iapi_tokens.list_tokens(:sid);
SELECT id = :t1 AS old, revoked_at IS NOT NULL AS revoked, replaced_by = :t3 AS replaced_by_new
  FROM iapi_tokens.tokens WHERE id = :t1;
-- The replacement keeps the description (and the lifetime: none here).
SELECT description, expires_at IS NULL AS never_expires
  FROM iapi_tokens.tokens WHERE id = :t3;

-- With a grace period, on a full source, the old token would still count:
-- refused with the cap's error, and nothing changes.
SELECT * FROM iapi_tokens.rotate_token(:sid, :t2, '1 hour');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS still_two, bool_and(replaced_by IS NULL) AS nothing_rotated
  FROM iapi_tokens.tokens WHERE source_id = :sid AND revoked_at IS NULL;

-- With one token, a grace period overlaps old and new.
SELECT iapi_tokens.revoke_token(:sid, :t2) IS NOT NULL AS revoked;
SELECT id AS t4, access_token AS tok4 FROM iapi_tokens.rotate_token(:sid, :t3, '1 hour') \gset
SELECT token_id = :t3 AS old_still_verifies,
	   expires_at BETWEEN now() + interval '59 minutes' AND now() + interval '61 minutes' AS ends_after_grace
  FROM iapi_tokens.verify_token(:'tok3');
SELECT token_id = :t4 AS new_verifies FROM iapi_tokens.verify_token(:'tok4');
SELECT count(*) AS active_during_grace FROM iapi_tokens.list_tokens(:sid);
-- ...and a third token waits for the grace to end.
SELECT * FROM iapi_tokens.generate_token(:sid);
\echo :LAST_ERROR_SQLSTATE

-- A grace period never extends a token: a 1-second token rotated with an
-- hour of grace still ends after its second, and its replacement gets the
-- same lifetime.
SELECT iapi_tokens.create_source('short_lived') AS short_sid \gset
SELECT id AS short_id, access_token AS short_tok
  FROM iapi_tokens.generate_token(:short_sid, 'short', '1 second') \gset
SELECT id AS short2_id, access_token AS short2_tok
  FROM iapi_tokens.rotate_token(:short_sid, :short_id, '1 hour') \gset
SELECT o.expires_at - o.created_at AS old_lifetime, n.expires_at - n.created_at AS new_lifetime
  FROM iapi_tokens.tokens o, iapi_tokens.tokens n
 WHERE o.id = :short_id AND n.id = :short2_id;
SELECT count(*) AS old_before FROM iapi_tokens.verify_token(:'short_tok');
SELECT pg_sleep(1.2);
SELECT count(*) AS old_after, (SELECT count(*) FROM iapi_tokens.verify_token(:'short2_tok')) AS new_after
  FROM iapi_tokens.verify_token(:'short_tok');

-- Refused: revoked, expired, already rotated (t3 is in its grace period),
-- unknown, another source's, NULL arguments, a negative grace, a deleted
-- source.
SELECT * FROM iapi_tokens.rotate_token(:sid, :t1);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM iapi_tokens.rotate_token(:short_sid, :short2_id);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM iapi_tokens.rotate_token(:sid, :t3);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM iapi_tokens.rotate_token(:sid, 999999);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM iapi_tokens.rotate_token(:short_sid, :t4);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM iapi_tokens.rotate_token(999999, :t4);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM iapi_tokens.rotate_token(NULL, :t4);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM iapi_tokens.rotate_token(:sid, NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM iapi_tokens.rotate_token(:sid, :t4, NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM iapi_tokens.rotate_token(:sid, :t4, '-1 second');
\echo :LAST_ERROR_SQLSTATE
SELECT iapi_tokens.delete_source(:sid) IS NOT NULL AS deleted;
SELECT * FROM iapi_tokens.rotate_token(:sid, :t4);
\echo :LAST_ERROR_SQLSTATE
-- The failed calls changed nothing.
SELECT count(*) AS rotations FROM iapi_tokens.tokens WHERE replaced_by IS NOT NULL;

-- Personal tokens: the same, for the caller's own tokens only.
CREATE ROLE regress_iapi_rotator NOLOGIN;
CREATE ROLE regress_iapi_other NOLOGIN;
GRANT EXECUTE ON FUNCTION
	iapi_tokens.create_access_token(integer, text, text[], jsonb, integer, interval),
	iapi_tokens.list_access_tokens(),
	iapi_tokens.rotate_access_token(uuid, interval)
TO regress_iapi_rotator, regress_iapi_other;
SET ROLE regress_iapi_rotator;
SELECT token_id AS p1, token_value AS ptok1
  FROM iapi_tokens.create_access_token(3600, 'laptop') \gset
SELECT token_id AS p2, token_value AS ptok2, description,
	   expired_at - created_at AS same_lifetime, last_used IS NULL AS unused
  FROM iapi_tokens.rotate_access_token(:'p1') \gset
SELECT :'description' AS description, :'same_lifetime' AS same_lifetime, :'unused' AS unused,
	   :'p2' <> :'p1' AS new_id;
SELECT count(*) AS old_verifies FROM iapi_tokens.verify_token(:'ptok1');
SELECT owner FROM iapi_tokens.verify_token(:'ptok2');
SELECT count(*) AS listed FROM iapi_tokens.list_access_tokens();
SELECT token_id AS p3, token_value AS ptok3
  FROM iapi_tokens.rotate_access_token(:'p2', '10 minutes') \gset
SELECT count(*) AS both_verify
  FROM (SELECT FROM iapi_tokens.verify_token(:'ptok2')
		UNION ALL SELECT FROM iapi_tokens.verify_token(:'ptok3')) v;
SELECT count(*) AS listed_during_grace FROM iapi_tokens.list_access_tokens();
\set VERBOSITY sqlstate
-- The rotated-away token is gone; the one in its grace period cannot be
-- rotated twice; another role's token does not exist.
SELECT * FROM iapi_tokens.rotate_access_token(:'p1');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM iapi_tokens.rotate_access_token(:'p2');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SET ROLE regress_iapi_other;
SELECT * FROM iapi_tokens.rotate_access_token(:'p3');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
\set VERBOSITY default
SET ROLE regress_iapi_rotator;
SELECT * FROM iapi_tokens.rotate_access_token(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM iapi_tokens.rotate_access_token('00000000-0000-4000-8000-000000000000', '-1 day');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

-- The per-owner limit applies to rotations with a grace period.
SET iapi_tokens.max_tokens_per_owner = 2;
SET ROLE regress_iapi_rotator;
SELECT count(*) AS active FROM iapi_tokens.list_access_tokens() WHERE expired_at > now();
SELECT * FROM iapi_tokens.rotate_access_token(:'p3', '1 minute');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
RESET iapi_tokens.max_tokens_per_owner;

-- A replacement would outlive iapi_tokens.max_lifetime: refused.
SET ROLE regress_iapi_rotator;
SELECT token_id AS forever FROM iapi_tokens.create_access_token(-1, 'forever') \gset
RESET ROLE;
SET iapi_tokens.max_lifetime = '30min';
SET ROLE regress_iapi_rotator;
\set VERBOSITY sqlstate
SELECT * FROM iapi_tokens.rotate_access_token(:'forever');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM iapi_tokens.rotate_access_token(:'p3');
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY default
RESET ROLE;
-- (The message, for a fixed id:)
SELECT * FROM iapi_tokens_internal.check_rotation(
	ROW(1, NULL, '\x00', 'p', NULL, now(), NULL, NULL, NULL, 'regress_iapi_rotator',
		'00000000-0000-4000-8000-000000000000', NULL, NULL, 0, NULL, NULL, NULL, NULL)::iapi_tokens.tokens,
	'0', now(), 1800);
RESET iapi_tokens.max_lifetime;

DROP EXTENSION iapi_tokens;
DROP ROLE regress_iapi_rotator;
DROP ROLE regress_iapi_other;
