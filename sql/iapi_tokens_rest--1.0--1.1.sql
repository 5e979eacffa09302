-- iapi_tokens_rest 1.0 -> 1.1.
--
-- A fresh CREATE EXTENSION runs sql/iapi_tokens_rest.sql (1.1) alone;
-- sql/rest_catalog.sql checks that 1.0 updated by this script ends in the
-- same catalog.

\echo Use "ALTER EXTENSION iapi_tokens_rest UPDATE TO '1.1'" to load this file. \quit
