-- Sets every checkpoint of $1 to 0.
UPDATE __SCHEMA__.checkpoints SET position = 0, updated_at = now() WHERE name = $1
