UPDATE __SCHEMA__.dead_letters SET replay_requested = true
WHERE name = $1 AND ($2::text IS NULL OR stream_id = $2)
