-- Every setting's bounds and bad values: 22023, and the setting keeps its
-- value.  From PostgreSQL 17 on, a range error prints the unit with each
-- bound: guc_bounds_1.out is that major's expected output.
LOAD 'iapi_tokens';

-- iapi_tokens.token_prefix: 1 to 32 characters of [A-Za-z0-9_], ending in "_"
SET iapi_tokens.token_prefix = 'nounderscore';
\echo :LAST_ERROR_SQLSTATE
SET iapi_tokens.token_prefix = '';
\echo :LAST_ERROR_SQLSTATE
SET iapi_tokens.token_prefix = 'has-dash_';
\echo :LAST_ERROR_SQLSTATE
SET iapi_tokens.token_prefix = 'abcdefghijklmnopqrstuvwxyz01234__';
\echo :LAST_ERROR_SQLSTATE
SET iapi_tokens.token_prefix = 'abcdefghijklmnopqrstuvwxyz01234_';
SHOW iapi_tokens.token_prefix;
RESET iapi_tokens.token_prefix;
SHOW iapi_tokens.token_prefix;

-- iapi_tokens.last_used_interval: -1 (never record) to INT_MAX seconds
SET iapi_tokens.last_used_interval = -2;
\echo :LAST_ERROR_SQLSTATE
SET iapi_tokens.last_used_interval = 'soon';
\echo :LAST_ERROR_SQLSTATE
SET iapi_tokens.last_used_interval = -1;
SHOW iapi_tokens.last_used_interval;
SET iapi_tokens.last_used_interval = '2147483647s';
SHOW iapi_tokens.last_used_interval;
SET iapi_tokens.last_used_interval = '2147483648s';
\echo :LAST_ERROR_SQLSTATE
SHOW iapi_tokens.last_used_interval;
RESET iapi_tokens.last_used_interval;

-- iapi_tokens.max_lifetime: 0 (no limit) to INT_MAX seconds
SET iapi_tokens.max_lifetime = -1;
\echo :LAST_ERROR_SQLSTATE
SET iapi_tokens.max_lifetime = '1d';
SHOW iapi_tokens.max_lifetime;
SET iapi_tokens.max_lifetime = 0;
SHOW iapi_tokens.max_lifetime;
RESET iapi_tokens.max_lifetime;

-- iapi_tokens.max_tokens_per_owner: 0 (no limit) to INT_MAX, no unit
SET iapi_tokens.max_tokens_per_owner = -1;
\echo :LAST_ERROR_SQLSTATE
SET iapi_tokens.max_tokens_per_owner = '2 s';
\echo :LAST_ERROR_SQLSTATE
SET iapi_tokens.max_tokens_per_owner = 2147483647;
SHOW iapi_tokens.max_tokens_per_owner;
RESET iapi_tokens.max_tokens_per_owner;

-- The prefix is reserved: a misspelt setting is refused, not invented.
SET iapi_tokens.no_such_setting = 1;
\echo :LAST_ERROR_SQLSTATE

-- Only a superuser may change them.
CREATE ROLE regress_guc_user;
SET ROLE regress_guc_user;
SET iapi_tokens.max_lifetime = '1h';
\echo :LAST_ERROR_SQLSTATE
SET iapi_tokens.max_tokens_per_owner = 1;
\echo :LAST_ERROR_SQLSTATE
SET iapi_tokens.last_used_interval = 0;
\echo :LAST_ERROR_SQLSTATE
SET iapi_tokens.token_prefix = 'mine_';
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
DROP ROLE regress_guc_user;

-- iapi_tokens.usage_flush_interval: 10 ms to 1 h, set in the server's
-- configuration (SIGHUP), never by a session.
SELECT name, setting IS NOT NULL AS set, unit, min_val, max_val, boot_val, context
  FROM pg_settings WHERE name LIKE 'iapi_tokens.usage%' ORDER BY name;
SET iapi_tokens.usage_flush_interval = '1s';
\echo :LAST_ERROR_SQLSTATE
ALTER SYSTEM SET iapi_tokens.usage_flush_interval = '9ms';
\echo :LAST_ERROR_SQLSTATE
ALTER SYSTEM SET iapi_tokens.usage_flush_interval = '3601s';
\echo :LAST_ERROR_SQLSTATE
ALTER SYSTEM SET iapi_tokens.usage_flush_interval = 'often';
\echo :LAST_ERROR_SQLSTATE
ALTER SYSTEM SET iapi_tokens.usage_flush_interval = '1h';
ALTER SYSTEM RESET iapi_tokens.usage_flush_interval;

-- iapi_tokens.usage_buffer_size: 1024 to 67108864 tokens, at server start.
SET iapi_tokens.usage_buffer_size = 4096;
\echo :LAST_ERROR_SQLSTATE
ALTER SYSTEM SET iapi_tokens.usage_buffer_size = 1023;
\echo :LAST_ERROR_SQLSTATE
ALTER SYSTEM SET iapi_tokens.usage_buffer_size = 67108865;
\echo :LAST_ERROR_SQLSTATE
ALTER SYSTEM SET iapi_tokens.usage_buffer_size = 1024;
ALTER SYSTEM RESET iapi_tokens.usage_buffer_size;

-- iapi_tokens.rate_limit_max_tokens: 64 to 67108864 tokens, at server start.
SELECT name, setting, min_val, max_val, boot_val, context
  FROM pg_settings WHERE name = 'iapi_tokens.rate_limit_max_tokens';
SET iapi_tokens.rate_limit_max_tokens = 128;
\echo :LAST_ERROR_SQLSTATE
ALTER SYSTEM SET iapi_tokens.rate_limit_max_tokens = 63;
\echo :LAST_ERROR_SQLSTATE
ALTER SYSTEM SET iapi_tokens.rate_limit_max_tokens = 67108865;
\echo :LAST_ERROR_SQLSTATE
ALTER SYSTEM SET iapi_tokens.rate_limit_max_tokens = 64;
ALTER SYSTEM RESET iapi_tokens.rate_limit_max_tokens;

-- iapi_tokens.usage_primary_conninfo: set in the configuration only, and
-- hidden from other roles, as it may hold a password.
SET iapi_tokens.usage_primary_conninfo = 'host=elsewhere';
\echo :LAST_ERROR_SQLSTATE
SHOW iapi_tokens.usage_primary_conninfo;

CREATE ROLE regress_guc_reader;
SET ROLE regress_guc_reader;
SHOW iapi_tokens.usage_primary_conninfo;
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM pg_settings WHERE name = 'iapi_tokens.usage_primary_conninfo';
SELECT count(*) FROM pg_settings WHERE name = 'iapi_tokens.usage_flush_interval';
RESET ROLE;
DROP ROLE regress_guc_reader;
