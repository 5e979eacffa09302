/*-------------------------------------------------------------------------
 *
 * access_tokens.c
 *	  Personal access tokens (Trifacta v4 apiAccessTokens).
 *
 * Each function takes its owner from GetUserId() at entry, the role that
 * called it, and hands it to an owner-only SQL function run as the tables'
 * owner (see run_as_owner.c).  The SQL functions filter every statement on
 * that role, so a role only ever sees and changes its own tokens.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/timestamp.h"

#include "iapi_tokens.h"

static OwnerStatement store_stmt = {
	"SELECT * FROM iapi_tokens.store_access_token($1, $2, $3, $4, $5, $6)",
	6, {REGROLEOID, BYTEAOID, TEXTOID, TEXTOID, INT4OID, TIMESTAMPTZOID},
	"the access token insert", NULL
};

static OwnerStatement list_stmt = {
	"SELECT * FROM iapi_tokens.access_tokens_of($1)",
	1, {REGROLEOID},
	"the access token list", NULL
};

static OwnerStatement get_stmt = {
	"SELECT * FROM iapi_tokens.access_token_of($1, $2)",
	2, {REGROLEOID, UUIDOID},
	"the access token lookup", NULL
};

static OwnerStatement delete_stmt = {
	"SELECT iapi_tokens.delete_access_token_of($1, $2)",
	2, {REGROLEOID, UUIDOID},
	"the access token deletion", NULL
};

static OwnerStatement rotate_stmt = {
	"SELECT * FROM iapi_tokens.rotate_access_token_of($1, $2, $3, $4, $5, $6, $7)",
	7, {REGROLEOID, UUIDOID, INTERVALOID, BYTEAOID, TEXTOID, TIMESTAMPTZOID, INT4OID},
	"the access token rotation", NULL
};

/* -1 (never expires) or a positive number of seconds within max_lifetime. */
static void
check_lifetime_seconds(FunctionCallInfo fcinfo, int argno)
{
	int32		seconds;

	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("lifetime_seconds must not be null"),
				 errhint("Pass -1 for a token that never expires.")));
	seconds = PG_GETARG_INT32(argno);
	if (seconds == 0 || seconds < -1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid lifetime_seconds: %d", seconds),
				 errdetail("A lifetime is a positive number of seconds, or -1 for a token that never expires.")));
	if (iapi_max_lifetime > 0 && seconds == -1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("tokens that never expire are not allowed"),
				 errdetail("iapi_tokens.max_lifetime is %d seconds.", iapi_max_lifetime),
				 errhint("Pass a lifetime of at most %d seconds.", iapi_max_lifetime)));
	if (iapi_max_lifetime > 0 && seconds > iapi_max_lifetime)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("lifetime_seconds %d exceeds the maximum of %d",
						seconds, iapi_max_lifetime),
				 errdetail("The maximum is set by iapi_tokens.max_lifetime.")));
}

static Datum
caller(void)
{
	return ObjectIdGetDatum(GetUserId());
}

PG_FUNCTION_INFO_V1(iapi_tokens_create_access_token);

/* SQL: iapi_tokens.create_access_token(integer, text) RETURNS TABLE (token_value, token_id, ...) */
Datum
iapi_tokens_create_access_token(PG_FUNCTION_ARGS)
{
	Datum		args[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};

	check_lifetime_seconds(fcinfo, 0);
	args[4] = PG_GETARG_DATUM(0);
	iapi_description_arg(fcinfo, 1, &args[3], &nulls[3]);
	args[0] = caller();
	args[5] = TimestampTzGetDatum(GetCurrentTimestamp());

	iapi_store_new_token(fcinfo, &store_stmt, args, nulls, 1, 0);
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(iapi_tokens_list_access_tokens);

/* SQL: iapi_tokens.list_access_tokens() RETURNS TABLE (token_id, description, ...) */
Datum
iapi_tokens_list_access_tokens(PG_FUNCTION_ARGS)
{
	Datum		args[1] = {caller()};

	(void) iapi_run_as_owner(fcinfo, &list_stmt, args, NULL, NULL, 0);
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(iapi_tokens_get_access_token);

/* SQL: iapi_tokens.get_access_token(uuid) RETURNS TABLE (token_id, description, ...) */
Datum
iapi_tokens_get_access_token(PG_FUNCTION_ARGS)
{
	Datum		args[2] = {caller(), PG_GETARG_DATUM(0)};
	char		nulls[2] = {' ', PG_ARGISNULL(0) ? 'n' : ' '};

	(void) iapi_run_as_owner(fcinfo, &get_stmt, args, nulls, NULL, 0);
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(iapi_tokens_delete_access_token);

/* SQL: iapi_tokens.delete_access_token(uuid) RETURNS void */
Datum
iapi_tokens_delete_access_token(PG_FUNCTION_ARGS)
{
	Datum		args[2] = {caller(), PG_GETARG_DATUM(0)};
	char		nulls[2] = {' ', PG_ARGISNULL(0) ? 'n' : ' '};

	(void) iapi_run_as_owner(fcinfo, &delete_stmt, args, nulls, NULL, 0);
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(iapi_tokens_rotate_access_token);

/* SQL: iapi_tokens.rotate_access_token(uuid, interval) RETURNS TABLE (token_value, token_id, ...) */
Datum
iapi_tokens_rotate_access_token(PG_FUNCTION_ARGS)
{
	Datum		args[7];
	char		nulls[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};

	args[0] = caller();
	for (int i = 0; i < 2; i++)
	{
		if (PG_ARGISNULL(i))
			nulls[i + 1] = 'n';
		else
			args[i + 1] = PG_GETARG_DATUM(i);
	}
	args[5] = TimestampTzGetDatum(GetCurrentTimestamp());
	args[6] = Int32GetDatum(iapi_max_lifetime);

	iapi_store_new_token(fcinfo, &rotate_stmt, args, nulls, 3, 0);
	return (Datum) 0;
}
