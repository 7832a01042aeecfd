-- A new instance; no row when one exists already.
INSERT INTO __SCHEMA__.process_instances
    (name, key, revision, active, last_position, correlation_id, state, pending, deadlines,
     next_deadline)
VALUES ($1, $2, 1, $3, $4, $5, $6::text::jsonb, $7::text::jsonb, $8::text::jsonb, $9)
ON CONFLICT (name, key) DO NOTHING
