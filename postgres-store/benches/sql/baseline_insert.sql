INSERT INTO __SCHEMA__.events (position, event_id, stream_id, stream_version, event_type,
                               schema_version, payload, metadata)
VALUES (nextval('__SCHEMA__.baseline_positions'), $1, $2, $3, $4, $5, $6::text::jsonb,
        $7::text::jsonb)
