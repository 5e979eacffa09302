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
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/datum.h"
#include "utils/memutils.h"
#include "utils/uuid.h"

#include "iapi_tokens.h"

/* token_id, source_id, created_at, expires_at, last_used_at, owner, access_token_id */
static const int16 column_typlen[IAPI_VERIFY_COLUMNS] = {8, 8, 8, 8, 8, 4, UUID_LEN};
static const bool column_byval[IAPI_VERIFY_COLUMNS] = {
	FLOAT8PASSBYVAL, FLOAT8PASSBYVAL, FLOAT8PASSBYVAL, FLOAT8PASSBYVAL,
	FLOAT8PASSBYVAL, true, false
};

/* By-reference values live in TopTransactionContext, freed with it. */
static bool current_valid = false;
static Datum current_values[IAPI_VERIFY_COLUMNS];
static bool current_nulls[IAPI_VERIFY_COLUMNS];

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

void
iapi_current_token_init(void)
{
	RegisterXactCallback(forget_current_token, NULL);
}

PG_FUNCTION_INFO_V1(iapi_tokens_authenticate);

/* SQL: iapi_tokens.authenticate(text) RETURNS TABLE (token_id, ..., access_token_id) */
Datum
iapi_tokens_authenticate(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Datum		values[IAPI_VERIFY_COLUMNS];
	bool		nulls[IAPI_VERIFY_COLUMNS];
	MemoryContext oldcontext;

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);

	/* A failed attempt leaves nobody authenticated, not the previous token. */
	current_valid = false;
	if (PG_ARGISNULL(0) || !iapi_verify_token_columns(fcinfo, values, nulls))
		return (Datum) 0;

	oldcontext = MemoryContextSwitchTo(TopTransactionContext);
	for (int i = 0; i < IAPI_VERIFY_COLUMNS; i++)
	{
		current_nulls[i] = nulls[i];
		current_values[i] = nulls[i] ? (Datum) 0 :
			datumCopy(values[i], column_byval[i], column_typlen[i]);
	}
	MemoryContextSwitchTo(oldcontext);
	current_valid = true;

	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(iapi_tokens_current_token);

/* SQL: iapi_tokens.current_token() RETURNS TABLE (token_id, ..., access_token_id) */
Datum
iapi_tokens_current_token(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	if (current_valid)
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc,
							 current_values, current_nulls);
	return (Datum) 0;
}
