-- Events after position $1 in global order, at most $2, bounded by the oldest running
-- transaction that may write here (`read_bound.sql`), so that no later commit can land
-- below what was read.
SELECT position, event_id, stream_id, stream_version, event_type, schema_version,
       payload, metadata, recorded_at
FROM __SCHEMA__.events
WHERE position > $1
  AND position < __READ_BOUND__
ORDER BY position
LIMIT $2
