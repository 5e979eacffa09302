/*-------------------------------------------------------------------------
 *
 * mint.c
 *	  Token generation: the only place a plaintext token is made.
 *
 * iapi_store_new_token() mints a token and has iapi_run_as_owner() store its
 * hash and display prefix, give the plaintext to the caller once, and wipe
 * it.  Every function that makes a token goes through it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"

#include "iapi_tokens.h"

/*
 * True while a minted token is being stored.  Only 1.1's and 1.2's audit
 * trigger reads it, through iapi_tokens.minting(); from 1.3 the storing
 * functions record the creation themselves.
 */
bool		iapi_minting = false;

/*
 * Mints a token, puts its hash and display prefix in the parameters
 * stmt->hash_param and the one after it, and runs stmt as the tables' owner;
 * the caller's result is stmt's one row with the plaintext as column
 * stmt->token_column.
 */
void
iapi_store_new_token(FunctionCallInfo fcinfo, OwnerStatement *stmt,
					 Datum *args, char *nulls)
{
	MintedToken minted;
	int			hash_arg = stmt->hash_param - 1;

	Assert(stmt->hash_param > 0 && stmt->hash_param < stmt->nargs);
	minted.len = iapi_token_generate(iapi_token_prefix, minted.text);
	minted.display_prefix =
		cstring_to_text_with_len(minted.text,
								 minted.len - IAPI_SECRET_CHARS +
								 IAPI_DISPLAY_BODY_CHARS);
	args[hash_arg] = iapi_token_hash(minted.text, minted.len, &minted.hash);
	nulls[hash_arg] = ' ';
	args[hash_arg + 1] = PointerGetDatum(minted.display_prefix);
	nulls[hash_arg + 1] = ' ';

	/* A trigger that skips the row would otherwise lose the token silently. */
	if (iapi_run_as_owner(fcinfo, stmt, args, nulls, &minted) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_TRIGGERED_ACTION_EXCEPTION),
				 errmsg("the token was not stored"),
				 errdetail("A trigger on iapi_tokens.tokens skipped the insert.")));
}

/* Argument argno as it is, or NULL when absent or when the SQL has no such argument. */
void
iapi_optional_arg(FunctionCallInfo fcinfo, int argno, Datum *arg, char *null)
{
	if (PG_NARGS() <= argno || PG_ARGISNULL(argno))
	{
		*null = 'n';
		return;
	}
	*arg = PG_GETARG_DATUM(argno);
	*null = ' ';
}

/* An optional description argument: NULL, or at most 255 characters. */
void
iapi_description_arg(FunctionCallInfo fcinfo, int argno, Datum *arg, char *null)
{
	text	   *description;
	int			chars;

	if (PG_ARGISNULL(argno))
	{
		*null = 'n';
		return;
	}
	description = PG_GETARG_TEXT_PP(argno);
	chars = pg_mbstrlen_with_len(VARDATA_ANY(description),
								 VARSIZE_ANY_EXHDR(description));
	if (chars > IAPI_DESCRIPTION_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
				 errmsg("token description is too long"),
				 errdetail("The description has %d characters; the maximum is %d.",
						   chars, IAPI_DESCRIPTION_MAX)));
	*arg = PointerGetDatum(description);
}

PG_FUNCTION_INFO_V1(iapi_tokens_minting);

/* SQL (1.1, 1.2): iapi_tokens.minting() RETURNS boolean */
Datum
iapi_tokens_minting(PG_FUNCTION_ARGS pg_attribute_unused())
{
	PG_RETURN_BOOL(iapi_minting);
}
