-- What replaying an aggregate needs: the bounds of read_stream.sql, without ids, metadata
-- and times. $2..$3: version bounds (inclusive); $4: recorded at or before (NULL: no bound);
-- $5: limit (NULL: no limit).
SELECT stream_version, position, event_type, schema_version, payload
FROM __SCHEMA__.events
WHERE stream_id = $1
  AND stream_version BETWEEN $2 AND $3
  AND ($4::timestamptz IS NULL OR recorded_at <= $4)
ORDER BY stream_version
LIMIT $5
