/*-------------------------------------------------------------------------
 *
 * mint.c
 *	  Token generation: the only place a plaintext token is made.
 *
 * A minted token is handed to iapi_run_as_owner(), which stores its hash and
 * display prefix, gives the plaintext to the caller once, and wipes it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"

#include "iapi_tokens.h"

/*
 * True while a minted token is being stored.  The audit trigger records a
 * "create" only then, so that a restore's COPY, which re-inserts existing
 * tokens, is not mistaken for new ones.
 */
bool		iapi_minting = false;

void
iapi_mint_token(MintedToken *minted)
{
	minted->len = iapi_token_generate(iapi_token_prefix, minted->text);
	SET_VARSIZE(minted->hash.bytes, VARHDRSZ + IAPI_HASH_LEN);
	iapi_sha256(minted->text, minted->len, minted->hash.bytes + VARHDRSZ);
	minted->display_prefix =
		cstring_to_text_with_len(minted->text,
								 minted->len - IAPI_SECRET_CHARS +
								 IAPI_DISPLAY_BODY_CHARS);
}

void
iapi_check_description(text *description)
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

PG_FUNCTION_INFO_V1(iapi_tokens_minting);

/* SQL: iapi_tokens.minting() RETURNS boolean */
Datum
iapi_tokens_minting(PG_FUNCTION_ARGS pg_attribute_unused())
{
	PG_RETURN_BOOL(iapi_minting);
}
