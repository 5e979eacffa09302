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

/*
 * Parameters of the store and rotate statements, by name.  Before 1.3 the
 * cap trigger read the per-owner default itself: the sql_1_2 forms leave the
 * last parameter unused.
 */
enum
{
	STORE_OWNER,
	STORE_HASH,
	STORE_DISPLAY_PREFIX,
	STORE_DESCRIPTION,
	STORE_LIFETIME_SECONDS,
	STORE_CREATED_AT,
	STORE_MAX_TOKENS_PER_OWNER,
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
	ROTATE_OWNER,
	ROTATE_TOKEN_ID,
	ROTATE_GRACE,
	ROTATE_HASH,
	ROTATE_DISPLAY_PREFIX,
	ROTATE_NOW,
	ROTATE_MAX_LIFETIME,
	ROTATE_MAX_TOKENS_PER_OWNER,
	ROTATE_NARGS
};

static OwnerStatement store_stmt = {
	.what = "the access token insert",
	.sql = "SELECT * FROM iapi_tokens_internal.store_personal_token($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
	.sql_1_4 = "SELECT * FROM iapi_tokens_internal.store_personal_token($1, $2, $3, $4, $5, $6, $7, $8, $9)",
	.sql_1_3 = "SELECT * FROM iapi_tokens_internal.store_personal_token($1, $2, $3, $4, $5, $6, $7)",
	.sql_1_2 = "SELECT * FROM iapi_tokens.store_access_token($1, $2, $3, $4, $5, $6)",
	.nargs = STORE_NARGS,
	.nargs_1_4 = STORE_NARGS_1_4,
	.nargs_1_3 = STORE_NARGS_1_3,
	.argtypes = {REGROLEOID, BYTEAOID, TEXTOID, TEXTOID, INT4OID, TIMESTAMPTZOID, INT4OID,
	TEXTARRAYOID, JSONBOID, INT4OID, INTERVALOID},
	.hash_param = STORE_HASH + 1,
	.token_column = 0,			/* token_value */
};

static OwnerStatement list_stmt = {
	.what = "the access token list",
	.sql = "SELECT * FROM iapi_tokens_internal.personal_tokens_of($1)",
	.sql_1_2 = "SELECT * FROM iapi_tokens.access_tokens_of($1)",
	.nargs = 1,
	.argtypes = {REGROLEOID},
};

static OwnerStatement get_stmt = {
	.what = "the access token lookup",
	.sql = "SELECT * FROM iapi_tokens_internal.personal_token_of($1, $2)",
	.sql_1_2 = "SELECT * FROM iapi_tokens.access_token_of($1, $2)",
	.nargs = 2,
	.argtypes = {REGROLEOID, UUIDOID},
};

static OwnerStatement delete_stmt = {
	.what = "the access token deletion",
	.sql = "SELECT iapi_tokens_internal.delete_personal_token_of($1, $2)",
	.sql_1_2 = "SELECT iapi_tokens.delete_access_token_of($1, $2)",
	.nargs = 2,
	.argtypes = {REGROLEOID, UUIDOID},
};

