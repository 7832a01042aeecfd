SELECT revision FROM __SCHEMA__.process_instances WHERE name = $1 AND key = $2
