/*-------------------------------------------------------------------------
 *
 * token_format.c
 *	  Token generation and syntax checks: prefix, base62 body, CRC-32.
 *
 * Nothing here touches the database, so verify_token can reject malformed
 * input before it hashes anything or reads the table.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/pg_crc.h"

#include "iapi_tokens.h"

StaticAssertDecl(IAPI_RANDOM_BYTES % 4 == 0,
				 "base62_decode works in 32-bit limbs");

static const char base62_digits[] =
"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

static inline int
base62_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'Z')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 36;
	return -1;
}

/* Writes bytes, read as a big-endian number, as exactly ndigits digits. */
static void
base62_encode(const uint8 *bytes, int nbytes, char *out, int ndigits)
{
	uint8		work[IAPI_RANDOM_BYTES];

	Assert(nbytes <= IAPI_RANDOM_BYTES);
	memcpy(work, bytes, nbytes);
	for (int i = ndigits - 1; i >= 0; i--)
	{
		uint32		rem = 0;

		for (int j = 0; j < nbytes; j++)
		{
			uint32		acc = (rem << 8) | work[j];

			work[j] = (uint8) (acc / 62);
			rem = acc % 62;
		}
		out[i] = base62_digits[rem];
	}
	explicit_bzero(work, sizeof(work));
}

/*
 * The inverse; false on a non-digit or a value that needs more bytes.  On
 * the verification path, so it works in 32-bit limbs and folds five digits
 * at a time (62^5 < 2^32) into each multiply-and-add pass.
 */
static bool
base62_decode(const char *in, int ndigits, uint8 *bytes, int nbytes)
{
	uint32		limbs[IAPI_RANDOM_BYTES / 4] = {0};	/* least significant first */
	int			nlimbs = nbytes / 4;
	bool		ok = true;
	int			i = 0;

	Assert(nbytes % 4 == 0 && nbytes <= IAPI_RANDOM_BYTES);
	while (ok && i < ndigits)
	{
		int			take = Min(5, ndigits - i);
		uint32		chunk = 0;
		uint32		scale = 1;
		uint64		carry;

		for (int k = 0; k < take; k++, i++)
		{
			int			digit = base62_value(in[i]);

			if (digit < 0)
				return false;	/* limbs hold nothing secret yet */
			chunk = chunk * 62 + (uint32) digit;
			scale *= 62;
		}

		carry = chunk;
		for (int j = 0; j < nlimbs; j++)
		{
			uint64		acc = (uint64) limbs[j] * scale + carry;

			limbs[j] = (uint32) acc;
			carry = acc >> 32;
		}
		ok = (carry == 0);
	}

	for (int j = 0; ok && j < nbytes; j++)
	{
		int			from_lsb = nbytes - 1 - j;

		bytes[j] = (uint8) (limbs[from_lsb / 4] >> (8 * (from_lsb % 4)));
	}
	explicit_bzero(limbs, sizeof(limbs));
	return ok;
}

static pg_crc32
random_checksum(const uint8 *bytes)
{
	pg_crc32	crc;

	INIT_TRADITIONAL_CRC32(crc);
	COMP_TRADITIONAL_CRC32(crc, bytes, IAPI_RANDOM_BYTES);
	FIN_TRADITIONAL_CRC32(crc);
	return crc;
}

/* 1 to IAPI_PREFIX_MAX characters from [A-Za-z0-9_], the last one "_". */
bool
iapi_prefix_is_valid(const char *prefix, size_t len)
{
	if (len < 1 || len > IAPI_PREFIX_MAX || prefix[len - 1] != '_')
		return false;
	for (size_t i = 0; i < len; i++)
	{
		if (prefix[i] != '_' && base62_value(prefix[i]) < 0)
			return false;
	}
	return true;
}

/*
 * Writes a new token, NUL-terminated, into token (IAPI_TOKEN_MAX + 1 bytes)
 * and returns its length.
 */
size_t
iapi_token_generate(const char *prefix, char *token)
{
	size_t		prefix_len = strlen(prefix);
	uint8		random_bytes[IAPI_RANDOM_BYTES];
	uint8		checksum_bytes[4];
	pg_crc32	crc;

	/* The GUC check hook guarantees this; a bad prefix must never ship. */
	if (!iapi_prefix_is_valid(prefix, prefix_len))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid token prefix \"%s\"", prefix),
				 errhint("Set iapi_tokens.token_prefix to 1 to %d characters from [A-Za-z0-9_] ending with \"_\".",
						 IAPI_PREFIX_MAX)));

	if (!pg_strong_random(random_bytes, sizeof(random_bytes)))
		ereport(ERROR,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("could not generate random bytes for a token"),
				 errdetail("pg_strong_random() failed.")));

	memcpy(token, prefix, prefix_len);
	base62_encode(random_bytes, IAPI_RANDOM_BYTES,
				  token + prefix_len, IAPI_BODY_CHARS);

	crc = random_checksum(random_bytes);
	checksum_bytes[0] = (uint8) (crc >> 24);
	checksum_bytes[1] = (uint8) (crc >> 16);
	checksum_bytes[2] = (uint8) (crc >> 8);
	checksum_bytes[3] = (uint8) crc;
	base62_encode(checksum_bytes, sizeof(checksum_bytes),
				  token + prefix_len + IAPI_BODY_CHARS, IAPI_CHECKSUM_CHARS);

	token[prefix_len + IAPI_SECRET_CHARS] = '\0';
	explicit_bzero(random_bytes, sizeof(random_bytes));
	return prefix_len + IAPI_SECRET_CHARS;
}

/*
 * True when token has the shape of one of ours: any valid prefix (tokens
 * made before a prefix change still verify), a body that fits in
 * IAPI_RANDOM_BYTES, and a matching checksum.
 */
bool
iapi_token_is_well_formed(const char *token, size_t len)
{
	uint8		random_bytes[IAPI_RANDOM_BYTES];
	uint8		checksum_bytes[4];
	size_t		prefix_len;
	pg_crc32	stated;
	bool		ok;

	if (len <= IAPI_SECRET_CHARS || len > IAPI_TOKEN_MAX)
		return false;
	prefix_len = len - IAPI_SECRET_CHARS;
	if (!iapi_prefix_is_valid(token, prefix_len))
		return false;

	if (!base62_decode(token + prefix_len + IAPI_BODY_CHARS,
					   IAPI_CHECKSUM_CHARS,
					   checksum_bytes, sizeof(checksum_bytes)))
		return false;
	stated = ((pg_crc32) checksum_bytes[0] << 24) |
		((pg_crc32) checksum_bytes[1] << 16) |
		((pg_crc32) checksum_bytes[2] << 8) |
		(pg_crc32) checksum_bytes[3];

	ok = base62_decode(token + prefix_len, IAPI_BODY_CHARS,
					   random_bytes, sizeof(random_bytes)) &&
		random_checksum(random_bytes) == stated;
	explicit_bzero(random_bytes, sizeof(random_bytes));
	return ok;
}
