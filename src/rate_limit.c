/*-------------------------------------------------------------------------
 *
 * rate_limit.c
 *	  Per-token rate limits, counted in shared memory at verification.
 *
 * A token with rate_limit N per rate_window W is admitted at most N times in
 * each window.  A window opens at the first verification after the previous
 * one ended and lasts W (a fixed window anchored on the token's own traffic,
 * not on the clock).  So at most N requests pass in any window that starts
 * with a request, and at most 2N in an arbitrary span of length W: the end
 * of one window and the start of the next.  docs/rate-limits.md says why.
 *
 * Each limited token has one shared entry whose state is a single 64-bit
 * word: the window's end (milliseconds since the shared memory was set up)
 * and the admissions counted in it.  An admission is one compare-and-swap
 * on that word under the partition lock taken shared, so concurrent
 * verifications of one hot token never queue on a lock; a refusal writes
 * nothing.  Only a token's first verification since it was evicted takes
 * its partition lock exclusively.
 *
 * Memory is bounded by iapi_tokens.rate_limit_max_tokens.  When it is full,
 * the entries whose window has ended, which hold nothing a fresh entry
 * would not, are evicted.  If every entry is in a live window, the newcomer
 * is refused (fail closed) and counted as an overflow: failing open would
 * let whoever holds enough limited tokens switch off everyone's limits.
 *
 * Counts are per server and live only in shared memory: a standby counts
 * its own requests, and a restart or a crash starts every window afresh.
 * A committed revocation takes the token's entry out.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/twophase.h"
#include "access/xact.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "compat.h"
#include "iapi_tokens.h"
#include "rate_limit.h"

#define RATE_PARTITIONS			16	/* a power of two */
#define RATE_TRANCHE			"iapi_tokens_rate_limit"

/* state = window end (ms) << RATE_COUNT_BITS | admissions; 0: no window */
#define RATE_COUNT_BITS			20	/* 2^20 > IAPI_RATE_LIMIT_MAX */
#define RATE_COUNT_MASK			((UINT64CONST(1) << RATE_COUNT_BITS) - 1)

StaticAssertDecl(IAPI_RATE_LIMIT_MAX <= RATE_COUNT_MASK,
				 "the admission count must fit in its bits");

typedef struct RateKey
{
	Oid			dbid;
	Oid			relid;			/* of the tokens table, as for usage */
	int64		token_id;
} RateKey;

typedef struct RateEntry
{
	RateKey		key;
	pg_atomic_uint64 state;
} RateEntry;

/*
 * Each process counts its admissions and refusals in a cache line of its
 * own: one counter that every verification of a hot token incremented
 * would be one more line the callers fight over.
 */
typedef union RateProcCounts
{
	struct
	{
		pg_atomic_uint64 admitted;
		pg_atomic_uint64 refused;
	}			c;
	char		pad[PG_CACHE_LINE_SIZE];
} RateProcCounts;

typedef struct RateShared
{
	LWLockPadded *locks;
	TimestampTz epoch;			/* time 0 of the window ends */
	pg_atomic_uint32 entries;	/* at most rate_limit_max_tokens */
	pg_atomic_uint64 last_eviction_ms;	/* the last scan for ended windows */
	pg_atomic_uint64 evictions;
	pg_atomic_uint64 overflows;
	int			nprocs;
	RateProcCounts *counts;		/* by process number */
} RateShared;

/* A revoked token whose entry goes when its transaction commits. */
typedef struct PendingForget
{
	RateKey		key;
	SubTransactionId subid;
} PendingForget;

int			iapi_rate_limit_max_tokens = 65536;

static RateShared *rate = NULL;
static HTAB *rate_hash = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* In TopTransactionContext; forgotten with the transaction. */
static List *pending_forgets = NIL;
static bool warned_overflow = false;

/* Every PGPROC: backends, auxiliary processes, prepared transactions. */
static int
rate_nprocs(void)
{
	return MaxBackends + NUM_AUXILIARY_PROCS + max_prepared_xacts;
}

