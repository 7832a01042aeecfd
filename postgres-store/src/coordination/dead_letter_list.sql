SELECT name, position, partition, event_id, stream_id, event_type, reason::text AS reason,
       parked_at, replay_requested
FROM __SCHEMA__.dead_letters
WHERE name = $1 AND ($2::integer IS NULL OR partition = $2)
ORDER BY position
