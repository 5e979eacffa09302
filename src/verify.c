/*-------------------------------------------------------------------------
 *
 * verify.c
 *	  verify_token(): the hot path, called on every API request.
 *
 * It checks the token's shape and checksum, hashes it once and probes the
 * unique hash index directly, without the executor.  A valid token yields
 * one row; anything else yields none.  It raises no error for any input,
 * because an error statement can reach the server log with its parameters.
 *
 * With the library preloaded, a valid verification records its use in
 * shared memory (usage.c) and writes nothing.  Without it, or on a database
 * still at 1.3 or older, last_used_at is written in the caller's transaction
 * as before: at most once per iapi_tokens.last_used_interval, never in a
 * read-only transaction or on a standby, and never after waiting for a lock.
 * Only a cancel or shutdown (class 57) escapes that write.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/detoast.h"
#include "access/genam.h"
#include "access/relation.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "common/int.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "compat.h"
#include "iapi_tokens.h"
#include "rate_limit.h"
#include "usage.h"

/* What a lookup needs to know about iapi_tokens.tokens, per backend. */
typedef struct TokensRelCache
{
	bool		valid;
	Oid			relid;
	Oid			hash_index;
	AttrNumber	att_id;
	AttrNumber	att_source_id;
	AttrNumber	att_created_at;
	AttrNumber	att_expires_at;
	AttrNumber	att_last_used_at;
	AttrNumber	att_revoked_at;
	/* 1.1 columns: InvalidAttrNumber on a 1.0 table */
	AttrNumber	att_owner_role;
	AttrNumber	att_token_uuid;
	/* 1.4: InvalidAttrNumber before */
	AttrNumber	att_use_count;
	AttrNumber	att_scopes;
	AttrNumber	att_metadata;
	/* 1.5 */
	AttrNumber	att_rate_limit;
	AttrNumber	att_rate_window;
} TokensRelCache;

typedef struct TokenRow
{
	Oid			relid;
	Oid			owner;
	int64		id;
	int64		source_id;
	Oid			owner_role;
	Datum		token_uuid;
	TimestampTz created_at;
	TimestampTz expires_at;
	TimestampTz last_used_at;
	Datum		scopes;			/* detoasted copies: they outlive the scan */
	Datum		metadata;
	bool		scopes_null;
	bool		metadata_null;
	bool		expires_null;
	bool		last_used_null;
	bool		source_null;
	bool		owner_null;
	bool		uuid_null;
	bool		revoked;
	bool		has_use_count;	/* the table is 1.4's or newer */
	bool		rate_null;		/* no rate limit */
	int32		rate_limit;
	Datum		rate_window;	/* a copy, for check_token's result */
	int64		rate_window_us;
} TokenRow;

/*
 * Each recorded use costs a subtransaction with its own XID.  More than
 * PGPROC_MAX_CACHED_SUBXIDS (64) of them in one transaction would overflow
 * its subxid cache and slow every snapshot in the cluster, so a transaction
 * records at most this many uses and leaves the rest for later.
 */
#define MAX_RECORDED_USES_PER_XACT	32

static TokensRelCache rel_cache;
static bool callback_registered = false;
static SPIPlanPtr record_use_plan = NULL;
static SPIPlanPtr record_use_1_3_plan = NULL;
static bool warned_not_preloaded = false;
static bool warned_rate_not_preloaded = false;
static Oid	record_use_argtypes[3] = {INT8OID, TIMESTAMPTZOID, TIMESTAMPTZOID};
static LocalTransactionId uses_lxid = InvalidLocalTransactionId;
static int	uses_in_xact = 0;

/*
 * Row-locks with SKIP LOCKED, so a verification never waits behind a revoke
 * or another verification; operators are qualified because this runs as the
 * table owner under the caller's search_path.
 */
#define RECORD_USE_WHERE \
" WHERE id OPERATOR(pg_catalog.=) (" \
"  SELECT id FROM iapi_tokens.tokens" \
"   WHERE id OPERATOR(pg_catalog.=) $1" \
"     AND (last_used_at IS NULL OR last_used_at OPERATOR(pg_catalog.<=) $3)" \
"   FOR NO KEY UPDATE SKIP LOCKED)"

