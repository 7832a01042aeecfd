INSERT INTO __SCHEMA__.schema_migrations (version, name) VALUES ($1, $2)
