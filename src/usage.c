/*-------------------------------------------------------------------------
 *
 * usage.c
 *	  Token use, recorded in shared memory off the caller's transaction.
 *
 * A valid verification adds (database, token id, time) to a fixed-size
 * shared hash table and nothing else: no write, no row lock, no
 * subtransaction, so it works the same in read-only transactions and on hot
 * standbys.  The background workers of usage_worker.c apply the table to
 * iapi_tokens.tokens (or forward it to the primary) and then take off what
 * they applied.
 *
 * Locking follows pg_stat_statements: the table is split into partitions,
 * each under an LWLock.  A use of a token already in the table takes its
 * partition lock shared and the entry's spinlock, so many backends verifying
 * one hot token do not queue on an exclusive lock.  Only a token's first use
 * since the last flush takes the lock exclusively.
 *
 * When the table is full, a use of a token that is not in it is dropped and
 * counted; tokens already in it keep their newest time and their count.
 * A clean shutdown writes the table to a file that the next start reads
 * back; a crash loses it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>
#include <unistd.h>

#include "access/htup_details.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/fd.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/timestamp.h"

#include "iapi_tokens.h"
#include "usage.h"

#define USAGE_PARTITIONS		16	/* a power of two */
#define USAGE_TRANCHE			"iapi_tokens_usage"
#define USAGE_DUMP_FILE			"pg_stat/iapi_tokens_usage.stat"
#define USAGE_DUMP_MAGIC		0x1A9170B6
#define USAGE_ERROR_LEN			256

/*
 * The key has no padding, so HASH_BLOBS hashes only what is set.  The
 * tokens table's OID keeps the uses of an extension dropped and created
 * again, whose token ids start over, off the new one's tokens.
 */
typedef struct UsageKey
{
	Oid			dbid;
	Oid			relid;
	int64		token_id;
} UsageKey;

typedef struct UsageEntry
{
	UsageKey	key;
	slock_t		mutex;
	TimestampTz last_used;
	int64		uses;
} UsageEntry;

typedef struct UsageShared
{
	LWLockPadded *locks;
	pg_atomic_uint32 entries;	/* tokens in the table, at most buffer_size */
	pg_atomic_uint32 wakeup_pending;
	pg_atomic_uint64 dropped;
	Latch	   *launcher_latch;

	slock_t		stats_mutex;	/* protects the rest */
	uint64		batches_flushed;
	uint64		uses_applied;
	uint64		uses_forwarded;
	uint64		forward_failures;
	int			failures_in_a_row;	/* the launcher backs off on them */
	TimestampTz last_flush_at;
	char		last_error[USAGE_ERROR_LEN];
} UsageShared;

typedef struct UsageFileEntry
{
	Oid			dbid;
	Oid			relid;
	int64		token_id;
	TimestampTz last_used;
	int64		uses;
} UsageFileEntry;

int			iapi_usage_buffer_size = 65536;

static UsageShared *usage = NULL;
static HTAB *usage_hash = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static Size
usage_shmem_size(void)
{
	return add_size(MAXALIGN(sizeof(UsageShared)),
					hash_estimate_size(iapi_usage_buffer_size, sizeof(UsageEntry)));
}

static void
usage_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(usage_shmem_size());
	RequestNamedLWLockTranche(USAGE_TRANCHE, USAGE_PARTITIONS);
}

static LWLock *
partition_lock(uint32 hashcode)
{
	return &usage->locks[hashcode % USAGE_PARTITIONS].lock;
}

static void
lock_all_partitions(LWLockMode mode)
{
	iapi_lock_partitions(usage->locks, USAGE_PARTITIONS, mode);
}

static void
unlock_all_partitions(void)
{
	iapi_unlock_partitions(usage->locks, USAGE_PARTITIONS);
}

/*
 * Adds uses to a token's entry, creating it if there is room.  The caller
 * holds the partition lock; exclusively if create is true.
 */
static bool
add_uses(const UsageKey *key, uint32 hashcode, TimestampTz used_at,
		 int64 uses, bool create)
{
	UsageEntry *entry;
	bool		found;

	entry = hash_search_with_hash_value(usage_hash, key, hashcode, HASH_FIND, NULL);
	if (entry == NULL)
	{
		if (!create)
			return false;
		/* Reserve a slot first, so that the bound holds across partitions. */
		if (pg_atomic_fetch_add_u32(&usage->entries, 1) >= (uint32) iapi_usage_buffer_size)
		{
			pg_atomic_fetch_sub_u32(&usage->entries, 1);
			pg_atomic_fetch_add_u64(&usage->dropped, uses);
			return true;
		}
		entry = hash_search_with_hash_value(usage_hash, key, hashcode,
											HASH_ENTER_NULL, &found);
		if (entry == NULL)
		{
			pg_atomic_fetch_sub_u32(&usage->entries, 1);
			pg_atomic_fetch_add_u64(&usage->dropped, uses);
			return true;
		}
		SpinLockInit(&entry->mutex);
		entry->last_used = used_at;
		entry->uses = uses;
		return true;
	}

	SpinLockAcquire(&entry->mutex);
	if (used_at > entry->last_used)
		entry->last_used = used_at;
	entry->uses += uses;
	SpinLockRelease(&entry->mutex);
	return true;
}

