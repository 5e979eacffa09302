/*-------------------------------------------------------------------------
 *
 * usage_worker.c
 *	  Background workers that apply recorded token use.
 *
 * The launcher, a static worker connected to no database, wakes every
 * iapi_tokens.usage_flush_interval.  For each database with pending uses
 * it makes sure a flush worker connected to that database runs, and wakes
 * it early when the shared table is half full.
 *
 * A flush worker applies its database's uses in batches, one short
 * transaction each, through iapi_tokens.apply_usage(): on a primary with
 * SPI, on a hot standby over libpq to the same database on the primary
 * (iapi_tokens.usage_primary_conninfo), on a connection it keeps.  Only
 * what a batch applied is taken off the shared table, so a failure leaves
 * the uses to the next flush.  It flushes every interval while there is
 * something to flush, and exits after the first round that finds nothing,
 * so that an idle database has no worker connected (DROP DATABASE waits for
 * one interval at most).  An error ends it; the launcher starts another,
 * backing off after failures.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/namespace.h"
#include "catalog/pg_database.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "libpq-fe.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "iapi_tokens.h"
#include "usage.h"

/* At most this many tokens per transaction: short row locks, small WAL. */
#define USAGE_BATCH				1000
/* Databases flushed per launcher round; any others wait for the next. */
#define USAGE_MAX_DATABASES		64
/* How long a forwarding connection or batch may take. */
#define FORWARD_TIMEOUT_MS		30000
/* The longest wait between two flushes after failures. */
#define MAX_BACKOFF_MS			30000

int			iapi_usage_flush_interval = 1000;
char	   *iapi_usage_primary_conninfo = NULL;

PGDLLEXPORT void iapi_usage_launcher_main(Datum main_arg);
PGDLLEXPORT void iapi_usage_flush_main(Datum main_arg);

static const char apply_sql[] =
"SELECT applied_uses, skipped_token_ids"
"  FROM iapi_tokens.apply_usage($1::pg_catalog.int8[],"
"                               $2::pg_catalog.timestamptz[],"
"                               $3::pg_catalog.int8[])";

/* What the launcher and the flush workers have in common. */
static void
init_worker(BackgroundWorker *worker, const char *function, const char *type)
{
	memset(worker, 0, sizeof(*worker));
	worker->bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	/* Consistent state: a hot standby runs them too. */
	worker->bgw_start_time = BgWorkerStart_ConsistentState;
	snprintf(worker->bgw_library_name, BGW_MAXLEN, "%s", "iapi_tokens");
	snprintf(worker->bgw_function_name, BGW_MAXLEN, "%s", function);
	snprintf(worker->bgw_name, BGW_MAXLEN, "%s", type);
	snprintf(worker->bgw_type, BGW_MAXLEN, "%s", type);
}

/* The OID of this database's iapi_tokens.tokens, or InvalidOid. */
static Oid
tokens_table(void)
{
	return get_relname_relid("tokens", get_namespace_oid("iapi_tokens", true));
}

void
iapi_usage_register_launcher(void)
{
	BackgroundWorker worker;

	init_worker(&worker, "iapi_usage_launcher_main", "iapi_tokens usage launcher");
	worker.bgw_restart_time = 10;
	RegisterBackgroundWorker(&worker);
}

/* A database the flush worker can connect to. */
static bool
database_is_flushable(Oid dbid)
{
	HeapTuple	tuple;
	bool		ok = false;

	StartTransactionCommand();
	tuple = SearchSysCache1(DATABASEOID, ObjectIdGetDatum(dbid));
	if (HeapTupleIsValid(tuple))
	{
		ok = ((Form_pg_database) GETSTRUCT(tuple))->datallowconn;
		ReleaseSysCache(tuple);
	}
	CommitTransactionCommand();
	return ok;
}

/* The flush workers the launcher started, by database. */
typedef struct FlushWorker
{
	Oid			dbid;
	BackgroundWorkerHandle *handle;
} FlushWorker;

static FlushWorker flush_workers[USAGE_MAX_DATABASES];
static int	n_flush_workers = 0;

