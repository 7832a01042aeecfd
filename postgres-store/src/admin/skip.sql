-- Removes the parked events of $1 (of stream $2 and at position $3 when given); returns the
-- stream of each.
DELETE FROM __SCHEMA__.dead_letters
WHERE name = $1 AND ($2::text IS NULL OR stream_id = $2) AND ($3::bigint IS NULL OR position = $3)
RETURNING stream_id