static void
make_key(UsageKey *key, Oid dbid, Oid relid, int64 token_id)
{
	key->dbid = dbid;
	key->relid = relid;
	key->token_id = token_id;
}

static void
add_uses_locked(Oid dbid, Oid relid, int64 token_id, TimestampTz used_at, int64 uses)
{
	UsageKey	key;
	uint32		hashcode;
	LWLock	   *lock;

	make_key(&key, dbid, relid, token_id);
	hashcode = get_hash_value(usage_hash, &key);
	lock = partition_lock(hashcode);

	LWLockAcquire(lock, LW_SHARED);
	if (add_uses(&key, hashcode, used_at, uses, false))
	{
		LWLockRelease(lock);
		return;
	}
	LWLockRelease(lock);

	LWLockAcquire(lock, LW_EXCLUSIVE);
	(void) add_uses(&key, hashcode, used_at, uses, true);
	LWLockRelease(lock);
}

bool
iapi_usage_available(void)
{
	return usage != NULL;
}

/*
 * Records one use.  Never raises an error and never waits for more than a
 * partition lock.  Wakes the launcher early once the table is half full.
 */
void
iapi_usage_record(Oid relid, int64 token_id, TimestampTz used_at)
{
	add_uses_locked(MyDatabaseId, relid, token_id, used_at, 1);

	if (pg_atomic_read_u32(&usage->entries) > (uint32) iapi_usage_buffer_size / 2 &&
		pg_atomic_exchange_u32(&usage->wakeup_pending, 1) == 0)
	{
		Latch	   *latch = usage->launcher_latch;

		if (latch != NULL)
			SetLatch(latch);
	}
}

void
iapi_usage_set_launcher_latch(Latch *latch)
{
	usage->launcher_latch = latch;
}

bool
iapi_usage_wakeup_requested(void)
{
	return pg_atomic_exchange_u32(&usage->wakeup_pending, 0) != 0;
}

/*
 * The pending uses of a database, copied out under all partition locks.
 * The entries stay until iapi_usage_ack() takes the applied uses off, so a
 * failed flush loses nothing.
 */
UsageItem *
iapi_usage_collect(Oid dbid, int *count)
{
	HASH_SEQ_STATUS status;
	UsageEntry *entry;
	UsageItem  *items;
	int			n = 0;
	int			size;

	lock_all_partitions(LW_SHARED);
	size = Max(hash_get_num_entries(usage_hash), 1);
	items = palloc(sizeof(UsageItem) * size);
	hash_seq_init(&status, usage_hash);
	while ((entry = hash_seq_search(&status)) != NULL)
	{
		if (entry->key.dbid != dbid || n >= size)
			continue;
		items[n].relid = entry->key.relid;
		items[n].token_id = entry->key.token_id;
		SpinLockAcquire(&entry->mutex);
		items[n].last_used = entry->last_used;
		items[n].uses = entry->uses;
		SpinLockRelease(&entry->mutex);
		n++;
	}
	unlock_all_partitions();
	*count = n;
	return items;
}

/*
 * Takes applied uses off.  An entry whose every use was applied goes; one
 * used again meanwhile stays with the rest, and its newest time.
 */
void
iapi_usage_ack(Oid dbid, const UsageItem *items, int count)
{
	for (int i = 0; i < count; i++)
	{
		UsageKey	key;
		uint32		hashcode;
		LWLock	   *lock;
		UsageEntry *entry;

		make_key(&key, dbid, items[i].relid, items[i].token_id);
		hashcode = get_hash_value(usage_hash, &key);
		lock = partition_lock(hashcode);
		LWLockAcquire(lock, LW_EXCLUSIVE);
		entry = hash_search_with_hash_value(usage_hash, &key, hashcode, HASH_FIND, NULL);
		if (entry != NULL)
		{
			/* Exclusive lock: no backend holds the spinlock. */
			entry->uses -= items[i].uses;
			if (entry->uses <= 0)
			{
				hash_search_with_hash_value(usage_hash, &key, hashcode, HASH_REMOVE, NULL);
				pg_atomic_fetch_sub_u32(&usage->entries, 1);
			}
		}
		LWLockRelease(lock);
	}
}