/* The database's flush worker, if one is starting or running. */
static FlushWorker *
running_flush_worker(Oid dbid, pid_t *pid)
{
	for (int i = 0; i < n_flush_workers; i++)
	{
		BgwHandleStatus status;

		if (flush_workers[i].dbid != dbid)
			continue;
		*pid = 0;
		status = GetBackgroundWorkerPid(flush_workers[i].handle, pid);
		if (status == BGWH_STARTED || status == BGWH_NOT_YET_STARTED)
			return &flush_workers[i];
		/* Gone: its slot is free again. */
		pfree(flush_workers[i].handle);
		flush_workers[i] = flush_workers[--n_flush_workers];
		return NULL;
	}
	return NULL;
}

static void
start_flush_worker(Oid dbid)
{
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;
	static bool warned = false;

	init_worker(&worker, "iapi_usage_flush_main", "iapi_tokens usage flush");
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker.bgw_name, BGW_MAXLEN, "iapi_tokens usage flush of database %u", dbid);
	worker.bgw_main_arg = ObjectIdGetDatum(dbid);
	worker.bgw_notify_pid = MyProcPid;

	if (!RegisterDynamicBackgroundWorker(&worker, &handle))
	{
		if (!warned)
			ereport(WARNING,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("iapi_tokens could not start a usage flush worker"),
					 errhint("Raise max_worker_processes; token uses wait in shared memory meanwhile.")));
		warned = true;
		return;
	}
	warned = false;
	if (n_flush_workers < USAGE_MAX_DATABASES)
	{
		flush_workers[n_flush_workers].dbid = dbid;
		flush_workers[n_flush_workers].handle = handle;
		n_flush_workers++;
	}
	else
		pfree(handle);
}

static void
flush_all_databases(bool early)
{
	Oid			dbids[USAGE_MAX_DATABASES];
	int			n = iapi_usage_databases(dbids, USAGE_MAX_DATABASES);

	for (int i = 0; i < n && !ShutdownRequestPending; i++)
	{
		pid_t		pid;

		if (running_flush_worker(dbids[i], &pid) != NULL)
		{
			/* SIGUSR1 sets a worker's latch: it flushes now. */
			if (early && pid != 0)
				kill(pid, SIGUSR1);
		}
		else if (database_is_flushable(dbids[i]))
			start_flush_worker(dbids[i]);
		else
		{
			int64		uses = iapi_usage_discard(dbids[i]);

			ereport(LOG,
					(errmsg("iapi_tokens discarded " INT64_FORMAT " token uses of database %u, which is gone or takes no connections",
							uses, dbids[i])));
		}
	}
}

static void
forget_launcher_latch(int code pg_attribute_unused(), Datum arg pg_attribute_unused())
{
	iapi_usage_set_launcher_latch(NULL);
}

void
iapi_usage_launcher_main(Datum main_arg pg_attribute_unused())
{
	TimestampTz last_round;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();
	/* No database: only the shared catalogs, to tell which databases exist. */
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);

	iapi_usage_set_launcher_latch(MyLatch);
	on_shmem_exit(forget_launcher_latch, (Datum) 0);
	last_round = GetCurrentTimestamp();

	while (!ShutdownRequestPending)
	{
		long		wait_ms;
		int			failures;
		long		interval;

		bool		early;

		/* Here, not only after a wait: rounds may follow without one. */
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		failures = iapi_usage_failures_in_a_row();
		interval = iapi_usage_flush_interval;

		/*
		 * After failures (the primary is down, say), wait twice as long each
		 * time, up to 32 intervals or the interval itself if longer than
		 * MAX_BACKOFF_MS, so that an outage does not fill the log.
		 */
		if (failures > 0)
			interval = Max(interval,
						   Min(interval << Min(failures, 5), MAX_BACKOFF_MS));
		wait_ms = interval -
			TimestampDifferenceMilliseconds(last_round, GetCurrentTimestamp());
		/* A full buffer flushes early, but not in a tight loop of failures. */
		early = (failures == 0 && iapi_usage_wakeup_requested());
		if (wait_ms > 0 && !early)
		{
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 wait_ms, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
			continue;
		}
		last_round = GetCurrentTimestamp();
		flush_all_databases(early);
	}
	proc_exit(0);
}

/* Forgets the uses of a database without the 1.4 extension. */
static bool
extension_can_apply(void)
{
	bool		ok;

	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	SPI_connect();
	ok = SPI_execute("SELECT pg_catalog.to_regprocedure("
					 "'iapi_tokens.apply_usage(bigint[],timestamptz[],bigint[])') IS NOT NULL",
					 true, 1) == SPI_OK_SELECT &&
		SPI_processed == 1 &&
		strcmp(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1), "t") == 0;
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	return ok;
}

