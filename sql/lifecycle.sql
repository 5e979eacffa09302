-- The Import API token lifecycle of the seeds: create a source, generate two
-- tokens, refuse a third, list newest first, rotate (002), revoke, delete.
\set SHOW_CONTEXT never
CREATE EXTENSION iapi_tokens;

-- Step 1: the source, as GET /v4/sources shows it.
SELECT iapi_tokens.create_source('import_api_tokens_example',
								 'Import API tokens example', 116078) AS sid \gset
SELECT key FROM jsonb_object_keys(iapi_tokens.source_json(:sid)) AS key ORDER BY key;
SELECT s->>'name' AS name, s->>'display_name' AS display_name, s->>'type' AS type,
	   s->'stitch_client_id' AS client, s->'properties' AS properties,
	   s->'schedule' AS schedule, s->'deleted_at' AS deleted_at,
	   s->'paused_at' AS paused_at, s->'system_paused_at' AS system_paused_at,
	   s->>'created_at' ~ '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$' AS created_at_iso_utc,
	   s->>'updated_at' ~ '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$' AS updated_at_iso_utc,
	   jsonb_typeof(s->'id') AS id_type
  FROM iapi_tokens.source_json(:sid) s;
-- Until it has a token, the report card stops at the form step.
SELECT iapi_tokens.source_json(:sid)->'report_card' AS report_card;
-- Timestamps are UTC whatever the session's time zone.
SET TIME ZONE 'America/New_York';
SELECT iapi_tokens.source_json(:sid)->>'created_at'
	 = to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS utc
  FROM iapi_tokens.sources WHERE id = :sid;
RESET TIME ZONE;

SELECT iapi_tokens.create_source('another_client_source', NULL, 999) AS other_sid \gset
SELECT s->>'name' AS name, s->>'display_name' AS display_name
  FROM iapi_tokens.list_sources(116078) s;
SELECT count(*) AS all_sources FROM iapi_tokens.list_sources();
SELECT count(*) AS unknown_client FROM iapi_tokens.list_sources(424242);

-- Step 2: generate a token; the plaintext is shown once, here.
SELECT id AS t1, access_token AS tok1 FROM iapi_tokens.generate_token(:sid) \gset
SELECT iapi_tokens.source_json(:sid)->'report_card'->>'current_step_type' AS step;

-- Rotation, step 2: a second token.
SELECT id AS t2, access_token AS tok2
  FROM iapi_tokens.generate_token(:sid, 'rotation replacement') \gset
SELECT :t2 > :t1 AS newer_id_is_greater;

-- A third active token is refused.
SELECT * FROM iapi_tokens.generate_token(:sid);
\echo :LAST_ERROR_SQLSTATE

-- Step 3: list, newest first, with created_at.
SELECT array_agg(token_id ORDER BY ord) = ARRAY[:t2, :t1]::bigint[] AS newest_first,
	   bool_and(created_at IS NOT NULL) AS have_created_at
  FROM iapi_tokens.list_tokens(:sid) WITH ORDINALITY AS l(token_id, created_at, ord);

-- Step 4: the client switches; both tokens verify meanwhile.
SELECT (SELECT token_id FROM iapi_tokens.verify_token(:'tok1')) = :t1 AS old_verifies,
	   (SELECT token_id FROM iapi_tokens.verify_token(:'tok2')) = :t2 AS new_verifies;

-- Step 5: revoke the original; the Source comes back with a new updated_at.
SELECT updated_at AS before_revoke FROM iapi_tokens.sources WHERE id = :sid \gset
SELECT s->>'name' AS name, s->'report_card'->>'current_step_type' AS step
  FROM iapi_tokens.revoke_token(:sid, :t1) s;
SELECT updated_at > :'before_revoke' AS updated_at_bumped
  FROM iapi_tokens.sources WHERE id = :sid;

-- Step 6: only the new token is listed, and only it verifies.
SELECT array_agg(token_id) = ARRAY[:t2]::bigint[] AS only_new_token
  FROM iapi_tokens.list_tokens(:sid);
SELECT count(*) AS old_rows FROM iapi_tokens.verify_token(:'tok1');
SELECT count(*) AS new_rows FROM iapi_tokens.verify_token(:'tok2');

-- The revoked row is kept for audit.
SELECT id = :t1 AS is_t1, revoked_at IS NOT NULL AS revoked
  FROM iapi_tokens.tokens WHERE source_id = :sid ORDER BY id;
SELECT token_id = :t1 AS is_t1, status, description, display_prefix ~ '^iapi_.{4}$' AS prefix
  FROM iapi_tokens.list_token_details(:sid, include_inactive => true);
SELECT count(*) AS active_details FROM iapi_tokens.list_token_details(:sid);

-- Revoking freed a slot.
SELECT id AS t3, access_token AS tok3 FROM iapi_tokens.generate_token(:sid) \gset
SELECT :t3 > :t2 AS ids_keep_increasing;

-- Deleting the source revokes its tokens in the same transaction.
SELECT s->'deleted_at' IS NOT NULL AND s->>'deleted_at' <> 'null' AS deleted,
	   s->'report_card'->>'current_step_type' AS step
  FROM iapi_tokens.delete_source(:sid) s;
SELECT count(*) AS active_after_delete FROM iapi_tokens.list_tokens(:sid);
SELECT count(*) AS verifies_after_delete
  FROM iapi_tokens.verify_token(:'tok2') a, iapi_tokens.verify_token(:'tok3') b;
SELECT count(*) FILTER (WHERE revoked_at IS NULL) AS unrevoked,
	   count(*) AS kept
  FROM iapi_tokens.tokens WHERE source_id = :sid;
-- A deleted source accepts no new token, and stays listed with deleted_at.
SELECT * FROM iapi_tokens.generate_token(:sid);
\echo :LAST_ERROR_SQLSTATE
SELECT s->>'name' AS name, s->>'deleted_at' IS NOT NULL AS has_deleted_at
  FROM iapi_tokens.list_sources(116078) s;
-- Its name can be used again.
SELECT iapi_tokens.create_source('import_api_tokens_example', NULL, 116078) > :sid
	AS name_reused;

-- An aborted generate leaves nothing behind.
BEGIN;
SELECT count(*) FROM iapi_tokens.generate_token(:other_sid);
ROLLBACK;
SELECT count(*) AS tokens_after_rollback FROM iapi_tokens.tokens WHERE source_id = :other_sid;

DROP EXTENSION iapi_tokens;
