-- Takes the checkpoint for fence $3 unless a later fence claimed it; returns the position.
INSERT INTO __SCHEMA__.checkpoints AS c (name, partition, position, fence)
VALUES ($1, $2, 0, $3)
ON CONFLICT (name, partition) DO UPDATE
    SET fence = EXCLUDED.fence
    WHERE c.fence <= EXCLUDED.fence
RETURNING position
