-- The append of a single event, the common case, as one statement: the same contract as
-- the `append` function (migrations/0002_append.sql) without its call and array overhead.
-- Runs in its own transaction (the store's connections are in autocommit), so the event is
-- the transaction's first and its position is the transaction id * 65536.
--
-- $1 stream, $2 expected (-1 any, -2 an existing stream, n >= 0 exactly n), $3 event id,
-- $4 type, $5 schema version, $6 payload, $7 metadata.
WITH current AS (
    SELECT CASE
               -- A new stream: the unique index on (stream, version 1) is the check.
               WHEN $2::bigint = 0 THEN 0::bigint
               ELSE (SELECT coalesce(max(e.stream_version), 0)
                     FROM __SCHEMA__.events e WHERE e.stream_id = $1::text)
           END AS version
), accepted AS (
    SELECT c.version FROM current c
    WHERE $2::bigint = -1
       OR ($2::bigint = -2 AND c.version > 0)
       OR ($2::bigint >= 0 AND c.version = $2::bigint)
), inserted AS (
    INSERT INTO __SCHEMA__.events (
        position, event_id, stream_id, stream_version, event_type, schema_version,
        payload, metadata
    )
    SELECT pg_current_xact_id()::text::bigint * 65536, $3::uuid, $1::text, a.version + 1,
           $4::text, $5::integer, $6::text::jsonb, $7::text::jsonb
    FROM accepted a
    RETURNING position, stream_version
)
SELECT CASE WHEN EXISTS (SELECT 1 FROM accepted) THEN 0 ELSE 1 END AS status,
       coalesce((SELECT i.stream_version FROM inserted i), (SELECT c.version FROM current c))
           AS version,
       coalesce((SELECT i.position FROM inserted i), 0) AS first_position
