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

static OwnerStatement insert_stmt = {
	"INSERT INTO iapi_tokens.tokens"
	" (source_id, token_hash, display_prefix, description, created_at, expires_at)"
	" VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
	6, {INT8OID, BYTEAOID, TEXTOID, TEXTOID, TIMESTAMPTZOID, TIMESTAMPTZOID},
	"the token insert", NULL
};

static OwnerStatement rotate_stmt = {
	"SELECT iapi_tokens.rotate_source_token($1, $2, $3, $4, $5, $6)",
	6, {INT8OID, INT8OID, INTERVALOID, BYTEAOID, TEXTOID, TIMESTAMPTZOID},
	"the source token rotation", NULL
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

/* SQL: iapi_tokens.generate_token(bigint, text, interval) RETURNS TABLE (id, access_token) */
Datum
iapi_tokens_generate_token(PG_FUNCTION_ARGS)
{
	TimestampTz created_at = GetCurrentTimestamp();
	Datum		args[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("source_id must not be null")));
	args[0] = PG_GETARG_DATUM(0);

	iapi_description_arg(fcinfo, 1, &args[3], &nulls[3]);
	args[4] = TimestampTzGetDatum(created_at);
	if (PG_ARGISNULL(2))
		nulls[5] = 'n';
	else
		args[5] = TimestampTzGetDatum(expiry_after(created_at,
												   PG_GETARG_INTERVAL_P(2)));

	iapi_store_new_token(fcinfo, &insert_stmt, args, nulls, 1, 1);
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(iapi_tokens_rotate_token);

/* SQL: iapi_tokens.rotate_token(bigint, bigint, interval) RETURNS TABLE (id, access_token) */
Datum
iapi_tokens_rotate_token(PG_FUNCTION_ARGS)
{
	Datum		args[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};

	/* The SQL side reports NULL arguments with the documented errors. */
	for (int i = 0; i < 3; i++)
	{
		if (PG_ARGISNULL(i))
			nulls[i] = 'n';
		else
			args[i] = PG_GETARG_DATUM(i);
	}
	args[5] = TimestampTzGetDatum(GetCurrentTimestamp());

	iapi_store_new_token(fcinfo, &rotate_stmt, args, nulls, 3, 1);
	return (Datum) 0;
}
