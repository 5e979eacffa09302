/*-------------------------------------------------------------------------
 *
 * leaked.c
 *	  revoke_leaked(): revocation of tokens that a secret scanner found.
 *
 * A scanner reports plaintexts without knowing whose they are.  Like
 * verify_token, this raises no error for any input and says nothing about
 * which inputs were tokens beyond the count; only their hashes reach a
 * statement, so no plaintext can reach a log through one.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/detoast.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/lsyscache.h"

#include "iapi_tokens.h"

/* The most plaintexts one call takes. */
#define IAPI_LEAKED_MAX			1000

static OwnerStatement revoke_stmt = {
	.what = "the leaked token revocation",
	.sql = "SELECT * FROM iapi_tokens_internal.revoke_leaked_hashes($1)",
	.nargs = 1,
	.argtypes = {BYTEAARRAYOID},
};

PG_FUNCTION_INFO_V1(iapi_tokens_revoke_leaked);

/* SQL: iapi_tokens.revoke_leaked(tokens text[]) RETURNS integer */
Datum
iapi_tokens_revoke_leaked(PG_FUNCTION_ARGS)
{
	ArrayType  *tokens;
	Datum	   *elements;
	bool	   *element_nulls;
	int			count;
	Datum	   *hashes;
	int			nhashes = 0;
	Datum		args[1];

	if (PG_ARGISNULL(0))
		PG_RETURN_INT32(0);
	tokens = PG_GETARG_ARRAYTYPE_P(0);
	if (ARR_NDIM(tokens) > 1 ||
		ArrayGetNItems(ARR_NDIM(tokens), ARR_DIMS(tokens)) > IAPI_LEAKED_MAX)
		PG_RETURN_NULL();

	deconstruct_array(tokens, TEXTOID, -1, false, TYPALIGN_INT,
					  &elements, &element_nulls, &count);
	hashes = palloc(Max(count, 1) * sizeof(Datum));
	for (int i = 0; i < count; i++)
	{
		text	   *token;

		/* Size first, so a huge value is never looked at. */
		if (element_nulls[i] ||
			toast_raw_datum_size(elements[i]) > VARHDRSZ + IAPI_TOKEN_MAX)
			continue;
		token = DatumGetTextPP(elements[i]);
		if (!iapi_token_is_well_formed(VARDATA_ANY(token), VARSIZE_ANY_EXHDR(token)))
			continue;
		hashes[nhashes++] = iapi_token_hash(VARDATA_ANY(token), VARSIZE_ANY_EXHDR(token),
											palloc(sizeof(TokenHash)));
	}
	if (nhashes == 0)
		PG_RETURN_INT32(0);

	args[0] = PointerGetDatum(construct_array(hashes, nhashes, BYTEAOID, -1, false,
											  TYPALIGN_INT));
	PG_RETURN_INT32((int32) iapi_run_as_owner(fcinfo, &revoke_stmt, args, NULL, NULL));
}
