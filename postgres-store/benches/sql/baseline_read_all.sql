SELECT position, event_id, stream_id, stream_version, event_type, schema_version,
       payload, metadata, recorded_at
FROM __SCHEMA__.events
WHERE position > $1
ORDER BY position
LIMIT $2
