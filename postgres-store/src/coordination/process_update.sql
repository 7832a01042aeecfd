-- Compare-and-set on the revision.
UPDATE __SCHEMA__.process_instances SET
    revision = revision + 1,
    active = $4,
    last_position = $5,
    correlation_id = $6,
    state = $7::text::jsonb,
    pending = $8::text::jsonb,
    deadlines = $9::text::jsonb,
    next_deadline = $10
WHERE name = $1 AND key = $2 AND revision = $3