static const char record_use_sql[] =
"UPDATE iapi_tokens.tokens"
"   SET last_used_at = $2, use_count = use_count OPERATOR(pg_catalog.+) 1"
RECORD_USE_WHERE;

/* A table of 1.3 or older has no use_count. */
static const char record_use_1_3_sql[] =
"UPDATE iapi_tokens.tokens SET last_used_at = $2"
RECORD_USE_WHERE;

static void
invalidate_rel_cache(Datum arg pg_attribute_unused(), Oid relid)
{
	if (relid == InvalidOid || relid == rel_cache.relid ||
		relid == rel_cache.hash_index)
		rel_cache.valid = false;
}

static AttrNumber
column_number(Oid relid, const char *name, bool *ok)
{
	AttrNumber	attnum = get_attnum(relid, name);

	if (attnum == InvalidAttrNumber)
		*ok = false;
	return attnum;
}

/* False when the extension's table is not there (never an error). */
static bool
load_rel_cache(void)
{
	Oid			nsp;
	bool		ok = true;

	if (rel_cache.valid)
		return true;
	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(invalidate_rel_cache, (Datum) 0);
		callback_registered = true;
	}

	/*
	 * Valid first: the lookups below may process invalidations, and one that
	 * arrives meanwhile must leave the cache invalid for the next call.
	 */
	rel_cache.valid = true;
	nsp = get_namespace_oid("iapi_tokens", true);
	if (!OidIsValid(nsp))
	{
		rel_cache.valid = false;
		return false;
	}
	rel_cache.relid = get_relname_relid("tokens", nsp);
	rel_cache.hash_index = get_relname_relid("tokens_token_hash_key", nsp);
	if (!OidIsValid(rel_cache.relid) || !OidIsValid(rel_cache.hash_index))
	{
		rel_cache.valid = false;
		return false;
	}

	rel_cache.att_id = column_number(rel_cache.relid, "id", &ok);
	rel_cache.att_source_id = column_number(rel_cache.relid, "source_id", &ok);
	rel_cache.att_created_at = column_number(rel_cache.relid, "created_at", &ok);
	rel_cache.att_expires_at = column_number(rel_cache.relid, "expires_at", &ok);
	rel_cache.att_last_used_at = column_number(rel_cache.relid, "last_used_at", &ok);
	rel_cache.att_revoked_at = column_number(rel_cache.relid, "revoked_at", &ok);
	rel_cache.att_owner_role = get_attnum(rel_cache.relid, "owner_role");
	rel_cache.att_token_uuid = get_attnum(rel_cache.relid, "token_uuid");
	rel_cache.att_use_count = get_attnum(rel_cache.relid, "use_count");
	rel_cache.att_scopes = get_attnum(rel_cache.relid, "scopes");
	rel_cache.att_metadata = get_attnum(rel_cache.relid, "metadata");
	rel_cache.att_rate_limit = get_attnum(rel_cache.relid, "rate_limit");
	rel_cache.att_rate_window = get_attnum(rel_cache.relid, "rate_window");
	if (!ok)
		rel_cache.valid = false;
	return ok;
}

/*
 * Opens the table and its hash index under AccessShareLock.  Locking
 * processes invalidations (after an ANALYZE, a GRANT, a REINDEX ...), so the
 * cache is reloaded under the lock and the open retried if it went stale.
 */
static bool
open_tokens(Relation *rel, Relation *index)
{
	for (int attempt = 0; attempt < 3; attempt++)
	{
		Oid			relid;

		if (!load_rel_cache())
			return false;
		relid = rel_cache.relid;
		*rel = try_relation_open(relid, AccessShareLock);
		if (*rel == NULL)
		{
			rel_cache.valid = false;
			continue;
		}
		if (!load_rel_cache() || rel_cache.relid != relid)
		{
			relation_close(*rel, AccessShareLock);
			continue;
		}
		/* The index name follows REINDEX CONCURRENTLY; its old OID may not. */
		*index = try_relation_open(rel_cache.hash_index, AccessShareLock);
		if (*index == NULL || (*index)->rd_rel->relkind != RELKIND_INDEX)
		{
			if (*index != NULL)
				relation_close(*index, AccessShareLock);
			relation_close(*rel, AccessShareLock);
			rel_cache.valid = false;
			continue;
		}
		return true;
	}
	return false;
}

