-- The rows of one partition (`__PARTITION__`, as in `raw_read_partition.sql`) and their
-- stored size in bytes: what a worker of that partition reads.
SELECT count(*)::bigint, coalesce(sum(pg_column_size(e.*)), 0)::bigint
FROM __SCHEMA__.events AS e
WHERE __PARTITION__