static OwnerStatement rotate_stmt = {
	.what = "the access token rotation",
	.sql = "SELECT * FROM iapi_tokens_internal.rotate_personal_token_of($1, $2, $3, $4, $5, $6, $7, $8)",
	.sql_1_2 = "SELECT * FROM iapi_tokens.rotate_access_token_of($1, $2, $3, $4, $5, $6, $7)",
	.nargs = ROTATE_NARGS,
	.argtypes = {REGROLEOID, UUIDOID, INTERVALOID, BYTEAOID, TEXTOID, TIMESTAMPTZOID, INT4OID, INT4OID},
	.hash_param = ROTATE_HASH + 1,
	.token_column = 0,			/* token_value */
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

/* SQL: iapi_tokens.create_access_token(integer, text, text[], jsonb, integer, interval) RETURNS TABLE (token_value, token_id, ...) */
Datum
iapi_tokens_create_access_token(PG_FUNCTION_ARGS)
{
	Datum		args[STORE_NARGS];
	char		nulls[STORE_NARGS];

	memset(nulls, ' ', sizeof(nulls));
	check_lifetime_seconds(fcinfo, 0);
	args[STORE_OWNER] = caller();
	args[STORE_LIFETIME_SECONDS] = PG_GETARG_DATUM(0);
	iapi_description_arg(fcinfo, 1, &args[STORE_DESCRIPTION], &nulls[STORE_DESCRIPTION]);
	args[STORE_CREATED_AT] = TimestampTzGetDatum(GetCurrentTimestamp());
	args[STORE_MAX_TOKENS_PER_OWNER] = Int32GetDatum(iapi_max_tokens_per_owner);
	/* 1.4's scopes and metadata; a 1.3 signature has neither. */
	iapi_optional_arg(fcinfo, 2, &args[STORE_SCOPES], &nulls[STORE_SCOPES]);
	iapi_optional_arg(fcinfo, 3, &args[STORE_METADATA], &nulls[STORE_METADATA]);
	/* 1.5's rate limit; the SQL side checks it. */
	iapi_optional_arg(fcinfo, 4, &args[STORE_RATE_LIMIT], &nulls[STORE_RATE_LIMIT]);
	iapi_optional_arg(fcinfo, 5, &args[STORE_RATE_WINDOW], &nulls[STORE_RATE_WINDOW]);

	iapi_store_new_token(fcinfo, &store_stmt, args, nulls);
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(iapi_tokens_list_access_tokens);

/* SQL: iapi_tokens.list_access_tokens() RETURNS TABLE (token_id, description, ...) */
Datum
iapi_tokens_list_access_tokens(PG_FUNCTION_ARGS)
{
	Datum		args[1] = {caller()};

	(void) iapi_run_as_owner(fcinfo, &list_stmt, args, NULL, NULL);
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(iapi_tokens_get_access_token);

/* SQL: iapi_tokens.get_access_token(uuid) RETURNS TABLE (token_id, description, ...) */
Datum
iapi_tokens_get_access_token(PG_FUNCTION_ARGS)
{
	Datum		args[2] = {caller(), PG_GETARG_DATUM(0)};
	char		nulls[2] = {' ', PG_ARGISNULL(0) ? 'n' : ' '};

	(void) iapi_run_as_owner(fcinfo, &get_stmt, args, nulls, NULL);
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(iapi_tokens_delete_access_token);

/* SQL: iapi_tokens.delete_access_token(uuid) RETURNS void */
Datum
iapi_tokens_delete_access_token(PG_FUNCTION_ARGS)
{
	Datum		args[2] = {caller(), PG_GETARG_DATUM(0)};
	char		nulls[2] = {' ', PG_ARGISNULL(0) ? 'n' : ' '};

	(void) iapi_run_as_owner(fcinfo, &delete_stmt, args, nulls, NULL);
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(iapi_tokens_rotate_access_token);

/* SQL: iapi_tokens.rotate_access_token(uuid, interval) RETURNS TABLE (token_value, token_id, ...) */
Datum
iapi_tokens_rotate_access_token(PG_FUNCTION_ARGS)
{
	Datum		args[ROTATE_NARGS];
	char		nulls[ROTATE_NARGS];

	memset(nulls, ' ', sizeof(nulls));
	args[ROTATE_OWNER] = caller();
	/* The SQL side reports NULL arguments with the documented errors. */
	if (PG_ARGISNULL(0))
		nulls[ROTATE_TOKEN_ID] = 'n';
	else
		args[ROTATE_TOKEN_ID] = PG_GETARG_DATUM(0);
	if (PG_ARGISNULL(1))
		nulls[ROTATE_GRACE] = 'n';
	else
		args[ROTATE_GRACE] = PG_GETARG_DATUM(1);
	args[ROTATE_NOW] = TimestampTzGetDatum(GetCurrentTimestamp());
	args[ROTATE_MAX_LIFETIME] = Int32GetDatum(iapi_max_lifetime);
	args[ROTATE_MAX_TOKENS_PER_OWNER] = Int32GetDatum(iapi_max_tokens_per_owner);

	iapi_store_new_token(fcinfo, &rotate_stmt, args, nulls);
	return (Datum) 0;
}

static OwnerStatement set_rate_limit_stmt = {
	.what = "the access token rate limit change",
	.sql = "SELECT iapi_tokens_internal.set_personal_rate_limit($1, $2, $3, $4)",
	.nargs = 4,
	.argtypes = {REGROLEOID, UUIDOID, INT4OID, INTERVALOID},
};

PG_FUNCTION_INFO_V1(iapi_tokens_set_access_token_rate_limit);

/* SQL: iapi_tokens.set_access_token_rate_limit(uuid, integer, interval) RETURNS void */
Datum
iapi_tokens_set_access_token_rate_limit(PG_FUNCTION_ARGS)
{
	Datum		args[4] = {caller()};
	char		nulls[4] = {' '};

	/* The SQL side reports NULL and out-of-bounds arguments. */
	for (int i = 0; i < 3; i++)
	{
		args[i + 1] = PG_ARGISNULL(i) ? (Datum) 0 : PG_GETARG_DATUM(i);
		nulls[i + 1] = PG_ARGISNULL(i) ? 'n' : ' ';
	}
	(void) iapi_run_as_owner(fcinfo, &set_rate_limit_stmt, args, nulls, NULL);
	PG_RETURN_VOID();
}
