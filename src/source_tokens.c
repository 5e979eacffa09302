/*-------------------------------------------------------------------------
 *
 * source_tokens.c
 *	  generate_token() and rotate_token(): Import API source tokens.
 *
 * Both mint a token in C and store it through a fixed statement, so the
 * plaintext goes back to the caller and nowhere else.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/timestamp.h"

#include "iapi_tokens.h"

/* Parameters of the store and rotate statements, by name. */
enum
{
	STORE_SOURCE_ID,
	STORE_HASH,
	STORE_DISPLAY_PREFIX,
	STORE_DESCRIPTION,
	STORE_CREATED_AT,
	STORE_EXPIRES_AT,
	STORE_NARGS_1_3,
	STORE_SCOPES = STORE_NARGS_1_3,
	STORE_METADATA,
	STORE_NARGS_1_4,
	STORE_RATE_LIMIT = STORE_NARGS_1_4,
	STORE_RATE_WINDOW,
	STORE_NARGS
};

enum
{
	ROTATE_SOURCE_ID,
	ROTATE_TOKEN_ID,
	ROTATE_GRACE,
	ROTATE_HASH,
	ROTATE_DISPLAY_PREFIX,
	ROTATE_NOW,
	ROTATE_NARGS
};

/* Both return no row when a trigger skipped the insert. */
static OwnerStatement store_stmt = {
	.what = "the token insert",
	.sql = "SELECT * FROM iapi_tokens_internal.store_source_token($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
	.sql_1_4 = "SELECT * FROM iapi_tokens_internal.store_source_token($1, $2, $3, $4, $5, $6, $7, $8)",
	.sql_1_3 = "SELECT * FROM iapi_tokens_internal.store_source_token($1, $2, $3, $4, $5, $6)",
	.sql_1_2 = "INSERT INTO iapi_tokens.tokens"
	" (source_id, token_hash, display_prefix, description, created_at, expires_at)"
	" VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
	.nargs = STORE_NARGS,
	.nargs_1_4 = STORE_NARGS_1_4,
	.nargs_1_3 = STORE_NARGS_1_3,
	.argtypes = {INT8OID, BYTEAOID, TEXTOID, TEXTOID, TIMESTAMPTZOID, TIMESTAMPTZOID,
	TEXTARRAYOID, JSONBOID, INT4OID, INTERVALOID},
	.hash_param = STORE_HASH + 1,
	.token_column = 1,			/* access_token, after id */
};

static OwnerStatement rotate_stmt = {
	.what = "the source token rotation",
	.sql = "SELECT id FROM iapi_tokens_internal.rotate_source_token($1, $2, $3, $4, $5, $6) id"
	" WHERE id IS NOT NULL",
	.sql_1_2 = "SELECT iapi_tokens.rotate_source_token($1, $2, $3, $4, $5, $6)",
	.nargs = ROTATE_NARGS,
	.argtypes = {INT8OID, INT8OID, INTERVALOID, BYTEAOID, TEXTOID, TIMESTAMPTZOID},
	.hash_param = ROTATE_HASH + 1,
	.token_column = 1,			/* access_token, after id */
};

static TimestampTz
expiry_after(TimestampTz now, Interval *lifetime)
{
	TimestampTz expires_at;

	expires_at = DatumGetTimestampTz(DirectFunctionCall2(timestamptz_pl_interval,
														 TimestampTzGetDatum(now),
														 IntervalPGetDatum(lifetime)));
	if (expires_at <= now)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("token lifetime must be positive"),
				 errdetail("The lifetime was \"%s\".",
						   DatumGetCString(DirectFunctionCall1(interval_out,
															   IntervalPGetDatum(lifetime)))),
				 errhint("Pass NULL for a token that never expires.")));
	return expires_at;
}

PG_FUNCTION_INFO_V1(iapi_tokens_generate_token);

/* SQL: iapi_tokens.generate_token(bigint, text, interval, text[], jsonb, integer, interval) RETURNS TABLE (id, access_token) */
Datum
iapi_tokens_generate_token(PG_FUNCTION_ARGS)
{
	TimestampTz created_at = GetCurrentTimestamp();
	Datum		args[STORE_NARGS];
	char		nulls[STORE_NARGS];

	memset(nulls, ' ', sizeof(nulls));
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("source_id must not be null")));
	args[STORE_SOURCE_ID] = PG_GETARG_DATUM(0);

	iapi_description_arg(fcinfo, 1, &args[STORE_DESCRIPTION], &nulls[STORE_DESCRIPTION]);
	args[STORE_CREATED_AT] = TimestampTzGetDatum(created_at);
	if (PG_ARGISNULL(2))
		nulls[STORE_EXPIRES_AT] = 'n';
	else
		args[STORE_EXPIRES_AT] = TimestampTzGetDatum(expiry_after(created_at,
																  PG_GETARG_INTERVAL_P(2)));
	/* 1.4's scopes and metadata; a 1.3 signature has neither. */
	iapi_optional_arg(fcinfo, 3, &args[STORE_SCOPES], &nulls[STORE_SCOPES]);
	iapi_optional_arg(fcinfo, 4, &args[STORE_METADATA], &nulls[STORE_METADATA]);
	/* 1.5's rate limit; the SQL side checks it. */
	iapi_optional_arg(fcinfo, 5, &args[STORE_RATE_LIMIT], &nulls[STORE_RATE_LIMIT]);
	iapi_optional_arg(fcinfo, 6, &args[STORE_RATE_WINDOW], &nulls[STORE_RATE_WINDOW]);

	iapi_store_new_token(fcinfo, &store_stmt, args, nulls);
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(iapi_tokens_rotate_token);

/* SQL: iapi_tokens.rotate_token(bigint, bigint, interval) RETURNS TABLE (id, access_token) */
Datum
iapi_tokens_rotate_token(PG_FUNCTION_ARGS)
{
	Datum		args[ROTATE_NARGS];
	char		nulls[ROTATE_NARGS];

	memset(nulls, ' ', sizeof(nulls));
	/* The SQL side reports NULL arguments with the documented errors. */
	for (int i = 0; i < 3; i++)
	{
		/* source_id, token_id, grace: the statement's first three */
		if (PG_ARGISNULL(i))
			nulls[ROTATE_SOURCE_ID + i] = 'n';
		else
			args[ROTATE_SOURCE_ID + i] = PG_GETARG_DATUM(i);
	}
	args[ROTATE_NOW] = TimestampTzGetDatum(GetCurrentTimestamp());

	iapi_store_new_token(fcinfo, &rotate_stmt, args, nulls);
	return (Datum) 0;
}
