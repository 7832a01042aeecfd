-- Gives the baseline schema the same events as the store's.
INSERT INTO __BASE__.events (position, event_id, stream_id, stream_version, event_type,
                             schema_version, payload, metadata, recorded_at)
SELECT position, event_id, stream_id, stream_version, event_type, schema_version, payload,
       metadata, recorded_at
FROM __SCHEMA__.events