/* A varlena column of the slot, detoasted into the current context. */
static Datum
detoasted_copy(TupleTableSlot *slot, AttrNumber attnum, bool *isnull)
{
	Datum		value = slot_getattr(slot, attnum, isnull);

	if (*isnull)
		return (Datum) 0;
	return PointerGetDatum(PG_DETOAST_DATUM_COPY(value));
}

/*
 * The row's rate limit, if it has one.  The table's CHECK keeps the window
 * within 1 second and 1 day; a month counts 30 days, as interval
 * comparison does.
 */
static void
read_rate_limit(TupleTableSlot *slot, TokenRow *row)
{
	bool		limit_null;
	bool		window_null;
	Datum		limit = slot_getattr(slot, rel_cache.att_rate_limit, &limit_null);
	Datum		window = slot_getattr(slot, rel_cache.att_rate_window, &window_null);
	Interval   *interval;
	int64		usecs;

	if (limit_null || window_null)
		return;
	interval = DatumGetIntervalP(window);
	/* As interval comparison counts it; a sum out of range is clamped below. */
	if (pg_mul_s64_overflow((int64) interval->month * DAYS_PER_MONTH + interval->day,
							USECS_PER_DAY, &usecs) ||
		pg_add_s64_overflow(usecs, interval->time, &usecs))
		usecs = IAPI_RATE_WINDOW_MAX_USECS;
	row->rate_limit = DatumGetInt32(limit);
	row->rate_window_us = Min(Max(usecs, IAPI_RATE_WINDOW_MIN_USECS),
							  IAPI_RATE_WINDOW_MAX_USECS);
	row->rate_window = datumCopy(window, false, sizeof(Interval));
	row->rate_null = false;
}

/* One probe of the unique hash index, under the statement's snapshot. */
static bool
find_token(Datum hash, TokenRow *row)
{
	Relation	rel;
	Relation	index;
	IndexScanDesc scan;
	TupleTableSlot *slot;
	ScanKeyData key;
	Snapshot	snapshot;
	bool		found = false;
	bool		isnull;

	if (!open_tokens(&rel, &index))
		return false;

	snapshot = ActiveSnapshotSet() ? GetActiveSnapshot() : GetTransactionSnapshot();
	ScanKeyInit(&key, 1, BTEqualStrategyNumber, F_BYTEAEQ, hash);
	slot = table_slot_create(rel, NULL);
	scan = iapi_index_beginscan(rel, index, snapshot, 1, 0);
	index_rescan(scan, &key, 1, NULL, 0);

	if (index_getnext_slot(scan, ForwardScanDirection, slot))
	{
		found = true;
		row->relid = RelationGetRelid(rel);
		row->owner = rel->rd_rel->relowner;
		row->id = DatumGetInt64(slot_getattr(slot, rel_cache.att_id, &isnull));
		row->source_id = DatumGetInt64(slot_getattr(slot, rel_cache.att_source_id,
													&row->source_null));
		row->owner_null = row->uuid_null = true;
		if (rel_cache.att_owner_role != InvalidAttrNumber)
			row->owner_role = DatumGetObjectId(slot_getattr(slot, rel_cache.att_owner_role,
															&row->owner_null));
		/* uuid is by reference: copy it out of the slot. */
		if (rel_cache.att_token_uuid != InvalidAttrNumber)
		{
			Datum		uuid = slot_getattr(slot, rel_cache.att_token_uuid,
											&row->uuid_null);

			if (!row->uuid_null)
				row->token_uuid = datumCopy(uuid, false, UUID_LEN);
		}
		row->created_at = DatumGetTimestampTz(slot_getattr(slot, rel_cache.att_created_at,
														   &isnull));
		row->expires_at = DatumGetTimestampTz(slot_getattr(slot, rel_cache.att_expires_at,
														   &row->expires_null));
		row->last_used_at = DatumGetTimestampTz(slot_getattr(slot, rel_cache.att_last_used_at,
															 &row->last_used_null));
		(void) slot_getattr(slot, rel_cache.att_revoked_at, &isnull);
		row->revoked = !isnull;
		row->has_use_count = (rel_cache.att_use_count != InvalidAttrNumber);
		row->scopes_null = row->metadata_null = true;
		if (rel_cache.att_scopes != InvalidAttrNumber)
			row->scopes = detoasted_copy(slot, rel_cache.att_scopes, &row->scopes_null);
		if (rel_cache.att_metadata != InvalidAttrNumber)
			row->metadata = detoasted_copy(slot, rel_cache.att_metadata, &row->metadata_null);
		row->rate_null = true;
		if (rel_cache.att_rate_limit != InvalidAttrNumber &&
			rel_cache.att_rate_window != InvalidAttrNumber)
			read_rate_limit(slot, row);
	}

	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	relation_close(index, AccessShareLock);
	relation_close(rel, AccessShareLock);
	return found;
}

