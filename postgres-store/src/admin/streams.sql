-- $1 category or NULL, $2 the most streams to list, $3 list after this stream id (or NULL):
-- each stream with its version, last position and the time of its last event, by name.
-- The stream ids are walked through the index of stream reads one at a time (a skip scan),
-- so a page costs a few index lookups per stream, however many events the streams hold.
WITH RECURSIVE ids AS (
    (SELECT stream_id FROM __SCHEMA__.events
     WHERE ($3::text IS NULL OR stream_id > $3) AND ($1::text IS NULL OR category = $1)
     ORDER BY stream_id
     LIMIT 1)
    UNION ALL
    SELECT (SELECT e.stream_id FROM __SCHEMA__.events AS e
            WHERE e.stream_id > ids.stream_id AND ($1::text IS NULL OR e.category = $1)
            ORDER BY e.stream_id
            LIMIT 1)
    FROM ids
    WHERE ids.stream_id IS NOT NULL
)
SELECT ids.stream_id, last.stream_version AS version, last.position, last.recorded_at
FROM ids
CROSS JOIN LATERAL (SELECT e.stream_version, e.position, e.recorded_at
                    FROM __SCHEMA__.events AS e
                    WHERE e.stream_id = ids.stream_id
                    ORDER BY e.stream_version DESC
                    LIMIT 1) AS last
WHERE ids.stream_id IS NOT NULL
LIMIT $2
