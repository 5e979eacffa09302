/*-------------------------------------------------------------------------
 *
 * compat.h
 *	  The differences between the PostgreSQL majors iapi_tokens supports
 *	  (15 to 18), in one place.
 *
 * Each macro takes the newest major's shape; older majors map onto it.
 *
 *-------------------------------------------------------------------------
 */
#ifndef IAPI_COMPAT_H
#define IAPI_COMPAT_H

#include "postgres.h"

#include "access/genam.h"
#include "storage/proc.h"

#if PG_VERSION_NUM < 150000
#error "iapi_tokens needs PostgreSQL 15 or newer"
#endif

/* 17 moved the local transaction id into PGPROC's vxid. */
#if PG_VERSION_NUM >= 170000
#define IAPI_MY_LXID		(MyProc->vxid.lxid)
#else
#define IAPI_MY_LXID		(MyProc->lxid)
#endif

/* 17 gave the process number a global of its own. */
#if PG_VERSION_NUM >= 170000
#define IAPI_MY_PROC_NUMBER	((int) MyProcNumber)
#else
#define IAPI_MY_PROC_NUMBER	(MyProc != NULL ? MyProc->pgprocno : -1)
#endif

/* 18 added an IndexScanInstrumentation argument; we collect none. */
#if PG_VERSION_NUM >= 180000
#define iapi_index_beginscan(heap, index, snapshot, nkeys, norderbys) \
	index_beginscan((heap), (index), (snapshot), NULL, (nkeys), (norderbys))
#else
#define iapi_index_beginscan(heap, index, snapshot, nkeys, norderbys) \
	index_beginscan((heap), (index), (snapshot), (nkeys), (norderbys))
#endif

#endif							/* IAPI_COMPAT_H */