/* due_before: a last use at or before it is old enough to record anew. */
static bool
use_is_due(const TokenRow *row, TimestampTz due_before)
{
	if (iapi_last_used_interval < 0)
		return false;
	if (XactReadOnly || RecoveryInProgress() || IsInParallelMode())
		return false;
	if (!row->last_used_null && row->last_used_at > due_before)
		return false;
	if (uses_lxid != IAPI_MY_LXID)
	{
		uses_lxid = IAPI_MY_LXID;
		uses_in_xact = 0;
	}
	return uses_in_xact < MAX_RECORDED_USES_PER_XACT;
}

/*
 * A cancel, a timeout or a shutdown (class 57) is the user's or the
 * administrator's decision and must reach the caller; anything else, a full
 * disk included, only costs the last_used_at write.
 */
static bool
must_propagate(int sqlerrcode)
{
	return strncmp(unpack_sql_state(sqlerrcode), "57", 2) == 0;
}

/* Returns true when last_used_at was written. */
static bool
record_use(const TokenRow *row, TimestampTz now, TimestampTz due_before)
{
	MemoryContext caller_context = CurrentMemoryContext;
	ResourceOwner caller_owner = CurrentResourceOwner;
	Oid			save_userid;
	int			save_sec_context;
	volatile bool written = false;

	/* The UPDATE would wait behind CREATE INDEX, VACUUM FULL and the like. */
	if (!ConditionalLockRelationOid(row->relid, RowExclusiveLock))
		return false;
	uses_in_xact++;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(caller_context);

	PG_TRY();
	{
		Datum		args[3];
		SPIPlanPtr	plan;
		int			ret;

		/* As the table owner, like a RI trigger; the subxact restores us. */
		GetUserIdAndSecContext(&save_userid, &save_sec_context);
		SetUserIdAndSecContext(row->owner,
							   save_sec_context | SECURITY_LOCAL_USERID_CHANGE |
							   SECURITY_RESTRICTED_OPERATION);

		args[0] = Int64GetDatum(row->id);
		args[1] = TimestampTzGetDatum(now);
		args[2] = TimestampTzGetDatum(due_before);
		SPI_connect();
		if (row->has_use_count)
			plan = iapi_saved_plan(&record_use_plan, record_use_sql, 3,
								   record_use_argtypes, "the last_used_at update");
		else
			plan = iapi_saved_plan(&record_use_1_3_plan, record_use_1_3_sql, 3,
								   record_use_argtypes, "the 1.3 last_used_at update");
		ret = SPI_execute_plan(plan, args, NULL, false, 0);
		written = (ret == SPI_OK_UPDATE && SPI_processed == 1);
		SPI_finish();

		SetUserIdAndSecContext(save_userid, save_sec_context);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(caller_context);
		CurrentResourceOwner = caller_owner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(caller_context);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(caller_context);
		CurrentResourceOwner = caller_owner;

		if (must_propagate(edata->sqlerrcode))
			ReThrowError(edata);
		/* The message names the token id, never the token. */
		ereport(DEBUG1,
				(errmsg_internal("iapi_tokens: last use of token " INT64_FORMAT " not recorded: %s",
								 row->id, edata->message)));
		FreeErrorData(edata);
	}
	PG_END_TRY();

	return written;
}

