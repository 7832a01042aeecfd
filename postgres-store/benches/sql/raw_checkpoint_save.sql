-- The raw-SQL projection's checkpoint.
INSERT INTO __SCHEMA__.raw_checkpoint (name, position) VALUES ($1, $2)
ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position
