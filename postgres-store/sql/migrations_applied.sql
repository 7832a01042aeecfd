SELECT version FROM __SCHEMA__.schema_migrations ORDER BY version
