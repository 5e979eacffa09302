/*-------------------------------------------------------------------------
 *
 * rate_limit.h
 *	  Per-token rate limits, counted in shared memory (rate_limit.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef IAPI_RATE_LIMIT_H
#define IAPI_RATE_LIMIT_H

#include "postgres.h"

#include "utils/timestamp.h"

#define IAPI_RATE_LIMIT_MAX			1000000
#define IAPI_RATE_WINDOW_MIN_USECS	USECS_PER_SEC
#define IAPI_RATE_WINDOW_MAX_USECS	USECS_PER_DAY

/* What one admission decided. */
typedef struct RateOutcome
{
	bool		known;			/* false: no shared memory, nothing counted */
	int32		remaining;		/* admissions left in the window */
	int64		reset_ms;		/* until the window ends */
} RateOutcome;

extern int	iapi_rate_limit_max_tokens;

extern void iapi_rate_limit_shmem_init(void);
extern void iapi_rate_limit_xact_init(void);
extern bool iapi_rate_limit_available(void);
extern bool iapi_rate_limit_admit(Oid relid, int64 token_id, int32 limit,
								  int64 window_us, RateOutcome *outcome);

#endif							/* IAPI_RATE_LIMIT_H */
