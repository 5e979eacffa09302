-- last_used_at: written at most once per iapi_tokens.last_used_interval, never
-- in a read-only transaction, and never at the cost of verification.
\set SHOW_CONTEXT never
CREATE EXTENSION iapi_tokens;
SELECT iapi_tokens.create_source('usage') AS sid \gset
SELECT id AS tid, access_token AS tok FROM iapi_tokens.generate_token(:sid) \gset

SHOW iapi_tokens.last_used_interval;
SELECT last_used_at IS NULL AS never_used FROM iapi_tokens.tokens WHERE id = :tid;

-- The first use is recorded and returned.
SELECT last_used_at IS NOT NULL AS returned FROM iapi_tokens.verify_token(:'tok');
SELECT last_used_at AS first_use FROM iapi_tokens.tokens WHERE id = :tid \gset
SELECT :'first_use' <> '' AS recorded;

-- Within the interval, further uses write nothing.
SELECT count(*) FROM iapi_tokens.verify_token(:'tok');
SELECT last_used_at = :'first_use' AS unchanged FROM iapi_tokens.tokens WHERE id = :tid;

-- With interval 0, every use is recorded.
SET iapi_tokens.last_used_interval = 0;
SELECT count(*) FROM iapi_tokens.verify_token(:'tok');
SELECT last_used_at > :'first_use' AS advanced FROM iapi_tokens.tokens WHERE id = :tid;

-- A read-only transaction verifies without error and writes nothing.
SELECT last_used_at AS second_use FROM iapi_tokens.tokens WHERE id = :tid \gset
BEGIN READ ONLY;
SELECT token_id = :tid AS verified FROM iapi_tokens.verify_token(:'tok');
COMMIT;
SET default_transaction_read_only = on;
SELECT token_id = :tid AS verified FROM iapi_tokens.verify_token(:'tok');
RESET default_transaction_read_only;
SELECT last_used_at = :'second_use' AS unchanged_by_read_only
  FROM iapi_tokens.tokens WHERE id = :tid;

-- The write is part of the caller's transaction: a rollback undoes it.
BEGIN;
SELECT count(*) FROM iapi_tokens.verify_token(:'tok');
ROLLBACK;
SELECT last_used_at = :'second_use' AS rolled_back FROM iapi_tokens.tokens WHERE id = :tid;

-- A failed write is swallowed: verification still answers, without error.
CREATE FUNCTION public.refuse_update() RETURNS trigger LANGUAGE plpgsql
AS $$ BEGIN RAISE EXCEPTION 'updates refused'; END $$;
CREATE TRIGGER refuse_update BEFORE UPDATE ON iapi_tokens.tokens
	FOR EACH ROW EXECUTE FUNCTION public.refuse_update();
SELECT token_id = :tid AS verified_despite_failed_write
  FROM iapi_tokens.verify_token(:'tok');
SELECT last_used_at = :'second_use' AS not_written FROM iapi_tokens.tokens WHERE id = :tid;
-- A full disk only costs the write, too.
CREATE OR REPLACE FUNCTION public.refuse_update() RETURNS trigger LANGUAGE plpgsql
AS $$ BEGIN RAISE EXCEPTION 'no space left' USING ERRCODE = 'disk_full'; END $$;
SELECT token_id = :tid AS verified_despite_full_disk
  FROM iapi_tokens.verify_token(:'tok');
-- A cancel is the caller's decision and is not swallowed.
CREATE OR REPLACE FUNCTION public.refuse_update() RETURNS trigger LANGUAGE plpgsql
AS $$ BEGIN RAISE EXCEPTION 'canceling statement' USING ERRCODE = 'query_canceled'; END $$;
SELECT count(*) FROM iapi_tokens.verify_token(:'tok');
\echo :LAST_ERROR_SQLSTATE
DROP TRIGGER refuse_update ON iapi_tokens.tokens;
DROP FUNCTION public.refuse_update();
SELECT last_used_at = :'second_use' AS not_written FROM iapi_tokens.tokens WHERE id = :tid;

-- One transaction records at most 32 uses, so that its subtransactions never
-- overflow the 64-entry subxid cache; the rest are recorded later.
CREATE TEMP TABLE batch AS
SELECT t.access_token AS token
  FROM generate_series(1, 20) g,
	   LATERAL iapi_tokens.create_source('batch_' || g) s(id),
	   LATERAL generate_series(1, 2) n,
	   LATERAL iapi_tokens.generate_token(s.id, CASE WHEN n > 0 THEN 'batch' END) t;
RESET iapi_tokens.last_used_interval;
BEGIN;
SELECT count(DISTINCT token) AS verified FROM batch, iapi_tokens.verify_token(batch.token);
COMMIT;
SELECT count(last_used_at) AS recorded, count(*) AS tokens
  FROM iapi_tokens.tokens WHERE description = 'batch';
SELECT count(DISTINCT token) AS verified FROM batch, iapi_tokens.verify_token(batch.token);
SELECT count(last_used_at) AS recorded, count(*) AS tokens
  FROM iapi_tokens.tokens WHERE description = 'batch';

-- -1 turns recording off.
SET iapi_tokens.last_used_interval = -1;
SELECT last_used_at AS before_off FROM iapi_tokens.tokens WHERE id = :tid \gset
SELECT count(*) FROM iapi_tokens.verify_token(:'tok');
SELECT last_used_at = :'before_off' AS not_recorded FROM iapi_tokens.tokens WHERE id = :tid;

-- Units work as for any time GUC.
SET iapi_tokens.last_used_interval = '1min';
SHOW iapi_tokens.last_used_interval;
SET iapi_tokens.last_used_interval = '1h';
SHOW iapi_tokens.last_used_interval;
RESET iapi_tokens.last_used_interval;

DROP EXTENSION iapi_tokens;