/* Up to max distinct databases with pending uses. */
int
iapi_usage_databases(Oid *dbids, int max)
{
	HASH_SEQ_STATUS status;
	UsageEntry *entry;
	int			n = 0;

	lock_all_partitions(LW_SHARED);
	hash_seq_init(&status, usage_hash);
	while ((entry = hash_seq_search(&status)) != NULL)
	{
		int			i;

		for (i = 0; i < n; i++)
			if (dbids[i] == entry->key.dbid)
				break;
		if (i == n && n < max)
			dbids[n++] = entry->key.dbid;
	}
	unlock_all_partitions();
	return n;
}

/* Forgets a database's uses: it was dropped, or lost the extension. */
int64
iapi_usage_discard(Oid dbid)
{
	HASH_SEQ_STATUS status;
	UsageEntry *entry;
	int64		uses = 0;

	lock_all_partitions(LW_EXCLUSIVE);
	hash_seq_init(&status, usage_hash);
	while ((entry = hash_seq_search(&status)) != NULL)
	{
		if (entry->key.dbid != dbid)
			continue;
		uses += entry->uses;
		/* dynahash allows removing the entry just returned. */
		hash_search(usage_hash, &entry->key, HASH_REMOVE, NULL);
		pg_atomic_fetch_sub_u32(&usage->entries, 1);
	}
	unlock_all_partitions();
	return uses;
}

void
iapi_usage_report_flush(bool forwarded, int64 uses, const char *error)
{
	SpinLockAcquire(&usage->stats_mutex);
	if (error == NULL)
	{
		usage->batches_flushed++;
		if (forwarded)
			usage->uses_forwarded += uses;
		else
			usage->uses_applied += uses;
		usage->last_flush_at = GetCurrentTimestamp();
		usage->last_error[0] = '\0';
		usage->failures_in_a_row = 0;
	}
	else
	{
		if (forwarded)
			usage->forward_failures++;
		if (usage->failures_in_a_row < INT_MAX)
			usage->failures_in_a_row++;
		snprintf(usage->last_error, USAGE_ERROR_LEN, "%s", error);
	}
	SpinLockRelease(&usage->stats_mutex);
}

int
iapi_usage_failures_in_a_row(void)
{
	int			failures;

	SpinLockAcquire(&usage->stats_mutex);
	failures = usage->failures_in_a_row;
	SpinLockRelease(&usage->stats_mutex);
	return failures;
}

/*
 * At a clean shutdown the postmaster, last to go, writes what is still
 * pending; after a crash (code != 0) it is lost, as documented.
 */
static void
usage_shmem_shutdown(int code, Datum arg pg_attribute_unused())
{
	HASH_SEQ_STATUS status;
	UsageEntry *entry;
	FILE	   *file;
	uint32		header[2] = {USAGE_DUMP_MAGIC, 0};

	if (code != 0 || usage == NULL)
		return;

	header[1] = hash_get_num_entries(usage_hash);
	file = AllocateFile(USAGE_DUMP_FILE ".tmp", PG_BINARY_W);
	if (file == NULL)
		goto error;
	if (fwrite(header, sizeof(header), 1, file) != 1)
		goto error;
	hash_seq_init(&status, usage_hash);
	while ((entry = hash_seq_search(&status)) != NULL)
	{
		UsageFileEntry out = {entry->key.dbid, entry->key.relid, entry->key.token_id,
		entry->last_used, entry->uses};

		if (fwrite(&out, sizeof(out), 1, file) != 1)
		{
			hash_seq_term(&status);
			goto error;
		}
	}
	if (FreeFile(file))
	{
		file = NULL;
		goto error;
	}
	(void) durable_rename(USAGE_DUMP_FILE ".tmp", USAGE_DUMP_FILE, LOG);
	return;

error:
	ereport(LOG,
			(errcode_for_file_access(),
			 errmsg("could not write file \"%s\": %m", USAGE_DUMP_FILE ".tmp")));
	if (file)
		FreeFile(file);
	unlink(USAGE_DUMP_FILE ".tmp");
}

/* Reads back what a clean shutdown wrote, once: the file goes after. */
static void
load_dump_file(void)
{
	FILE	   *file;
	uint32		header[2];

	file = AllocateFile(USAGE_DUMP_FILE, PG_BINARY_R);
	if (file == NULL)
	{
		if (errno != ENOENT)
			ereport(LOG,
					(errcode_for_file_access(),
					 errmsg("could not read file \"%s\": %m", USAGE_DUMP_FILE)));
		return;
	}
	if (fread(header, sizeof(header), 1, file) == 1 && header[0] == USAGE_DUMP_MAGIC)
	{
		for (uint32 i = 0; i < header[1]; i++)
		{
			UsageFileEntry in;

			if (fread(&in, sizeof(in), 1, file) != 1)
			{
				ereport(LOG,
						(errmsg("file \"%s\" is truncated; %u of %u pending token uses read",
								USAGE_DUMP_FILE, i, header[1])));
				break;
			}
			if (in.uses > 0)
				add_uses_locked(in.dbid, in.relid, in.token_id, in.last_used, in.uses);
		}
	}
	else
		ereport(LOG,
				(errmsg("ignoring file \"%s\": not a usage file of this version",
						USAGE_DUMP_FILE)));
	FreeFile(file);
	unlink(USAGE_DUMP_FILE);
}