/* Marks the items whose token id is in the text array "{1,2,3}". */
static void
mark_skipped(const char *ids, const UsageItem *items, int n, bool *skipped)
{
	const char *p = ids;

	while (*p != '\0')
	{
		char	   *end;
		int64		id;

		if (*p < '0' || *p > '9')
		{
			p++;
			continue;
		}
		id = strtoi64(p, &end, 10);
		for (int i = 0; i < n; i++)
			if (items[i].token_id == id)
				skipped[i] = true;
		p = end;
	}
}

/* Takes the applied items off the shared table; returns their uses. */
static int64
ack_applied(const UsageItem *items, int n, const bool *skipped)
{
	UsageItem  *applied = palloc(sizeof(UsageItem) * Max(n, 1));
	int			count = 0;
	int64		uses = 0;

	for (int i = 0; i < n; i++)
		if (!skipped[i])
		{
			applied[count++] = items[i];
			uses += items[i].uses;
		}
	iapi_usage_ack(MyDatabaseId, applied, count);
	pfree(applied);
	return uses;
}

/* One batch, in one transaction, through SPI. */
static void
apply_batch_locally(const UsageItem *items, int n)
{
	Datum	   *ids = palloc(sizeof(Datum) * n);
	Datum	   *times = palloc(sizeof(Datum) * n);
	Datum	   *counts = palloc(sizeof(Datum) * n);
	bool	   *skipped = palloc0(sizeof(bool) * n);
	Oid			argtypes[3] = {INT8ARRAYOID, TIMESTAMPTZARRAYOID, INT8ARRAYOID};
	Datum		args[3];
	char	   *skipped_ids;

	for (int i = 0; i < n; i++)
	{
		ids[i] = Int64GetDatum(items[i].token_id);
		times[i] = TimestampTzGetDatum(items[i].last_used);
		counts[i] = Int64GetDatum(items[i].uses);
	}

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	SPI_connect();
	pgstat_report_activity(STATE_RUNNING, "iapi_tokens usage flush");
	args[0] = PointerGetDatum(construct_array(ids, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	args[1] = PointerGetDatum(construct_array(times, n, TIMESTAMPTZOID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	args[2] = PointerGetDatum(construct_array(counts, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));

	/*
	 * Hold the table, then check it is still the one the uses were made on:
	 * a DROP EXTENSION committed meanwhile, and a new CREATE, would send
	 * them to new tokens with the same ids.  The lock keeps it so.
	 */
	if (SPI_execute("LOCK TABLE iapi_tokens.tokens IN ROW EXCLUSIVE MODE", false, 0) != SPI_OK_UTILITY)
		elog(ERROR, "could not lock iapi_tokens.tokens");
	if (tokens_table() != items[0].relid)
	{
		SPI_finish();
		PopActiveSnapshot();
		CommitTransactionCommand();
		iapi_usage_ack(MyDatabaseId, items, n);
		ereport(LOG,
				(errmsg("iapi_tokens discarded the uses of %d tokens of a dropped iapi_tokens.tokens table", n)));
		return;
	}
	if (SPI_execute_with_args(apply_sql, 3, argtypes, args, NULL, false, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "iapi_tokens.apply_usage returned no row");
	skipped_ids = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
	if (skipped_ids != NULL)
		mark_skipped(skipped_ids, items, n, skipped);
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);

	iapi_usage_report_flush(false, ack_applied(items, n, skipped), NULL);
}

/* Waits for the socket or the timeout; false on timeout. */
static bool
wait_for_socket(PGconn *conn, int events, TimestampTz deadline)
{
	long		remaining = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
	int			rc;

	if (remaining <= 0)
		return false;
	rc = WaitLatchOrSocket(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH | events,
						   PQsocket(conn), remaining, PG_WAIT_EXTENSION);
	if (rc & WL_LATCH_SET)
	{
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	return true;
}

static void
forward_error(PGconn *conn, const char *what)
{
	char	   *message = pstrdup(conn ? PQerrorMessage(conn) : "out of memory");
	char	   *newline = strchr(message, '\n');

	if (newline != NULL)
		*newline = '\0';
	ereport(ERROR,
			(errcode(ERRCODE_CONNECTION_FAILURE),
			 errmsg("iapi_tokens could not %s the primary: %s", what, message)));
}

/* A connection to this database on the primary, or an error. */
static PGconn *
connect_to_primary(const char *dbname, TimestampTz deadline)
{
	const char *keys[] = {"dbname", "dbname", "application_name", NULL};
	const char *values[] = {iapi_usage_primary_conninfo, dbname,
	"iapi_tokens usage forwarder", NULL};
	PGconn	   *conn;
	PostgresPollingStatusType status = PGRES_POLLING_WRITING;

	/* The first dbname may be a whole connection string; the second wins. */
	conn = PQconnectStartParams(keys, values, 1);
	if (conn == NULL || PQstatus(conn) == CONNECTION_BAD)
		forward_error(conn, "connect to");
	while (status != PGRES_POLLING_OK)
	{
		if (status == PGRES_POLLING_FAILED)
			forward_error(conn, "connect to");
		if (!wait_for_socket(conn, status == PGRES_POLLING_READING ?
							 WL_SOCKET_READABLE : WL_SOCKET_WRITEABLE, deadline))
		{
			PQfinish(conn);
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("iapi_tokens could not connect to the primary: timed out")));
		}
		status = PQconnectPoll(conn);
	}
	return conn;
}

/* Appends a timestamp as UTC ISO 8601, whatever this server's DateStyle. */
static void
append_utc(StringInfo buf, TimestampTz ts)
{
	struct pg_tm tm;
	fsec_t		fsec;

	if (timestamp2tm(ts, NULL, &tm, &fsec, NULL, NULL) != 0)
		elog(ERROR, "token use time out of range");
	appendStringInfo(buf, "\"%04d-%02d-%02d %02d:%02d:%02d.%06d+00\"",
					 tm.tm_year, tm.tm_mon, tm.tm_mday,
					 tm.tm_hour, tm.tm_min, tm.tm_sec, (int) fsec);
}

/* One batch, in one transaction on the primary. */
static void
forward_batch(PGconn *conn, const UsageItem *items, int n, TimestampTz deadline)
{
	StringInfoData ids;
	StringInfoData times;
	StringInfoData counts;
	const char *params[3];
	PGresult   *result;
	PGresult   *last = NULL;
	bool	   *skipped = palloc0(sizeof(bool) * n);

	initStringInfo(&ids);
	initStringInfo(&times);
	initStringInfo(&counts);
	for (int i = 0; i < n; i++)
	{
		const char *sep = (i == 0) ? "{" : ",";

		appendStringInfo(&ids, "%s" INT64_FORMAT, sep, items[i].token_id);
		appendStringInfoString(&times, sep);
		append_utc(&times, items[i].last_used);
		appendStringInfo(&counts, "%s" INT64_FORMAT, sep, items[i].uses);
	}
	appendStringInfoChar(&ids, '}');
	appendStringInfoChar(&times, '}');
	appendStringInfoChar(&counts, '}');
	params[0] = ids.data;
	params[1] = times.data;
	params[2] = counts.data;

	if (!PQsendQueryParams(conn, apply_sql, 3, NULL, params, NULL, NULL, 0))
		forward_error(conn, "send token uses to");
	for (;;)
	{
		if (!PQconsumeInput(conn))
			forward_error(conn, "read from");
		if (PQisBusy(conn))
		{
			if (!wait_for_socket(conn, WL_SOCKET_READABLE, deadline))
				ereport(ERROR,
						(errcode(ERRCODE_CONNECTION_FAILURE),
						 errmsg("iapi_tokens could not forward token uses: the primary did not answer in time")));
			continue;
		}
		result = PQgetResult(conn);
		if (result == NULL)
			break;
		if (last != NULL)
			PQclear(last);
		last = result;
	}
	if (last == NULL || PQresultStatus(last) != PGRES_TUPLES_OK || PQntuples(last) != 1)
	{
		char	   *message = pstrdup(last ? PQresultErrorMessage(last) : "no result");
		char	   *newline = strchr(message, '\n');

		if (newline != NULL)
			*newline = '\0';
		if (last != NULL)
			PQclear(last);
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("iapi_tokens could not forward token uses: %s", message)));
	}
	mark_skipped(PQgetvalue(last, 0, 1), items, n, skipped);
	PQclear(last);
	iapi_usage_report_flush(true, ack_applied(items, n, skipped), NULL);
}

/* The connection to the primary, kept from one flush to the next. */
static PGconn *primary_conn = NULL;

static void
forward_to_primary(const UsageItem *items, int n)
{
	char	   *dbname;
	TimestampTz deadline;

	if (iapi_usage_primary_conninfo == NULL || iapi_usage_primary_conninfo[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("iapi_tokens cannot forward token uses from this standby: iapi_tokens.usage_primary_conninfo is not set"),
				 errhint("Set it to a connection string of the primary, without dbname; the uses wait in shared memory meanwhile.")));

	PG_TRY();
	{
		if (primary_conn == NULL || PQstatus(primary_conn) != CONNECTION_OK)
		{
			if (primary_conn != NULL)
				PQfinish(primary_conn);
			primary_conn = NULL;
			StartTransactionCommand();
			dbname = pstrdup(get_database_name(MyDatabaseId));
			CommitTransactionCommand();
			deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), FORWARD_TIMEOUT_MS);
			primary_conn = connect_to_primary(dbname, deadline);
		}
		for (int from = 0; from < n; from += USAGE_BATCH)
		{
			deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), FORWARD_TIMEOUT_MS);
			forward_batch(primary_conn, items + from, Min(USAGE_BATCH, n - from), deadline);
		}
	}
	PG_CATCH();
	{
		/* A connection in an unknown state is never reused. */
		if (primary_conn != NULL)
			PQfinish(primary_conn);
		primary_conn = NULL;
		PG_RE_THROW();
	}
	PG_END_TRY();
}

