-- The highest position below which no running transaction can still commit an event.
SELECT coalesce(max(position), 0)
FROM __SCHEMA__.events
WHERE transaction_id < (SELECT pg_snapshot_xmin(pg_current_snapshot()))