static void
rate_shmem_request(void)
{
	Size		size;

	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	/* ShmemInitStruct() aligns each of the two structs to a cache line. */
	size = add_size(CACHELINEALIGN(sizeof(RateShared)),
					mul_size(rate_nprocs() + 1, sizeof(RateProcCounts)));
	size = add_size(size, 2 * PG_CACHE_LINE_SIZE);
	RequestAddinShmemSpace(add_size(size, hash_estimate_size(iapi_rate_limit_max_tokens,
															 sizeof(RateEntry))));
	RequestNamedLWLockTranche(RATE_TRANCHE, RATE_PARTITIONS);
}

static void
rate_shmem_startup(void)
{
	bool		found;
	HASHCTL		info;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	rate = ShmemInitStruct("iapi_tokens rate limits", sizeof(RateShared), &found);
	if (!found)
	{
		char	   *counts;

		rate->locks = GetNamedLWLockTranche(RATE_TRANCHE);
		rate->epoch = GetCurrentTimestamp();
		pg_atomic_init_u32(&rate->entries, 0);
		pg_atomic_init_u64(&rate->last_eviction_ms, 0);
		pg_atomic_init_u64(&rate->evictions, 0);
		pg_atomic_init_u64(&rate->overflows, 0);
		/* The last slot serves a process number out of range, shared. */
		rate->nprocs = rate_nprocs() + 1;
		counts = ShmemInitStruct("iapi_tokens rate limit counts",
								 mul_size(rate->nprocs, sizeof(RateProcCounts)) +
								 PG_CACHE_LINE_SIZE, &found);
		rate->counts = (RateProcCounts *) TYPEALIGN(PG_CACHE_LINE_SIZE, counts);
		for (int i = 0; i < rate->nprocs; i++)
		{
			pg_atomic_init_u64(&rate->counts[i].c.admitted, 0);
			pg_atomic_init_u64(&rate->counts[i].c.refused, 0);
		}
	}
	info.keysize = sizeof(RateKey);
	info.entrysize = sizeof(RateEntry);
	info.num_partitions = RATE_PARTITIONS;
	rate_hash = ShmemInitHash("iapi_tokens rate limit hash",
							  iapi_rate_limit_max_tokens, iapi_rate_limit_max_tokens,
							  &info, HASH_ELEM | HASH_BLOBS | HASH_PARTITION | HASH_FIXED_SIZE);
	LWLockRelease(AddinShmemInitLock);
}

/* From _PG_init, while shared_preload_libraries is being processed. */
void
iapi_rate_limit_shmem_init(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = rate_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = rate_shmem_startup;
}

bool
iapi_rate_limit_available(void)
{
	return rate != NULL;
}

static LWLock *
partition_lock(uint32 hashcode)
{
	return &rate->locks[hashcode % RATE_PARTITIONS].lock;
}

/* This process's counters. */
static RateProcCounts *
my_counts(void)
{
	int			procno = IAPI_MY_PROC_NUMBER;

	if (procno < 0 || procno >= rate->nprocs - 1)
		procno = rate->nprocs - 1;
	return &rate->counts[procno];
}

/*
 * Whether the window that ends at end has ended.  One that ends further
 * ahead than the longest window can last was opened before the clock was
 * set back, and counts as ended: a clock step does not prolong a refusal.
 */
static inline bool
window_ended(int64 end, int64 now_ms)
{
	return end <= now_ms || end - now_ms > IAPI_RATE_WINDOW_MAX_USECS / 1000;
}

/* Milliseconds since the epoch; a clock set back before it counts as 0. */
static int64
rate_clock_ms(TimestampTz now)
{
	return Max(now - rate->epoch, 0) / 1000;
}

/*
 * Evicts every entry whose window has ended, under all partition locks;
 * returns how many went.  The caller holds none of them.  The scan stalls
 * every limited verification, so a full table is scanned at most once a
 * second, by one backend: the others are refused meanwhile.
 */
