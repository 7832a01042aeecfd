-- Records the first outcome of a command id (migrations/0004_command_log.sql), unless it has
-- one: a row (the primary key, `(command_id)`, or `(tenant, command_id)` in a multi-tenant
-- store, waits for a concurrent append or record of the same id), or an event with the
-- command's first derived id ($6), stored before the command log existed.
-- Returns whether the row was written.
--
-- $1 command id, $2 stream, $3 version, $4 outcome, $5 message, $6 first derived event id.
WITH recorded AS (
    INSERT INTO __SCHEMA__.command_log (command_id, stream_id, version, outcome, message)
    SELECT $1::uuid, $2::text, $3::bigint, $4::smallint, $5::text
    WHERE NOT EXISTS (SELECT 1 FROM __SCHEMA__.events e WHERE e.event_id = $6::uuid)
    ON CONFLICT ON CONSTRAINT command_log_pkey DO NOTHING
    RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM recorded) AS recorded
