# iapi_tokens: PGXS build.
#
#   make && make install              build and install against $(PG_CONFIG)
#   make installcheck                 regression (sql/, expected/) and isolation
#                                     (test/specs/, test/expected/) suites, on a
#                                     server with shared_preload_libraries =
#                                     'iapi_tokens'
#   make installcheck-no-preload      the tests of a server without it
#   make prove_installcheck           TAP suite (test/t/), as a non-root user
#   make WERROR=1                     fail the build on any warning (CI does)

EXTENSION = iapi_tokens iapi_tokens_rest
MODULE_big = iapi_tokens
OBJS = \
	src/iapi_tokens.o \
	src/token_format.o \
	src/hash.o \
	src/mint.o \
	src/run_as_owner.o \
	src/source_tokens.o \
	src/access_tokens.o \
	src/saved_plan.o \
	src/verify.o \
	src/current_token.o \
	src/leaked.o \
	src/usage.o \
	src/usage_worker.o \
	src/rate_limit.o

# sql/iapi_tokens.sql and sql/iapi_tokens_rest.sql are the full install
# scripts of the current versions, installed under their versioned names:
# CREATE EXTENSION runs one script.  The update scripts serve ALTER
# EXTENSION ... UPDATE; the 1.0 scripts stay as released, for VERSION '1.0'
# and as the base of the oldest update paths.
default_version = $(shell sed -n "s/^default_version = '\(.*\)'/\1/p" $(or $(VPATH),.)/$(1).control)
EXTVERSION = $(call default_version,iapi_tokens)
REST_EXTVERSION = $(call default_version,iapi_tokens_rest)
DATA_built = sql/iapi_tokens--$(EXTVERSION).sql sql/iapi_tokens_rest--$(REST_EXTVERSION).sql
DATA = sql/iapi_tokens--1.0.sql sql/iapi_tokens--1.0--1.1.sql \
	sql/iapi_tokens--1.1--1.2.sql sql/iapi_tokens--1.2--1.3.sql \
	sql/iapi_tokens--1.3--1.4.sql sql/iapi_tokens--1.4--1.5.sql \
	sql/iapi_tokens--1.5--1.6.sql \
	sql/iapi_tokens_rest--1.0.sql sql/iapi_tokens_rest--1.0--1.1.sql \
	sql/iapi_tokens_rest--1.1--1.2.sql sql/iapi_tokens_rest--1.2--1.3.sql

# pg_regress reads sql/<test>.sql and expected/<test>.out from the top level;
# the install script sql/iapi_tokens--*.sql is never named as a test.
REGRESS = format lifecycle expiry errors guc_bounds privileges catalog \
	access_tokens owner_limits rotation purge_audit current_token bulk_load leaks \
	usage scopes rate_limit upgrade rest_catalog
REGRESS_OPTS = --inputdir=. --load-extension=pgcrypto

# pg_isolation_regress reads test/specs/<spec>.spec and test/expected/<spec>.out.
ISOLATION = cap_read_committed cap_repeatable_read cap_serializable \
	cap_direct_dml revoke_generate \
	verify_invalidation rotate_generate owner_limit lock_order \
	source_delete_generate leaked_rotate usage_revoke_read_committed \
	usage_revoke_repeatable_read usage_revoke_serializable scope_drop_generate
ISOLATION_OPTS = --inputdir=test --load-extension=iapi_tokens

# TAP tests start their own clusters, which PostgreSQL refuses to do as root,
# so they are a separate target rather than part of installcheck.
PROVE_TESTS = test/t/*.pl

# -isystem keeps -Wextra on our code but off PostgreSQL's own headers, some of
# which have unused parameters in inline functions.
PG_CPPFLAGS += -isystem $(shell $(PG_CONFIG) --includedir-server) -I$(libpq_srcdir)
# A hot standby's flush worker forwards token uses to the primary with libpq.
SHLIB_LINK_INTERNAL = $(libpq)
PG_CFLAGS += -Wall -Wextra -Wmissing-prototypes
ifdef WERROR
PG_CFLAGS += -Werror
endif

EXTRA_CLEAN = results regression.diffs regression.out output_iso output_iso_no_preload tmp_check \
	log

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

sql/iapi_tokens--$(EXTVERSION).sql: sql/iapi_tokens.sql
	cp $< $@

sql/iapi_tokens_rest--$(REST_EXTVERSION).sql: sql/iapi_tokens_rest.sql
	cp $< $@

# Out-of-tree builds (pg_buildext, VPATH=<source>) put the objects and the
# built install scripts in src/ and sql/ of their own build directory.
ifdef VPATH
$(shell mkdir -p src sql)
endif

# Tests of a server without shared_preload_libraries = 'iapi_tokens'; every
# other suite expects it preloaded.  test/run restarts its cluster for them.
REGRESS_NO_PRELOAD = last_used usage_fallback
ISOLATION_NO_PRELOAD = revoke_verify last_used_conflict

.PHONY: installcheck-no-preload
installcheck-no-preload:
ifdef REGRESS_NO_PRELOAD
	$(pg_regress_installcheck) $(REGRESS_OPTS) $(REGRESS_NO_PRELOAD)
endif
ifdef ISOLATION_NO_PRELOAD
	$(pg_isolation_regress_installcheck) --outputdir=output_iso_no_preload \
		$(ISOLATION_OPTS) $(ISOLATION_NO_PRELOAD)
endif

.PHONY: tapcheck
tapcheck:
	$(prove_installcheck)
