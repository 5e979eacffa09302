/*-------------------------------------------------------------------------
 *
 * run_as_owner.c
 *	  Run one of the extension's fixed statements as its tables' owner.
 *
 * The personal-token functions are SECURITY INVOKER C functions: at entry
 * GetUserId() is the role that called them, exactly as the caller sees it
 * (the owner of a SECURITY DEFINER wrapper, for instance).  They pass that
 * role as an argument to an owner-only SQL function and run it as the
 * owner, the way PostgreSQL runs RI triggers.  SQL cannot forge the role:
 * it never comes from an argument the caller controls.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"

#include "iapi_tokens.h"

static Oid
tables_owner(void)
{
	Oid			nsp = get_namespace_oid("iapi_tokens", true);
	Oid			relid = OidIsValid(nsp) ? get_relname_relid("tokens", nsp) : InvalidOid;
	HeapTuple	tuple;
	Oid			owner;

	tuple = OidIsValid(relid) ?
		SearchSysCache1(RELOID, ObjectIdGetDatum(relid)) : NULL;
	if (!HeapTupleIsValid(tuple))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("table iapi_tokens.tokens does not exist"),
				 errhint("Is the iapi_tokens extension installed in this database?")));
	owner = ((Form_pg_class) GETSTRUCT(tuple))->relowner;
	ReleaseSysCache(tuple);
	return owner;
}

/* Which generation of the extension's SQL is installed in this database. */
IapiSchemaVersion
iapi_schema_version(void)
{
	Oid			nsp;

	if (!OidIsValid(get_namespace_oid("iapi_tokens_internal", true)))
		return IAPI_SCHEMA_1_2;
	nsp = get_namespace_oid("iapi_tokens", true);
	if (!OidIsValid(nsp) || !OidIsValid(get_relname_relid("scopes", nsp)))
		return IAPI_SCHEMA_1_3;
	if (get_attnum(get_relname_relid("tokens", nsp), "rate_limit") == InvalidAttrNumber)
		return IAPI_SCHEMA_1_4;
	return IAPI_SCHEMA_1_5;
}

/* The plan of stmt for the installed version of the extension. */
static SPIPlanPtr
owner_statement_plan(OwnerStatement *stmt)
{
	IapiSchemaVersion version = iapi_schema_version();
	const char *sql = stmt->sql;
	int			nargs = stmt->nargs;

	if (version <= IAPI_SCHEMA_1_4 && stmt->sql_1_4 != NULL)
	{
		sql = stmt->sql_1_4;
		nargs = stmt->nargs_1_4;
	}
	if (version == IAPI_SCHEMA_1_2 || (version == IAPI_SCHEMA_1_3 && stmt->sql_1_3 != NULL))
	{
		sql = (version == IAPI_SCHEMA_1_3) ? stmt->sql_1_3 : stmt->sql_1_2;
		nargs = stmt->nargs_1_3 > 0 ? stmt->nargs_1_3 : stmt->nargs;
	}

	/* Only 1.3 declares the functions whose statements have no 1.2 form. */
	if (sql == NULL)
		elog(ERROR, "%s needs iapi_tokens 1.3 or later", stmt->what);

	return iapi_saved_plan(&stmt->plans[version], sql, nargs,
						   stmt->argtypes, stmt->what);
}

/*
 * Runs stmt with args as the tables' owner and returns the number of rows it
 * produced.  A set-returning caller gets those rows as its result, with the
 * minted token's plaintext inserted as column stmt->token_column.  A minted
 * token is wiped whatever happens.
 */
uint64
iapi_run_as_owner(FunctionCallInfo fcinfo, OwnerStatement *stmt,
				  Datum *args, const char *nulls, MintedToken *minted)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	/* Not rsinfo: a scalar function called in FROM gets one too. */
	bool		returns_set = fcinfo->flinfo->fn_retset;
	Oid			owner = tables_owner();
	Oid			save_userid;
	int			save_sec_context;
	uint64		rows = 0;

	if (returns_set)
		InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	PG_TRY();
	{
		TupleDesc	result_desc = returns_set ? rsinfo->setDesc : NULL;
		int			ret;

		/* An error is fine: aborting the (sub)transaction restores the user. */
		SetUserIdAndSecContext(owner,
							   save_sec_context | SECURITY_LOCAL_USERID_CHANGE |
							   SECURITY_RESTRICTED_OPERATION);
		/* Read by 1.1's and 1.2's audit trigger through iapi_tokens.minting(). */
		iapi_minting = (minted != NULL);

		SPI_connect();
		ret = SPI_execute_plan(owner_statement_plan(stmt), args, nulls, false, 0);
		if (ret < 0)
			elog(ERROR, "could not run %s: %s", stmt->what, SPI_result_code_string(ret));
		rows = SPI_processed;

		if (returns_set && SPI_tuptable != NULL)
		{
			TupleDesc	spi_desc = SPI_tuptable->tupdesc;
			int			natts = result_desc->natts;
			Datum	   *values = palloc(natts * sizeof(Datum));
			bool	   *isnull = palloc(natts * sizeof(bool));
			text	   *token = NULL;

			if (spi_desc->natts + (minted != NULL ? 1 : 0) != natts)
				elog(ERROR, "%s returned %d columns, %d were expected",
					 stmt->what, spi_desc->natts, natts - (minted != NULL ? 1 : 0));

			if (minted != NULL)
				token = cstring_to_text_with_len(minted->text, minted->len);
			for (uint64 row = 0; row < SPI_processed; row++)
			{
				int			from = 1;

				for (int col = 0; col < natts; col++)
				{
					if (minted != NULL && col == stmt->token_column)
					{
						values[col] = PointerGetDatum(token);
						isnull[col] = false;
					}
					else
						values[col] = SPI_getbinval(SPI_tuptable->vals[row],
													spi_desc, from++, &isnull[col]);
				}
				tuplestore_putvalues(rsinfo->setResult, result_desc, values, isnull);
			}
			/* The tuplestore holds the caller's copy; this one goes now. */
			if (token != NULL)
			{
				explicit_bzero(VARDATA(token), minted->len);
				pfree(token);
			}
		}
		SPI_finish();
		SetUserIdAndSecContext(save_userid, save_sec_context);
	}
	PG_FINALLY();
	{
		iapi_minting = false;
		if (minted != NULL)
			explicit_bzero(minted->text, sizeof(minted->text));
	}
	PG_END_TRY();

	return rows;
}