/* One round: everything pending for this database.  False if nothing was. */
static bool
flush_once(Oid dbid, MemoryContext flush_context)
{
	UsageItem  *items;
	int			n;
	bool		standby;

	Oid			relid;
	int			stale = 0;
	int64		stale_uses = 0;

	MemoryContextReset(flush_context);
	MemoryContextSwitchTo(flush_context);
	items = iapi_usage_collect(dbid, &n);
	if (n == 0)
		return false;
	standby = RecoveryInProgress();

	/*
	 * Uses made on another tokens table (the extension was dropped, perhaps
	 * created again, since) belong to no token now: they go.
	 */
	StartTransactionCommand();
	relid = tokens_table();
	CommitTransactionCommand();
	MemoryContextSwitchTo(flush_context);
	for (int i = 0; i < n; i++)
	{
		if (items[i].relid == relid)
			continue;
		stale_uses += items[i].uses;
		iapi_usage_ack(dbid, &items[i], 1);
		items[i--] = items[--n];
		stale++;
	}
	if (stale > 0)
		ereport(LOG,
				(errmsg("iapi_tokens discarded " INT64_FORMAT " uses of %d tokens of a dropped iapi_tokens.tokens table",
						stale_uses, stale)));
	if (n == 0)
		return true;

	PG_TRY();
	{
		if (standby)
			forward_to_primary(items, n);
		else
			for (int from = 0; from < n; from += USAGE_BATCH)
			{
				apply_batch_locally(items + from, Min(USAGE_BATCH, n - from));
				MemoryContextSwitchTo(flush_context);
			}
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(flush_context);
		edata = CopyErrorData();
		/* The uses stay in shared memory for the next flush. */
		iapi_usage_report_flush(standby, 0, edata->message);
		PG_RE_THROW();
	}
	PG_END_TRY();
	return true;
}

void
iapi_usage_flush_main(Datum main_arg)
{
	Oid			dbid = DatumGetObjectId(main_arg);
	MemoryContext flush_context;

	pqsignal(SIGTERM, die);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(dbid, InvalidOid, 0);

	flush_context = AllocSetContextCreate(TopMemoryContext, "iapi_tokens usage flush",
										  ALLOCSET_DEFAULT_SIZES);
	MemoryContextSwitchTo(flush_context);

	if (!extension_can_apply())
	{
		int64		uses = iapi_usage_discard(dbid);

		ereport(LOG,
				(errmsg("iapi_tokens discarded " INT64_FORMAT " token uses of database %u, which has no iapi_tokens 1.4 or later",
						uses, dbid)));
		proc_exit(0);
	}

	/* Every interval while there is work; gone after a round without. */
	while (flush_once(dbid, flush_context))
	{
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 iapi_usage_flush_interval, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
	}
	if (primary_conn != NULL)
		PQfinish(primary_conn);
	proc_exit(0);
}
