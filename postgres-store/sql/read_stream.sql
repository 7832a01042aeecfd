-- $2..$3: version bounds (inclusive); $4: recorded at or before (NULL: no bound);
-- $5: limit (NULL: no limit). The stream id is not selected: the caller knows it.
SELECT position, event_id, stream_version, event_type, schema_version, payload, metadata,
       recorded_at
FROM __SCHEMA__.events
WHERE stream_id = $1
  AND stream_version BETWEEN $2 AND $3
  AND ($4::timestamptz IS NULL OR recorded_at <= $4)
ORDER BY stream_version
LIMIT $5
