-- What the application role (`PgConfig::application_role`, `__ROLE__`) may do at run time,
-- granted by `migrate` after the migrations: append and read events; read and write
-- snapshots, the command log and the runtime's tables. Nothing else: no `UPDATE`, `DELETE`
-- or `TRUNCATE` of events, and, not owning the table, no `ALTER TABLE` or `DROP TRIGGER`.
-- Granting again is harmless. A table added by a migration is added here (the tests check
-- that every table of the schema is granted).
GRANT USAGE ON SCHEMA __SCHEMA__ TO __ROLE__;
GRANT SELECT ON __SCHEMA__.schema_migrations TO __ROLE__;
GRANT SELECT, INSERT ON __SCHEMA__.events TO __ROLE__;
GRANT SELECT, INSERT, UPDATE
    ON __SCHEMA__.snapshots, __SCHEMA__.command_log, __SCHEMA__.checkpoints,
       __SCHEMA__.leases, __SCHEMA__.process_instances
    TO __ROLE__;
GRANT SELECT, INSERT, UPDATE, DELETE
    ON __SCHEMA__.members, __SCHEMA__.dead_letters
    TO __ROLE__;
GRANT SELECT, INSERT, UPDATE ON __SCHEMA__.data_keys TO __ROLE__;
GRANT EXECUTE ON FUNCTION
    __SCHEMA__.append(text, bigint, uuid[], text[], integer[], text[], text[]),
    __SCHEMA__.append(text, bigint, uuid[], text[], integer[], text[], text[], uuid)
    TO __ROLE__;
