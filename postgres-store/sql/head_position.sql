-- `visible`: the last committed position; `safe`: the last position below which no running
-- transaction can still commit an event; `bound`: the first position a running (or future)
-- transaction can hold.
SELECT (SELECT coalesce(max(position), 0) FROM __SCHEMA__.events) AS visible,
       (SELECT coalesce(max(position), 0) FROM __SCHEMA__.events WHERE position < b.bound) AS safe,
       b.bound
FROM (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint * 65536 AS bound) AS b
