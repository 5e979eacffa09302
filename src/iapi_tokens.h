/*-------------------------------------------------------------------------
 *
 * iapi_tokens.h
 *	  Shared declarations of the iapi_tokens extension.
 *
 *-------------------------------------------------------------------------
 */
#ifndef IAPI_TOKENS_H
#define IAPI_TOKENS_H

#include "postgres.h"

#include "common/sha2.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "storage/lwlock.h"

/*
 * A token is <prefix><body><checksum>.  The body is IAPI_RANDOM_BYTES from
 * pg_strong_random() written as a fixed-width base62 number; the checksum is
 * the CRC-32 of those bytes in 6 base62 digits, so that secret scanners can
 * tell a real token from a look-alike without asking the database.
 */
#define IAPI_RANDOM_BYTES		24	/* 192 bits */
#define IAPI_BODY_CHARS			33	/* ceil(192 / log2(62)) */
#define IAPI_CHECKSUM_CHARS		6	/* 62^6 > 2^32 */
#define IAPI_SECRET_CHARS		(IAPI_BODY_CHARS + IAPI_CHECKSUM_CHARS)
#define IAPI_PREFIX_MAX			32
#define IAPI_TOKEN_MAX			(IAPI_PREFIX_MAX + IAPI_SECRET_CHARS)
/* Body characters kept in display_prefix; the other 29 still hold 172 bits. */
#define IAPI_DISPLAY_BODY_CHARS	4

#define IAPI_DESCRIPTION_MAX	255
#define IAPI_HASH_LEN			PG_SHA256_DIGEST_LENGTH

/* GUCs, defined in iapi_tokens.c */
extern char *iapi_token_prefix;
extern int	iapi_last_used_interval;
extern int	iapi_max_lifetime;
extern int	iapi_max_tokens_per_owner;

/* A token's SHA-256 as a bytea datum, without a palloc. */
typedef union TokenHash
{
	int32		align;			/* SET_VARSIZE writes an int32 */
	uint8		bytes[VARHDRSZ + IAPI_HASH_LEN];
} TokenHash;

/* A freshly generated token: the plaintext, and what is stored of it. */
typedef struct MintedToken
{
	char		text[IAPI_TOKEN_MAX + 1];
	size_t		len;
	TokenHash	hash;
	text	   *display_prefix;
} MintedToken;

/*
 * A fixed statement run as the owner of the extension's tables, prepared
 * once per backend.  The functions it calls are owner-only.  From 1.3 they
 * live in iapi_tokens_internal.  sql_1_4, sql_1_3 and sql_1_2 are the same
 * statement for a database still at 1.4, at 1.3, or at 1.1 or 1.2, which
 * this library keeps serving until ALTER EXTENSION ... UPDATE.  sql_1_4
 * takes the first nargs_1_4 arguments; sql_1_3 and sql_1_2 the first
 * nargs_1_3 (all of them when it is 0).  Without sql_1_4, sql serves 1.4;
 * without sql_1_3, 1.4's statement serves 1.3.
 */
typedef struct OwnerStatement
{
	const char *what;			/* names the statement in an internal error */
	const char *sql;
	const char *sql_1_4;
	const char *sql_1_3;
	const char *sql_1_2;
	int			nargs;
	int			nargs_1_4;
	int			nargs_1_3;
	Oid			argtypes[11];

	/*
	 * For a statement that stores a minted token: the parameter ($n) that
	 * takes its hash (the next one takes its display prefix), and the result
	 * column that hands its plaintext to the caller.  Zero otherwise.
	 */
	int			hash_param;
	int			token_column;
	SPIPlanPtr	plans[4];		/* by IapiSchemaVersion */
} OwnerStatement;

/* The installed version's generation, for the statements above. */
typedef enum IapiSchemaVersion
{
	IAPI_SCHEMA_1_2,			/* 1.0 to 1.2: no iapi_tokens_internal */
	IAPI_SCHEMA_1_3,			/* no scopes */
	IAPI_SCHEMA_1_4,			/* no rate limits */
	IAPI_SCHEMA_1_5
} IapiSchemaVersion;

/*
 * Every lock of a partitioned shared table, taken in order and released
 * last first (usage.c, rate_limit.c).
 */
static inline void
iapi_lock_partitions(LWLockPadded *locks, int npartitions, LWLockMode mode)
{
	for (int i = 0; i < npartitions; i++)
		LWLockAcquire(&locks[i].lock, mode);
}

static inline void
iapi_unlock_partitions(LWLockPadded *locks, int npartitions)
{
	for (int i = npartitions - 1; i >= 0; i--)
		LWLockRelease(&locks[i].lock);
}

/* token_format.c */
extern bool iapi_prefix_is_valid(const char *prefix, size_t len);
extern size_t iapi_token_generate(const char *prefix, char *token);
extern bool iapi_token_is_well_formed(const char *token, size_t len);

/* mint.c */
extern bool iapi_minting;
extern void iapi_description_arg(FunctionCallInfo fcinfo, int argno,
								 Datum *arg, char *null);
extern void iapi_optional_arg(FunctionCallInfo fcinfo, int argno,
							  Datum *arg, char *null);
extern void iapi_store_new_token(FunctionCallInfo fcinfo, OwnerStatement *stmt,
								 Datum *args, char *nulls);

/* run_as_owner.c */
extern IapiSchemaVersion iapi_schema_version(void);
extern uint64 iapi_run_as_owner(FunctionCallInfo fcinfo, OwnerStatement *stmt,
								Datum *args, const char *nulls,
								MintedToken *minted);

/* hash.c */
extern void iapi_sha256(const char *data, size_t len, uint8 *digest);
extern Datum iapi_token_hash(const char *token, size_t len, TokenHash *hash);

/*
 * verify.c: the columns of verify_token, authenticate and current_token:
 * seven from 1.1, and scopes and metadata from 1.4.
 */
#define IAPI_VERIFY_COLUMNS_1_1	7
#define IAPI_VERIFY_COLUMNS		9
/* check_token: status, verify_token's nine, and five about its rate limit */
#define IAPI_CHECK_COLUMNS		15

typedef enum IapiTokenStatus
{
	IAPI_TOKEN_INVALID,
	IAPI_TOKEN_VALID,
	IAPI_TOKEN_RATE_LIMITED
} IapiTokenStatus;

extern bool iapi_verify_token_columns(FunctionCallInfo fcinfo, TupleDesc desc,
									  Datum *values, bool *nulls);

/* current_token.c */
extern void iapi_current_token_init(void);
extern void iapi_forget_current_token(void);
extern HeapTuple iapi_set_current_token(TupleDesc desc, Datum *values,
										bool *nulls);

/* saved_plan.c */
extern SPIPlanPtr iapi_saved_plan(SPIPlanPtr *plan, const char *sql,
								  int nargs, Oid *argtypes, const char *what);

#endif							/* IAPI_TOKENS_H */
