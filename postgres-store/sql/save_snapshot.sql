INSERT INTO __SCHEMA__.snapshots (stream_id, schema_version, version, state, taken_at)
VALUES ($1, $2, $3, $4::text::jsonb, $5)
ON CONFLICT (stream_id, schema_version, version)
DO UPDATE SET state = excluded.state, taken_at = excluded.taken_at