static int
evict_ended_windows(int64 now_ms)
{
	HASH_SEQ_STATUS status;
	RateEntry  *entry;
	int			evicted = 0;
	uint64		last = pg_atomic_read_u64(&rate->last_eviction_ms);

	/* A last scan "in the future" was made before the clock was set back. */
	if (last != 0 && (int64) last > now_ms - 1000 && (int64) last <= now_ms)
		return 0;
	if (!pg_atomic_compare_exchange_u64(&rate->last_eviction_ms, &last,
										(uint64) Max(now_ms, 1)))
		return 0;

	iapi_lock_partitions(rate->locks, RATE_PARTITIONS, LW_EXCLUSIVE);
	hash_seq_init(&status, rate_hash);
	while ((entry = hash_seq_search(&status)) != NULL)
	{
		uint64		state = pg_atomic_read_u64(&entry->state);

		if (window_ended((int64) (state >> RATE_COUNT_BITS), now_ms))
		{
			/* dynahash allows removing the entry just returned. */
			hash_search(rate_hash, &entry->key, HASH_REMOVE, NULL);
			pg_atomic_fetch_sub_u32(&rate->entries, 1);
			evicted++;
		}
	}
	iapi_unlock_partitions(rate->locks, RATE_PARTITIONS);
	pg_atomic_fetch_add_u64(&rate->evictions, evicted);
	return evicted;
}

/*
 * The token's entry, created if there is room; NULL if there is none.  The
 * caller holds the partition lock exclusively.
 */
static RateEntry *
enter_entry(const RateKey *key, uint32 hashcode)
{
	RateEntry  *entry;
	bool		found;

	/* Another backend may have entered it while we waited for the lock. */
	entry = hash_search_with_hash_value(rate_hash, key, hashcode, HASH_FIND, NULL);
	if (entry != NULL)
		return entry;
	/* Reserve a slot first, so that the bound holds across partitions. */
	if (pg_atomic_fetch_add_u32(&rate->entries, 1) >= (uint32) iapi_rate_limit_max_tokens)
	{
		pg_atomic_fetch_sub_u32(&rate->entries, 1);
		return NULL;
	}
	entry = hash_search_with_hash_value(rate_hash, key, hashcode,
										HASH_ENTER_NULL, &found);
	if (entry == NULL)
	{
		pg_atomic_fetch_sub_u32(&rate->entries, 1);
		return NULL;
	}
	Assert(!found);
	pg_atomic_init_u64(&entry->state, 0);
	return entry;
}

/*
 * One admission attempt on entry: a compare-and-swap loop, so concurrent
 * callers each count exactly once.  A refusal changes nothing.
 */
static bool
admit_on(RateEntry *entry, int32 limit, int64 window_ms, int64 now_ms,
		 RateOutcome *outcome)
{
	uint64		old = pg_atomic_read_u64(&entry->state);

	for (;;)
	{
		int64		end = (int64) (old >> RATE_COUNT_BITS);
		int64		count = (int64) (old & RATE_COUNT_MASK);
		uint64		new;

		if (window_ended(end, now_ms))
		{
			/* No window, or it has ended: this request opens one. */
			new = ((uint64) (now_ms + window_ms) << RATE_COUNT_BITS) | 1;
			outcome->remaining = limit - 1;
			outcome->reset_ms = window_ms;
		}
		else if (count < limit)
		{
			new = old + 1;
			outcome->remaining = limit - (int32) count - 1;
			outcome->reset_ms = end - now_ms;
		}
		else
		{
			/* A lowered limit can leave count above it: refused too. */
			outcome->remaining = 0;
			outcome->reset_ms = end - now_ms;
			return false;
		}
		if (pg_atomic_compare_exchange_u64(&entry->state, &old, new))
			return true;
	}
}

/*
 * Counts one verification of a limited token and says whether it passes.
 * Never raises an error and never waits for more than a partition lock
 * (all of them, briefly, when the table is full).
 */
