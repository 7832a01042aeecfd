SELECT version, state FROM __SCHEMA__.snapshots
WHERE stream_id = $1 AND schema_version = $2
ORDER BY version DESC
LIMIT 1
