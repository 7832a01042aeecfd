-- The baseline insert of one event, plus the command-log row of its command id ($8), in one
-- statement: what an append with a caller-given command id writes, without the checks.
WITH claim AS (
    INSERT INTO __SCHEMA__.command_log (command_id, stream_id, version, outcome)
    VALUES ($8, $2, 0, 0)
)
INSERT INTO __SCHEMA__.events (position, event_id, stream_id, stream_version, event_type,
                               schema_version, payload, metadata)
VALUES (nextval('__SCHEMA__.baseline_positions'), $1, $2, $3, $4, $5, $6::text::jsonb,
        $7::text::jsonb)
