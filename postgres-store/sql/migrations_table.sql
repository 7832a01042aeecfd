-- The schema only when it is missing: `CREATE SCHEMA IF NOT EXISTS` needs the `CREATE`
-- privilege on the database even when the schema exists, which an owner role given its
-- schema by an administrator (`CREATE SCHEMA ... AUTHORIZATION`) does not have.
DO $$
BEGIN
    IF to_regnamespace('__SCHEMA__') IS NULL THEN
        CREATE SCHEMA __SCHEMA__;
    END IF;
END
$$;
CREATE TABLE IF NOT EXISTS __SCHEMA__.schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