/*
 * Whether a valid token's limit admits this verification.  Without shared
 * memory a limited token is refused: a limit that cannot be counted is not
 * waived.
 */
static bool
rate_admits(const TokenRow *row, RateOutcome *rate)
{
	if (iapi_rate_limit_available())
		return iapi_rate_limit_admit(row->relid, row->id, row->rate_limit,
									 row->rate_window_us, rate);
	rate->known = false;
	if (!warned_rate_not_preloaded)
	{
		warned_rate_not_preloaded = true;
		ereport(WARNING,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("iapi_tokens is not in shared_preload_libraries: tokens with a rate limit are refused"),
				 errhint("Add iapi_tokens to shared_preload_libraries and restart the server.")));
	}
	return false;
}

/*
 * The valid, active token's row, IAPI_TOKEN_VALID; or IAPI_TOKEN_RATE_LIMITED
 * with the row and *rate; or IAPI_TOKEN_INVALID.  A personal token whose
 * owner role was dropped is not valid: nobody is left for it to
 * authenticate.  A refused verification is not a use.
 */
static IapiTokenStatus
verify(FunctionCallInfo fcinfo, TokenRow *row, RateOutcome *rate)
{
	text	   *token;
	TokenHash	hash;
	TimestampTz now;
	TimestampTz due_before;

	rate->known = false;
	if (PG_ARGISNULL(0))
		return IAPI_TOKEN_INVALID;
	/* Size first, so a huge or toasted value is never detoasted. */
	if (toast_raw_datum_size(PG_GETARG_DATUM(0)) > VARHDRSZ + IAPI_TOKEN_MAX)
		return IAPI_TOKEN_INVALID;
	token = PG_GETARG_TEXT_PP(0);
	if (!iapi_token_is_well_formed(VARDATA_ANY(token), VARSIZE_ANY_EXHDR(token)))
		return IAPI_TOKEN_INVALID;

	if (!find_token(iapi_token_hash(VARDATA_ANY(token), VARSIZE_ANY_EXHDR(token),
									&hash), row))
		return IAPI_TOKEN_INVALID;

	now = GetCurrentTimestamp();
	if (row->revoked || (!row->expires_null && row->expires_at <= now))
		return IAPI_TOKEN_INVALID;
	if (!row->owner_null &&
		!SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(row->owner_role)))
		return IAPI_TOKEN_INVALID;
	if (!row->rate_null && !rate_admits(row, rate))
		return IAPI_TOKEN_RATE_LIMITED;

	if (row->has_use_count)
	{
		if (iapi_usage_available())
		{
			iapi_usage_record(row->relid, row->id, now);
			return IAPI_TOKEN_VALID;
		}
		if (!warned_not_preloaded)
		{
			warned_not_preloaded = true;
			ereport(WARNING,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("iapi_tokens is not in shared_preload_libraries"),
					 errdetail("Token use is written in the verifying transaction, at most once per iapi_tokens.last_used_interval, and not in read-only transactions or on standbys."),
					 errhint("Add iapi_tokens to shared_preload_libraries and restart the server.")));
		}
	}

	due_before = now - (int64) iapi_last_used_interval * USECS_PER_SEC;
	if (use_is_due(row, due_before) && record_use(row, now, due_before))
	{
		row->last_used_at = now;
		row->last_used_null = false;
	}
	return IAPI_TOKEN_VALID;
}

