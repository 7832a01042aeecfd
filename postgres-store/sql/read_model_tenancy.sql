-- The tenant isolation of the events (sql/tenancy.sql), for a read-model table of the
-- application's (`tenant_policy`): `__TABLE__` is the quoted, schema-qualified table.
ALTER TABLE __TABLE__
    ADD COLUMN IF NOT EXISTS tenant text NOT NULL
        DEFAULT current_setting('factum.tenant', true) CHECK (tenant <> '');
ALTER TABLE __TABLE__ ENABLE ROW LEVEL SECURITY;
ALTER TABLE __TABLE__ FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON __TABLE__;
CREATE POLICY tenant_isolation ON __TABLE__
    USING (tenant = current_setting('factum.tenant', true))
    WITH CHECK (tenant = current_setting('factum.tenant', true));
