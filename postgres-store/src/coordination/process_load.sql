SELECT key, revision, active, last_position, correlation_id, state::text AS state,
       pending::text AS pending, deadlines::text AS deadlines
FROM __SCHEMA__.process_instances
WHERE name = $1 AND key = $2