/* The five columns both versions of verify_token return first. */
static void
fill_1_0_columns(const TokenRow *row, Datum *values, bool *nulls)
{
	values[0] = Int64GetDatum(row->id);
	nulls[0] = false;
	values[1] = Int64GetDatum(row->source_id);
	nulls[1] = row->source_null;
	values[2] = TimestampTzGetDatum(row->created_at);
	nulls[2] = false;
	values[3] = TimestampTzGetDatum(row->expires_at);
	nulls[3] = row->expires_null;
	values[4] = TimestampTzGetDatum(row->last_used_at);
	nulls[4] = row->last_used_null;
}

/* The columns of verify_token after the first five. */
static void
fill_verify_columns(const TokenRow *row, Datum *values, bool *nulls, int ncolumns)
{
	fill_1_0_columns(row, values, nulls);
	values[5] = ObjectIdGetDatum(row->owner_role);
	nulls[5] = row->owner_null;
	values[6] = row->token_uuid;
	nulls[6] = row->uuid_null;
	if (ncolumns == IAPI_VERIFY_COLUMNS)
	{
		values[7] = row->scopes;
		nulls[7] = row->scopes_null;
		values[8] = row->metadata;
		nulls[8] = row->metadata_null;
	}
}

/* The types of verify_token's columns; check_token's follow its status. */
static const Oid verify_column_types[IAPI_VERIFY_COLUMNS] = {
	INT8OID, INT8OID, TIMESTAMPTZOID, TIMESTAMPTZOID, TIMESTAMPTZOID,
	REGROLEOID, UUIDOID, TEXTARRAYOID, JSONBOID
};

static const Oid check_status_type[] = {TEXTOID};

static const Oid check_rate_column_types[] = {
	INT4OID, INTERVALOID, INT4OID, INT4OID, INT4OID
};

StaticAssertDecl(lengthof(check_status_type) + IAPI_VERIFY_COLUMNS +
				 lengthof(check_rate_column_types) == IAPI_CHECK_COLUMNS,
				 "check_token's columns are its status, verify_token's and its rate");

/*
 * From 1.6 the result is a composite type, which ALTER TYPE could change
 * apart from the C that fills it: the columns' types are checked, not only
 * their number.  A dropped column has none, and fails too.
 */
static void
check_column_types(TupleDesc desc, int first, const Oid *types, int n,
				   const char *function)
{
	for (int i = 0; i < n; i++)
	{
		Oid			declared = TupleDescAttr(desc, first + i)->atttypid;

		if (declared != types[i])
			elog(ERROR, "%s is declared with column %d of type %s, not %s",
				 function, first + i + 1,
				 OidIsValid(declared) ? format_type_be(declared) : "(dropped)",
				 format_type_be(types[i]));
	}
}

/*
 * Verifies argument 0 and fills the columns of verify_token: seven as 1.1
 * to 1.3 declare it, nine (scopes, metadata) from 1.4; false, with nothing
 * filled, for anything but a valid, active token.
 */
bool
iapi_verify_token_columns(FunctionCallInfo fcinfo, TupleDesc desc,
						  Datum *values, bool *nulls)
{
	TokenRow	row;
	RateOutcome rate;

	if (desc->natts != IAPI_VERIFY_COLUMNS_1_1 && desc->natts != IAPI_VERIFY_COLUMNS)
		elog(ERROR, "verify_token is declared with %d columns", desc->natts);
	check_column_types(desc, 0, verify_column_types, desc->natts, "verify_token");
	if (verify(fcinfo, &row, &rate) != IAPI_TOKEN_VALID)
		return false;
	fill_verify_columns(&row, values, nulls, desc->natts);
	return true;
}

PG_FUNCTION_INFO_V1(iapi_tokens_verify_token_1_1);

