-- The applied migrations, or nothing when the schema has no migrations table yet.
SELECT version, name, applied_at
FROM __SCHEMA__.schema_migrations
ORDER BY version
