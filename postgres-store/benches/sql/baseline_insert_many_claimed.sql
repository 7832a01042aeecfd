-- The baseline insert of a batch, plus the command-log row of its command id ($7), in one
-- statement: what an append with a caller-given command id writes, without the checks.
WITH claim AS (
    INSERT INTO __SCHEMA__.command_log (command_id, stream_id, version, outcome)
    VALUES ($7, $1, 0, 0)
)
INSERT INTO __SCHEMA__.events (position, event_id, stream_id, stream_version, event_type,
                               schema_version, payload, metadata)
SELECT nextval('__SCHEMA__.baseline_positions'), u.id, $1, u.i, u.t, u.sv, u.p::jsonb, u.m::jsonb
FROM unnest($2::uuid[], $3::text[], $4::int[], $5::text[], $6::text[])
     WITH ORDINALITY AS u(id, t, sv, p, m, i)
