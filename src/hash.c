/*-------------------------------------------------------------------------
 *
 * hash.c
 *	  SHA-256 of a token, through PostgreSQL's own cryptohash (OpenSSL-backed
 *	  on Debian).
 *
 * A token holds 192 random bits, so a fast unsalted hash is enough: there
 * is no dictionary to search, and a deterministic hash is what lets
 * verify_token find the row with one index probe.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/cryptohash.h"
#include "fmgr.h"

#include "iapi_tokens.h"

void
iapi_sha256(const char *data, size_t len, uint8 *digest)
{
	pg_cryptohash_ctx *ctx = pg_cryptohash_create(PG_SHA256);
	const char *reason;

	if (ctx == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory"),
				 errdetail("Could not allocate a SHA-256 context.")));

	if (pg_cryptohash_init(ctx) == 0 &&
		pg_cryptohash_update(ctx, (const uint8 *) data, len) == 0 &&
		pg_cryptohash_final(ctx, digest, IAPI_HASH_LEN) == 0)
	{
		pg_cryptohash_free(ctx);
		return;
	}

	reason = pg_cryptohash_error(ctx);	/* a static string */
	pg_cryptohash_free(ctx);
	ereport(ERROR,
			(errcode(ERRCODE_SYSTEM_ERROR),
			 errmsg("could not compute SHA-256 hash: %s", reason)));
}

/* The bytea datum, in *hash, that iapi_tokens.tokens.token_hash holds. */
Datum
iapi_token_hash(const char *token, size_t len, TokenHash *hash)
{
	SET_VARSIZE(hash->bytes, VARHDRSZ + IAPI_HASH_LEN);
	iapi_sha256(token, len, hash->bytes + VARHDRSZ);
	return PointerGetDatum(hash->bytes);
}

PG_FUNCTION_INFO_V1(iapi_tokens_hash_token);

/* SQL: iapi_tokens.hash_token(token text) RETURNS bytea */
Datum
iapi_tokens_hash_token(PG_FUNCTION_ARGS)
{
	text	   *token = PG_GETARG_TEXT_PP(0);
	bytea	   *result = (bytea *) palloc(VARHDRSZ + IAPI_HASH_LEN);

	SET_VARSIZE(result, VARHDRSZ + IAPI_HASH_LEN);
	iapi_sha256(VARDATA_ANY(token), VARSIZE_ANY_EXHDR(token),
				(uint8 *) VARDATA(result));
	PG_RETURN_BYTEA_P(result);
}
