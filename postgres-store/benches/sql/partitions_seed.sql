-- $1 events spread round-robin over $2 streams (so that every partition's events are spread
-- over the whole table, the layout least favourable to a partition's reads), written directly
-- with positions 1..$1: the stored rows an append would write, with `stream_hash` computed by
-- the table as on every insert.
INSERT INTO __SCHEMA__.events (position, event_id, stream_id, stream_version, event_type,
                               schema_version, payload, metadata)
SELECT g + 1, gen_random_uuid(), 'order-s' || (g % $2::bigint), g / $2::bigint + 1, 'Incremented', 1,
       jsonb_build_object('by', g % 100), $3::text::jsonb
FROM generate_series(0::bigint, $1::bigint - 1) AS g
