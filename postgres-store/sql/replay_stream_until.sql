-- `replay_stream.sql` for temporal loads: events recorded at or before $4. $2..$3: version
-- bounds (inclusive); $5: limit (NULL: no limit).
SELECT stream_version, position, event_type, schema_version, payload
FROM __SCHEMA__.events
WHERE stream_id = $1
  AND stream_version BETWEEN $2 AND $3
  AND recorded_at <= $4
ORDER BY stream_version
LIMIT $5