static void
usage_shmem_startup(void)
{
	bool		found;
	HASHCTL		info;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	usage = ShmemInitStruct("iapi_tokens usage", sizeof(UsageShared), &found);
	if (!found)
	{
		usage->locks = GetNamedLWLockTranche(USAGE_TRANCHE);
		pg_atomic_init_u32(&usage->entries, 0);
		pg_atomic_init_u32(&usage->wakeup_pending, 0);
		pg_atomic_init_u64(&usage->dropped, 0);
		usage->launcher_latch = NULL;
		SpinLockInit(&usage->stats_mutex);
		usage->batches_flushed = 0;
		usage->uses_applied = 0;
		usage->uses_forwarded = 0;
		usage->forward_failures = 0;
		usage->failures_in_a_row = 0;
		usage->last_flush_at = 0;
		usage->last_error[0] = '\0';
	}
	info.keysize = sizeof(UsageKey);
	info.entrysize = sizeof(UsageEntry);
	info.num_partitions = USAGE_PARTITIONS;
	usage_hash = ShmemInitHash("iapi_tokens usage hash",
							   iapi_usage_buffer_size, iapi_usage_buffer_size,
							   &info, HASH_ELEM | HASH_BLOBS | HASH_PARTITION);
	LWLockRelease(AddinShmemInitLock);

	if (!IsUnderPostmaster)
	{
		on_shmem_exit(usage_shmem_shutdown, (Datum) 0);
		if (!found)
			load_dump_file();
	}
}

/* From _PG_init, while shared_preload_libraries is being processed. */
void
iapi_usage_shmem_init(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = usage_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = usage_shmem_startup;
}

PG_FUNCTION_INFO_V1(iapi_tokens_usage_stats);

/* SQL: iapi_tokens.usage_stats() RETURNS TABLE (preloaded, uses_pending, ...) */
Datum
iapi_tokens_usage_stats(PG_FUNCTION_ARGS)
{
	TupleDesc	desc;
	Datum		values[10];
	bool		nulls[10];
	int			col = 0;

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	if (desc->natts != lengthof(values))
		elog(ERROR, "usage_stats returns %d columns, %d were expected",
			 desc->natts, (int) lengthof(values));

	memset(nulls, true, sizeof(nulls));
	values[col] = BoolGetDatum(usage != NULL);
	nulls[col++] = false;
	if (usage != NULL)
	{
		HASH_SEQ_STATUS status;
		UsageEntry *entry;
		int64		uses_pending = 0;
		int64		tokens_pending = 0;
		char		error[USAGE_ERROR_LEN];
		TimestampTz last_flush_at;

		lock_all_partitions(LW_SHARED);
		hash_seq_init(&status, usage_hash);
		while ((entry = hash_seq_search(&status)) != NULL)
		{
			if (entry->key.dbid != MyDatabaseId)
				continue;
			SpinLockAcquire(&entry->mutex);
			uses_pending += entry->uses;
			SpinLockRelease(&entry->mutex);
			tokens_pending++;
		}
		unlock_all_partitions();

		values[col++] = Int64GetDatum(uses_pending);
		values[col++] = Int64GetDatum(tokens_pending);
		SpinLockAcquire(&usage->stats_mutex);
		values[col++] = Int64GetDatum((int64) usage->batches_flushed);
		values[col++] = Int64GetDatum((int64) usage->uses_applied);
		last_flush_at = usage->last_flush_at;
		snprintf(error, sizeof(error), "%s", usage->last_error);
		values[col + 2] = Int64GetDatum((int64) usage->uses_forwarded);
		values[col + 3] = Int64GetDatum((int64) usage->forward_failures);
		SpinLockRelease(&usage->stats_mutex);
		values[col + 4] = Int64GetDatum((int64) pg_atomic_read_u64(&usage->dropped));
		for (int i = 1; i < col + 5; i++)
			nulls[i] = false;
		values[col] = TimestampTzGetDatum(last_flush_at);
		nulls[col] = (last_flush_at == 0);
		values[col + 1] = CStringGetTextDatum(error);
		nulls[col + 1] = (error[0] == '\0');
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}
