-- Moves the checkpoint only for the fence of the last claim.
UPDATE __SCHEMA__.checkpoints
SET position = $4, updated_at = now()
WHERE name = $1 AND partition = $2 AND fence = $3
