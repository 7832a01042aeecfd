-- Marks the parked events of $1 left in the streams $2 for replay.
UPDATE __SCHEMA__.dead_letters SET replay_requested = true
WHERE name = $1 AND stream_id = ANY ($2)
