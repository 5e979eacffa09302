/*-------------------------------------------------------------------------
 *
 * saved_plan.c
 *	  The extension's few SQL statements, prepared once per backend.
 *
 * Saved plans keep their parse trees, so they are re-planned by themselves
 * after DDL, or a DROP and CREATE EXTENSION, on the tables they touch.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "executor/spi.h"

#include "iapi_tokens.h"

/* The plan in *plan, preparing and keeping it first if need be; inside SPI. */
SPIPlanPtr
iapi_saved_plan(SPIPlanPtr *plan, const char *sql, int nargs, Oid *argtypes,
				const char *what)
{
	if (*plan == NULL)
	{
		SPIPlanPtr	prepared = SPI_prepare(sql, nargs, argtypes);

		if (prepared == NULL)
			elog(ERROR, "could not prepare %s: %s",
				 what, SPI_result_code_string(SPI_result));
		SPI_keepplan(prepared);
		*plan = prepared;
	}
	return *plan;
}
