-- Events of one partition of the streams after position $1 in global order, at most $2,
-- bounded as every global read is (`read_bound.sql`). `__PARTITION__` is the test of the
-- partition, with literals: the partition expression of the number of partitions
-- (`stream_hash` modulo it, as an unsigned value) equal to the partition, the predicate of
-- that partition's index (`PgStore::create_partition_index`), so that the read is a range
-- of that index in position order. $3 categories and $4 event types filter when not empty.
SELECT position, event_id, stream_id, stream_version, event_type, schema_version,
       payload, metadata, recorded_at
FROM __SCHEMA__.events
WHERE __PARTITION__
  AND position > $1
  AND position < __READ_BOUND__
  AND (cardinality($3::text[]) = 0 OR category = ANY ($3))
  AND (cardinality($4::text[]) = 0 OR event_type = ANY ($4))
ORDER BY position
LIMIT $2
