/*-------------------------------------------------------------------------
 *
 * iapi_tokens.c
 *	  Module magic, GUCs, and the shared memory and background worker of
 *	  use recording and rate limits when the library is preloaded.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/guc.h"

#include "iapi_tokens.h"
#include "rate_limit.h"
#include "usage.h"

PG_MODULE_MAGIC;

char	   *iapi_token_prefix = NULL;
int			iapi_last_used_interval = 600;
int			iapi_max_lifetime = 0;
int			iapi_max_tokens_per_owner = 0;

void		_PG_init(void);

static bool
check_token_prefix(char **newval, void **extra pg_attribute_unused(),
				   GucSource source pg_attribute_unused())
{
	if (*newval == NULL ||
		!iapi_prefix_is_valid(*newval, strlen(*newval)))
	{
		GUC_check_errdetail("A token prefix is 1 to %d characters from [A-Za-z0-9_] and ends with \"_\".",
							IAPI_PREFIX_MAX);
		return false;
	}
	return true;
}

void
_PG_init(void)
{
	/* Superuser-only: the prefix is what secret scanners match on. */
	DefineCustomStringVariable("iapi_tokens.token_prefix",
							   "Prefix of newly generated tokens.",
							   "Existing tokens keep verifying after a change.",
							   &iapi_token_prefix,
							   "iapi_",
							   PGC_SUSET,
							   0,
							   check_token_prefix, NULL, NULL);

	/* Superuser-only: raising it hides token use from audits. */
	DefineCustomIntVariable("iapi_tokens.last_used_interval",
							"Minimum time between two writes of a token's last_used_at.",
							"0 records every verification; -1 never records.",
							&iapi_last_used_interval,
							600,
							-1, INT_MAX,
							PGC_SUSET,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	/* Superuser-only: it is a security policy. */
	DefineCustomIntVariable("iapi_tokens.max_lifetime",
							"Longest lifetime of a new personal access token.",
							"0 allows any lifetime, and tokens that never expire.",
							&iapi_max_lifetime,
							0,
							0, INT_MAX,
							PGC_SUSET,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	/* Read by the cap trigger with current_setting(). */
	DefineCustomIntVariable("iapi_tokens.max_tokens_per_owner",
							"Maximum number of active personal access tokens per role.",
							"0 means no limit.",
							&iapi_max_tokens_per_owner,
							0,
							0, INT_MAX,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);

	/* Superuser-only: it decides how stale last_used_at may be. */
	DefineCustomIntVariable("iapi_tokens.usage_flush_interval",
							"Time between two flushes of recorded token uses.",
							"Needs shared_preload_libraries; a flush also starts early when the buffer is half full.",
							&iapi_usage_flush_interval,
							1000,
							10, 3600 * 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	/* Hidden from non-superusers: it may hold a password. */
	DefineCustomStringVariable("iapi_tokens.usage_primary_conninfo",
							   "Where a hot standby forwards recorded token uses.",
							   "A libpq connection string without dbname; each database's uses go to the same database on the primary.",
							   &iapi_usage_primary_conninfo,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);

	/*
	 * A PGC_POSTMASTER setting can only be defined at server start, so the
	 * buffer's size exists only when the library is preloaded.
	 */
	if (process_shared_preload_libraries_in_progress && !IsBinaryUpgrade)
	{
		DefineCustomIntVariable("iapi_tokens.usage_buffer_size",
								"Tokens whose uses shared memory holds between two flushes.",
								"Uses of further tokens are dropped and counted in usage_stats().",
								&iapi_usage_buffer_size,
								65536,
								1024, 64 * 1024 * 1024,
								PGC_POSTMASTER,
								0,
								NULL, NULL, NULL);
		iapi_usage_shmem_init();
		iapi_usage_register_launcher();

		DefineCustomIntVariable("iapi_tokens.rate_limit_max_tokens",
								"Rate-limited tokens whose counts shared memory holds.",
								"When all are in a live window, a further limited token is refused until one ends.",
								&iapi_rate_limit_max_tokens,
								65536,
								64, 64 * 1024 * 1024,
								PGC_POSTMASTER,
								0,
								NULL, NULL, NULL);
		iapi_rate_limit_shmem_init();
	}

	MarkGUCPrefixReserved("iapi_tokens");

	iapi_current_token_init();
	iapi_rate_limit_xact_init();
}