/* SQL: iapi_tokens.verify_token(text) RETURNS SETOF iapi_tokens.verified_token (1.1-1.5: TABLE of 7 or 9 columns) */
Datum
iapi_tokens_verify_token_1_1(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Datum		values[IAPI_VERIFY_COLUMNS];
	bool		nulls[IAPI_VERIFY_COLUMNS];

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	if (iapi_verify_token_columns(fcinfo, rsinfo->setDesc, values, nulls))
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(iapi_tokens_verify_token);

/*
 * SQL (1.0): iapi_tokens.verify_token(text) RETURNS TABLE (token_id, source_id, ...)
 * Kept so that a 1.0 installation keeps verifying until it is updated.
 */
Datum
iapi_tokens_verify_token(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	TokenRow	row;
	RateOutcome rate;
	Datum		values[5];
	bool		nulls[5];

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	if (verify(fcinfo, &row, &rate) != IAPI_TOKEN_VALID)
		return (Datum) 0;

	fill_1_0_columns(&row, values, nulls);
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	return (Datum) 0;
}

/* Whole seconds, rounded up: a client that waits this long is admitted. */
static int32
ceil_seconds(int64 ms)
{
	return (int32) ((Max(ms, 0) + 999) / 1000);
}

PG_FUNCTION_INFO_V1(iapi_tokens_check_token);

/*
 * SQL: iapi_tokens.check_token(text, boolean) RETURNS SETOF iapi_tokens.token_check (1.5: TABLE)
 *
 * One row whatever the input: status valid, invalid or rate_limited.  A
 * valid or rate-limited token also gives verify_token's columns and its
 * limit; remaining and reset_after describe its window, retry_after is set
 * only when it was refused.  With authenticate true, a valid token becomes
 * the current token, as authenticate() makes it, and anything else leaves
 * none.  Never raises an error for any input.
 */
Datum
iapi_tokens_check_token(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Datum		values[IAPI_CHECK_COLUMNS];
	bool		nulls[IAPI_CHECK_COLUMNS];
	TokenRow	row;
	RateOutcome rate;
	IapiTokenStatus status;
	bool		authenticate = !PG_ARGISNULL(1) && PG_GETARG_BOOL(1);

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	if (rsinfo->setDesc->natts != IAPI_CHECK_COLUMNS)
		elog(ERROR, "check_token is declared with %d columns", rsinfo->setDesc->natts);
	check_column_types(rsinfo->setDesc, 0, check_status_type, 1, "check_token");
	check_column_types(rsinfo->setDesc, 1, verify_column_types, IAPI_VERIFY_COLUMNS, "check_token");
	check_column_types(rsinfo->setDesc, 1 + IAPI_VERIFY_COLUMNS, check_rate_column_types,
					   lengthof(check_rate_column_types), "check_token");

	if (authenticate)
		iapi_forget_current_token();
	status = verify(fcinfo, &row, &rate);
	memset(nulls, true, sizeof(nulls));
	values[0] = CStringGetTextDatum(status == IAPI_TOKEN_VALID ? "valid" :
									status == IAPI_TOKEN_RATE_LIMITED ? "rate_limited" :
									"invalid");
	nulls[0] = false;
	if (status != IAPI_TOKEN_INVALID)
	{
		fill_verify_columns(&row, values + 1, nulls + 1, IAPI_VERIFY_COLUMNS);
		if (authenticate && status == IAPI_TOKEN_VALID)
		{
			/* The current token is verify_token's nine columns, after status. */
			TupleDesc	token_desc = CreateTemplateTupleDesc(IAPI_VERIFY_COLUMNS);

			for (int i = 1; i <= IAPI_VERIFY_COLUMNS; i++)
				TupleDescCopyEntry(token_desc, i, rsinfo->setDesc, i + 1);
			(void) iapi_set_current_token(token_desc, values + 1, nulls + 1);
			FreeTupleDesc(token_desc);
		}
		if (!row.rate_null)
		{
			values[10] = Int32GetDatum(row.rate_limit);
			values[11] = row.rate_window;
			nulls[10] = nulls[11] = false;
		}
		if (rate.known)
		{
			values[12] = Int32GetDatum(rate.remaining);
			values[13] = Int32GetDatum(ceil_seconds(rate.reset_ms));
			nulls[12] = nulls[13] = false;
			if (status == IAPI_TOKEN_RATE_LIMITED)
			{
				values[14] = values[13];
				nulls[14] = false;
			}
		}
	}
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	return (Datum) 0;
}
