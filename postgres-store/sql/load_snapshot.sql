SELECT stream_id, schema_version, version, state, taken_at
FROM __SCHEMA__.snapshots
WHERE stream_id = $1 AND schema_version = $2 AND version <= $3
ORDER BY version DESC
LIMIT 1
