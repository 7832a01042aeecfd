-- $1 table names: how many of them exist in the store's schema (the transaction's first
-- search path entry).
SELECT count(*) FROM pg_catalog.pg_tables
WHERE schemaname = current_schema() AND tablename = ANY($1)
