-- What loading an aggregate reads, in one statement: the latest snapshot of schema version
-- $2 at or below version $3, then the events after it up to $3 (from version 1 without
-- one), in stream order.
--
-- The snapshot's row has a NULL position (events always have one): `stream_version` is its
-- version, `payload` its state, `taken_at` when it was taken. The events' bounds are read
-- through scalar subqueries, so that every plan is the ordered index scan of
-- `events_stream_version_key` (replay_stream.sql).
WITH snap AS MATERIALIZED (
    SELECT s.version, s.state, s.taken_at
    FROM __SCHEMA__.snapshots s
    WHERE s.stream_id = $1 AND s.schema_version = $2 AND s.version <= $3
    ORDER BY s.version DESC
    LIMIT 1
)
SELECT version AS stream_version, NULL::bigint AS position, NULL::text AS event_type,
       NULL::integer AS schema_version, state AS payload, taken_at
FROM snap
UNION ALL
(SELECT e.stream_version, e.position, e.event_type, e.schema_version, e.payload,
        NULL::timestamptz
 FROM __SCHEMA__.events e
 WHERE e.stream_id = (SELECT $1::text)
   AND e.stream_version > coalesce((SELECT version FROM snap), 0)
   AND e.stream_version <= (SELECT $3::bigint)
 ORDER BY e.stream_version)
