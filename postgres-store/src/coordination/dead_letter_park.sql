INSERT INTO __SCHEMA__.dead_letters
    (name, position, partition, event_id, stream_id, event_type, reason, parked_at,
     replay_requested)
VALUES ($1, $2, $3, $4, $5, $6, $7::text::jsonb, $8, $9)
ON CONFLICT (name, position) DO UPDATE SET
    partition = EXCLUDED.partition,
    event_id = EXCLUDED.event_id,
    stream_id = EXCLUDED.stream_id,
    event_type = EXCLUDED.event_type,
    reason = EXCLUDED.reason,
    parked_at = EXCLUDED.parked_at,
    replay_requested = EXCLUDED.replay_requested