bool
iapi_rate_limit_admit(Oid relid, int64 token_id, int32 limit, int64 window_us,
					  RateOutcome *outcome)
{
	RateKey		key;
	uint32		hashcode;
	LWLock	   *lock;
	RateEntry  *entry;
	int64		window_ms;
	bool		admitted;

	/* The table's CHECK keeps both in range; a count must fit its bits. */
	limit = Min(Max(limit, 1), IAPI_RATE_LIMIT_MAX);
	window_ms = Min(Max(window_us, IAPI_RATE_WINDOW_MIN_USECS),
					IAPI_RATE_WINDOW_MAX_USECS) / 1000;
	outcome->known = true;
	/* No padding in the key: HASH_BLOBS hashes all of it. */
	key.dbid = MyDatabaseId;
	key.relid = relid;
	key.token_id = token_id;
	hashcode = get_hash_value(rate_hash, &key);
	lock = partition_lock(hashcode);

	LWLockAcquire(lock, LW_SHARED);
	entry = hash_search_with_hash_value(rate_hash, &key, hashcode, HASH_FIND, NULL);
	if (entry == NULL)
	{
		LWLockRelease(lock);
		LWLockAcquire(lock, LW_EXCLUSIVE);
		entry = enter_entry(&key, hashcode);
		if (entry == NULL)
		{
			LWLockRelease(lock);
			if (evict_ended_windows(rate_clock_ms(GetCurrentTimestamp())) > 0)
			{
				LWLockAcquire(lock, LW_EXCLUSIVE);
				entry = enter_entry(&key, hashcode);
				if (entry == NULL)
					LWLockRelease(lock);
			}
			if (entry == NULL)
			{
				pg_atomic_fetch_add_u64(&rate->overflows, 1);
				pg_atomic_fetch_add_u64(&my_counts()->c.refused, 1);
				if (!warned_overflow)
				{
					warned_overflow = true;
					ereport(LOG,
							(errmsg("iapi_tokens: refused token " INT64_FORMAT ": every one of the %d rate limit slots is in a live window",
									token_id, iapi_rate_limit_max_tokens),
							 errhint("Raise iapi_tokens.rate_limit_max_tokens.")));
				}
				outcome->remaining = 0;
				outcome->reset_ms = 1000;
				return false;
			}
		}
	}
	/* Under the lock: a window never opens at a time we waited past. */
	admitted = admit_on(entry, limit, window_ms, rate_clock_ms(GetCurrentTimestamp()),
						outcome);
	LWLockRelease(lock);

	pg_atomic_fetch_add_u64(admitted ? &my_counts()->c.admitted :
							&my_counts()->c.refused, 1);
	return admitted;
}

static void
forget(const RateKey *key)
{
	uint32		hashcode = get_hash_value(rate_hash, key);
	LWLock	   *lock = partition_lock(hashcode);
	bool		found;

	LWLockAcquire(lock, LW_EXCLUSIVE);
	hash_search_with_hash_value(rate_hash, key, hashcode, HASH_REMOVE, &found);
	if (found)
		pg_atomic_fetch_sub_u32(&rate->entries, 1);
	LWLockRelease(lock);
}

static void
forget_at_commit(XactEvent event, void *arg pg_attribute_unused())
{
	ListCell   *lc;

	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			/* Committed: the token is revoked for good. */
			if (rate != NULL)
				foreach(lc, pending_forgets)
					forget(&((PendingForget *) lfirst(lc))->key);
			pending_forgets = NIL;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			/* A prepared revocation may still roll back: keep the counts. */
			pending_forgets = NIL;
			break;
		default:
			break;
	}
}

static void
forget_at_commit_sub(SubXactEvent event, SubTransactionId mySubid,
					 SubTransactionId parentSubid, void *arg pg_attribute_unused())
{
	ListCell   *lc;

	foreach(lc, pending_forgets)
	{
		PendingForget *item = lfirst(lc);

		if (item->subid != mySubid)
			continue;
		if (event == SUBXACT_EVENT_COMMIT_SUB)
			item->subid = parentSubid;
		else if (event == SUBXACT_EVENT_ABORT_SUB)
			pending_forgets = foreach_delete_current(pending_forgets, lc);
	}
}

void
iapi_rate_limit_xact_init(void)
{
	RegisterXactCallback(forget_at_commit, NULL);
	RegisterSubXactCallback(forget_at_commit_sub, NULL);
}

PG_FUNCTION_INFO_V1(iapi_tokens_forget_rate_limit);

