-- What a hand-written reader of one partition runs on the same schema: the partition's
-- events after $1, at most $2, in position order, without the read bound. `__PARTITION__`
-- is the predicate of the partition's index (the same text as the store's, so that the same
-- partial index serves it), or `true` for a single partition.
SELECT position, event_id, stream_id, stream_version, event_type, schema_version,
       payload, metadata, recorded_at
FROM __SCHEMA__.events
WHERE __PARTITION__
  AND position > $1
ORDER BY position
LIMIT $2
