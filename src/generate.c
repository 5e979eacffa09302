/*-------------------------------------------------------------------------
 *
 * generate.c
 *	  generate_token(): the only place a plaintext token exists.
 *
 * The plaintext goes back to the caller and nowhere else: the INSERT gets
 * only its hash and display prefix, and every buffer that held it is wiped.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/timestamp.h"

#include "iapi_tokens.h"

static SPIPlanPtr insert_plan = NULL;

static const char insert_sql[] =
"INSERT INTO iapi_tokens.tokens"
" (source_id, token_hash, display_prefix, description, created_at, expires_at)"
" VALUES ($1, $2, $3, $4, $5, $6) RETURNING id";
static Oid	insert_argtypes[6] = {INT8OID, BYTEAOID, TEXTOID, TEXTOID,
TIMESTAMPTZOID, TIMESTAMPTZOID};

static void
check_description(text *description)
{
	int			chars = pg_mbstrlen_with_len(VARDATA_ANY(description),
											 VARSIZE_ANY_EXHDR(description));

	if (chars > IAPI_DESCRIPTION_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
				 errmsg("token description is too long"),
				 errdetail("The description has %d characters; the maximum is %d.",
						   chars, IAPI_DESCRIPTION_MAX)));
}

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
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	TimestampTz now = GetCurrentTimestamp();
	char		token[IAPI_TOKEN_MAX + 1];
	size_t		token_len;
	union
	{
		int32		align;		/* SET_VARSIZE writes an int32 */
		uint8		bytes[VARHDRSZ + IAPI_HASH_LEN];
	}			hash;
	Datum		args[6];
	char		arg_nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};
	int			ret;
	bool		id_isnull;
	Datum		result_values[2];
	bool		result_nulls[2] = {false, false};

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("source_id must not be null")));
	args[0] = PG_GETARG_DATUM(0);

	if (PG_ARGISNULL(1))
		arg_nulls[3] = 'n';
	else
	{
		text	   *description = PG_GETARG_TEXT_PP(1);

		check_description(description);
		args[3] = PointerGetDatum(description);
	}

	args[4] = TimestampTzGetDatum(now);
	if (PG_ARGISNULL(2))
		arg_nulls[5] = 'n';
	else
		args[5] = TimestampTzGetDatum(expiry_after(now,
												   PG_GETARG_INTERVAL_P(2)));

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);

	token_len = iapi_token_generate(iapi_token_prefix, token);
	SET_VARSIZE(hash.bytes, VARHDRSZ + IAPI_HASH_LEN);
	iapi_sha256(token, token_len, hash.bytes + VARHDRSZ);
	args[1] = PointerGetDatum(hash.bytes);
	args[2] = PointerGetDatum(cstring_to_text_with_len(token,
													   token_len - IAPI_SECRET_CHARS +
													   IAPI_DISPLAY_BODY_CHARS));

	SPI_connect();
	ret = SPI_execute_plan(iapi_saved_plan(&insert_plan, insert_sql, 6,
										   insert_argtypes, "the token insert"),
						   args, arg_nulls, false, 1);
	if (ret != SPI_OK_INSERT_RETURNING || SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_TRIGGERED_ACTION_EXCEPTION),
				 errmsg("the token was not stored"),
				 errdetail("A trigger on iapi_tokens.tokens skipped the insert.")));
	result_values[0] = SPI_getbinval(SPI_tuptable->vals[0],
									 SPI_tuptable->tupdesc, 1, &id_isnull);
	SPI_finish();

	/* int8 is pass-by-value, so the id outlives SPI_finish(). */
	result_values[1] = PointerGetDatum(cstring_to_text_with_len(token, token_len));
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc,
						 result_values, result_nulls);
	explicit_bzero(token, sizeof(token));
	return (Datum) 0;
}
