-- The tenant of each event, snapshot, command outcome, parked event and process instance
-- (see docs/adr/14-tenants.md).
--
-- `__SCHEMA__` is replaced by the validated, quoted schema name before this runs.
--
-- A single-tenant store leaves the columns NULL: adding a nullable column without a default
-- rewrites nothing, and its keys, indexes and statements stay as they were. A store
-- configured as multi-tenant (`PgConfig::multi_tenant`) then applies `sql/tenancy.sql`,
-- which makes the tenant part of the keys and enables row-level security.
ALTER TABLE __SCHEMA__.events
    ADD COLUMN tenant text CONSTRAINT events_tenant_not_empty CHECK (tenant <> '');
ALTER TABLE __SCHEMA__.snapshots
    ADD COLUMN tenant text CONSTRAINT snapshots_tenant_not_empty CHECK (tenant <> '');
ALTER TABLE __SCHEMA__.command_log
    ADD COLUMN tenant text CONSTRAINT command_log_tenant_not_empty CHECK (tenant <> '');
ALTER TABLE __SCHEMA__.dead_letters
    ADD COLUMN tenant text CONSTRAINT dead_letters_tenant_not_empty CHECK (tenant <> '');
ALTER TABLE __SCHEMA__.process_instances
    ADD COLUMN tenant text CONSTRAINT process_instances_tenant_not_empty CHECK (tenant <> '');
