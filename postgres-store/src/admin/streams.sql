-- $1 category or NULL, $2 the most streams to list: each stream with its version, last
-- position and the time of its last event, by name.
SELECT stream_id, max(stream_version) AS version, max(position) AS position,
       max(recorded_at) AS recorded_at
FROM __SCHEMA__.events
WHERE $1::text IS NULL OR category = $1
GROUP BY stream_id
ORDER BY stream_id
LIMIT $2
