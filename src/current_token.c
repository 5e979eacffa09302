/*-------------------------------------------------------------------------
 *
 * current_token.c
 *	  authenticate() and current_token(): who the request's token belongs to.
 *
 * authenticate() verifies a token exactly as verify_token() does and, when
 * it is valid, remembers its row until the transaction ends.  Only this
 * function can set it, so unlike a setting a caller cannot forge it; RLS
 * policies and functions read it with current_token().  Keeping it for one
 * transaction matches PostgREST, which runs each request in its own
 * transaction on pooled connections: nothing carries over to the next one.
 * Within a transaction it follows subtransactions: a rolled-back savepoint
 * takes back the authentication made inside it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"

#include "access/xact.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/memutils.h"

#include "iapi_tokens.h"

/* The authenticated row, in TopTransactionContext, freed with it. */
static bool current_valid = false;
static SubTransactionId current_subid = InvalidSubTransactionId;
static HeapTuple current_tuple = NULL;

static void
forget_current_token(XactEvent event, void *arg pg_attribute_unused())
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			current_valid = false;
			break;
		default:
			break;
	}
}

/*
 * A token authenticated in a subtransaction that rolls back is forgotten,
 * as everything else it did is; one that commits passes to the parent.  A
 * token forgotten inside a rolled-back subtransaction stays forgotten: the
 * safe way to be wrong.
 */
static void
forget_current_token_sub(SubXactEvent event, SubTransactionId mySubid,
						 SubTransactionId parentSubid,
						 void *arg pg_attribute_unused())
{
	if (!current_valid || current_subid != mySubid)
		return;
	if (event == SUBXACT_EVENT_COMMIT_SUB)
		current_subid = parentSubid;
	else if (event == SUBXACT_EVENT_ABORT_SUB)
		current_valid = false;
}

void
iapi_current_token_init(void)
{
	RegisterXactCallback(forget_current_token, NULL);
	RegisterSubXactCallback(forget_current_token_sub, NULL);
}

/* A failed attempt leaves nobody authenticated, not the previous token. */
void
iapi_forget_current_token(void)
{
	current_valid = false;
}

/*
 * Makes the token whose verify_token columns desc describes the current
 * token, and returns its tuple (which lives as long as the transaction).
 */
HeapTuple
iapi_set_current_token(TupleDesc desc, Datum *values, bool *nulls)
{
	MemoryContext oldcontext = MemoryContextSwitchTo(TopTransactionContext);

	current_tuple = heap_form_tuple(desc, values, nulls);
	MemoryContextSwitchTo(oldcontext);
	current_subid = GetCurrentSubTransactionId();
	current_valid = true;
	return current_tuple;
}

PG_FUNCTION_INFO_V1(iapi_tokens_authenticate);

/* SQL: iapi_tokens.authenticate(text) RETURNS SETOF iapi_tokens.verified_token (1.1-1.5: TABLE of 7 or 9 columns) */
Datum
iapi_tokens_authenticate(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Datum		values[IAPI_VERIFY_COLUMNS];
	bool		nulls[IAPI_VERIFY_COLUMNS];

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);

	iapi_forget_current_token();
	if (PG_ARGISNULL(0) ||
		!iapi_verify_token_columns(fcinfo, rsinfo->setDesc, values, nulls))
		return (Datum) 0;

	tuplestore_puttuple(rsinfo->setResult,
						iapi_set_current_token(rsinfo->setDesc, values, nulls));
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(iapi_tokens_current_token);

/* SQL: iapi_tokens.current_token() RETURNS TABLE (token_id, ..., access_token_id[, scopes, metadata]) */
Datum
iapi_tokens_current_token(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	/* Both return iapi_tokens.verified_token, or before 1.3 its columns. */
	if (current_valid)
		tuplestore_puttuple(rsinfo->setResult, current_tuple);
	return (Datum) 0;
}