/* SQL: iapi_tokens_internal.forget_rate_limit() RETURNS trigger */
Datum
iapi_tokens_forget_rate_limit(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	TupleDesc	desc;
	HeapTuple	tuple;
	AttrNumber	attnum;
	Datum		id;
	bool		isnull;
	MemoryContext oldcontext;
	PendingForget *item;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_AFTER(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event))
		elog(ERROR, "forget_rate_limit must be an AFTER ... FOR EACH ROW trigger");
	if (rate == NULL)
		return PointerGetDatum(NULL);

	desc = RelationGetDescr(trigdata->tg_relation);
	tuple = trigdata->tg_trigtuple;
	attnum = SPI_fnumber(desc, "id");
	if (attnum <= 0)
		elog(ERROR, "table %s has no column \"id\"",
			 RelationGetRelationName(trigdata->tg_relation));
	/*
	 * Not heap_getattr(): a later minor release's headers inline a call to a
	 * function that an earlier server of the same major lacks.
	 */
	id = SPI_getbinval(tuple, desc, attnum, &isnull);
	if (isnull)
		return PointerGetDatum(NULL);

	oldcontext = MemoryContextSwitchTo(TopTransactionContext);
	item = palloc(sizeof(PendingForget));
	item->key.dbid = MyDatabaseId;
	item->key.relid = RelationGetRelid(trigdata->tg_relation);
	item->key.token_id = DatumGetInt64(id);
	item->subid = GetCurrentSubTransactionId();
	pending_forgets = lappend(pending_forgets, item);
	MemoryContextSwitchTo(oldcontext);
	return PointerGetDatum(NULL);
}

PG_FUNCTION_INFO_V1(iapi_tokens_rate_limits_enforced);

/* SQL: iapi_tokens_internal.rate_limits_enforced() RETURNS boolean */
Datum
iapi_tokens_rate_limits_enforced(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(rate != NULL);
}

PG_FUNCTION_INFO_V1(iapi_tokens_rate_limit_stats);

/* SQL: iapi_tokens.rate_limit_stats() RETURNS TABLE (preloaded, max_tokens, ...) */
Datum
iapi_tokens_rate_limit_stats(PG_FUNCTION_ARGS)
{
	TupleDesc	desc;
	Datum		values[8];
	bool		nulls[8];

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	if (desc->natts != lengthof(values))
		elog(ERROR, "rate_limit_stats returns %d columns, %d were expected",
			 desc->natts, (int) lengthof(values));

	memset(nulls, true, sizeof(nulls));
	values[0] = BoolGetDatum(rate != NULL);
	nulls[0] = false;
	if (rate != NULL)
	{
		HASH_SEQ_STATUS status;
		RateEntry  *entry;
		int64		tracked = 0;
		int64		live = 0;
		int64		now_ms = rate_clock_ms(GetCurrentTimestamp());
		int64		admitted = 0;
		int64		refused = 0;

		iapi_lock_partitions(rate->locks, RATE_PARTITIONS, LW_SHARED);
		hash_seq_init(&status, rate_hash);
		while ((entry = hash_seq_search(&status)) != NULL)
		{
			if (entry->key.dbid != MyDatabaseId)
				continue;
			tracked++;
			if (!window_ended((int64) (pg_atomic_read_u64(&entry->state) >> RATE_COUNT_BITS),
							  now_ms))
				live++;
		}
		iapi_unlock_partitions(rate->locks, RATE_PARTITIONS);

		values[1] = Int32GetDatum(iapi_rate_limit_max_tokens);
		values[2] = Int64GetDatum(tracked);
		values[3] = Int64GetDatum(live);
		for (int i = 0; i < rate->nprocs; i++)
		{
			admitted += (int64) pg_atomic_read_u64(&rate->counts[i].c.admitted);
			refused += (int64) pg_atomic_read_u64(&rate->counts[i].c.refused);
		}
		values[4] = Int64GetDatum(admitted);
		values[5] = Int64GetDatum(refused);
		values[6] = Int64GetDatum((int64) pg_atomic_read_u64(&rate->evictions));
		values[7] = Int64GetDatum((int64) pg_atomic_read_u64(&rate->overflows));
		memset(nulls, false, sizeof(nulls));
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}
