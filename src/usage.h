/*-------------------------------------------------------------------------
 *
 * usage.h
 *	  Token use recorded in shared memory (usage.c) and applied by the
 *	  background workers (usage_worker.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef IAPI_USAGE_H
#define IAPI_USAGE_H

#include "postgres.h"

#include "storage/latch.h"
#include "utils/timestamp.h"

/* One token's pending uses, as a flush sees them. */
typedef struct UsageItem
{
	Oid			relid;			/* of the tokens table the use was made on */
	int64		token_id;
	TimestampTz last_used;
	int64		uses;
} UsageItem;

/* GUCs */
extern int	iapi_usage_buffer_size;
extern int	iapi_usage_flush_interval;
extern char *iapi_usage_primary_conninfo;

/* usage.c */
extern void iapi_usage_shmem_init(void);
extern bool iapi_usage_available(void);
extern void iapi_usage_record(Oid relid, int64 token_id, TimestampTz used_at);
extern void iapi_usage_set_launcher_latch(Latch *latch);
extern bool iapi_usage_wakeup_requested(void);
extern UsageItem *iapi_usage_collect(Oid dbid, int *count);
extern void iapi_usage_ack(Oid dbid, const UsageItem *items, int count);
extern int	iapi_usage_databases(Oid *dbids, int max);
extern int64 iapi_usage_discard(Oid dbid);
extern void iapi_usage_report_flush(bool forwarded, int64 uses, const char *error);
extern int	iapi_usage_failures_in_a_row(void);

/* usage_worker.c */
extern void iapi_usage_register_launcher(void);

#endif							/* IAPI_USAGE_H */
