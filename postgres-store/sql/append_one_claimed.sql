-- `append_one.sql` for an event that carries a command id ($8, the caller's idempotency key):
-- the same append, which also claims the command id in the command log
-- (migrations/0004_command_log.sql) in the same statement. Status 2 when the command id
-- already has an outcome without events: nothing is appended.
--
-- $1 stream, $2 expected (-1 any, -2 an existing stream, n >= 0 exactly n), $3 event id,
-- $4 type, $5 schema version, $6 payload, $7 metadata, $8 command id.
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
), claimed AS (
    -- Waits for a concurrent record of the same command id, and sees it once committed.
    INSERT INTO __SCHEMA__.command_log AS l (command_id, stream_id, version, outcome)
    SELECT $8::uuid, $1::text, a.version, 0 FROM accepted a
    ON CONFLICT ON CONSTRAINT command_log_pkey DO UPDATE SET outcome = 0 WHERE l.outcome = 0
    RETURNING 1
), inserted AS (
    INSERT INTO __SCHEMA__.events (
        position, event_id, stream_id, stream_version, event_type, schema_version,
        payload, metadata
    )
    SELECT pg_current_xact_id()::text::bigint * 65536, $3::uuid, $1::text, a.version + 1,
           $4::text, $5::integer, $6::text::jsonb, $7::text::jsonb
    FROM accepted a
    WHERE EXISTS (SELECT 1 FROM claimed)
    RETURNING position, stream_version
)
SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM accepted) THEN 1
            WHEN NOT EXISTS (SELECT 1 FROM claimed) THEN 2
            ELSE 0
       END AS status,
       coalesce((SELECT i.stream_version FROM inserted i), (SELECT c.version FROM current c))
           AS version,
       coalesce((SELECT i.position FROM inserted i), 0) AS first_position
