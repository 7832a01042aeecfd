-- Heap tuples the server has fetched from the events table, by index or sequential scans.
SELECT (coalesce(idx_tup_fetch, 0) + coalesce(seq_tup_read, 0))::bigint
FROM pg_stat_user_tables
WHERE relid = to_regclass($1)
