SELECT key FROM __SCHEMA__.process_instances
WHERE name = $1 AND pending <> '[]'::jsonb
ORDER BY key COLLATE "C"
