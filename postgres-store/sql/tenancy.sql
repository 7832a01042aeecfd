-- The multi-tenant layout (`PgConfig::multi_tenant`), applied by `migrate` after the
-- migrations, in their transaction; applying it again changes nothing.
--
-- Each row of the events, snapshots, command log, dead letters, process instances and data keys
-- belongs to a tenant: the one bound to the writing transaction with
-- `set_config('factum.tenant', tenant, true)`, which is the column's default. Row-level security, forced on the tables' owner too, lets a session
-- read, insert and update only rows of the tenant bound to its transaction; with none bound
-- (`current_setting` is NULL, or '' after a binding ended) it sees and writes nothing.
-- Superusers and roles with BYPASSRLS are not subject to it: the store must not run as one
-- (`PgStore::check_least_privilege` refuses them).
--
-- Stream versions, event ids and command ids are unique per tenant, so two tenants' streams
-- of one id are two streams, and two tenants' commands of one id two commands; positions
-- stay one order across tenants. The data keys of crypto-shredding are the tenant's too: a
-- key row written before its table had a tenant column gets the tenant its key id names
-- (the tenant, U+001F, the subject: `factum::personal::key_id`).
--
-- Dead letters and process instances keep their keys (a name, and a position or a key):
-- runners of a multi-tenant store run per tenant under names of the tenant's, so two tenants'
-- rows never share a key; one that tried would be refused by the policy, never read.
--
-- Fails, and the migration with it, when rows without a tenant are stored: a single-tenant
-- store with data is not turned into a multi-tenant one.
DO $tenancy$
DECLARE
    t text;
BEGIN
    UPDATE __SCHEMA__.data_keys SET tenant = split_part(subject, chr(31), 1)
    WHERE tenant IS NULL AND strpos(subject, chr(31)) > 1;
    FOREACH t IN ARRAY ARRAY['events', 'snapshots', 'command_log', 'dead_letters',
                             'process_instances', 'data_keys'] LOOP
        EXECUTE format(
            'ALTER TABLE %s.%I ALTER COLUMN tenant SET DEFAULT current_setting(%L, true),'
            ' ALTER COLUMN tenant SET NOT NULL',
            '__SCHEMA__', t, 'factum.tenant');
        EXECUTE format('ALTER TABLE %s.%I ENABLE ROW LEVEL SECURITY', '__SCHEMA__', t);
        EXECUTE format('ALTER TABLE %s.%I FORCE ROW LEVEL SECURITY', '__SCHEMA__', t);
        IF NOT EXISTS (SELECT 1 FROM pg_policy
                       WHERE polrelid = format('%s.%I', '__SCHEMA__', t)::regclass
                         AND polname = 'tenant_isolation') THEN
            EXECUTE format(
                'CREATE POLICY tenant_isolation ON %s.%I'
                ' USING (tenant = current_setting(%L, true))'
                ' WITH CHECK (tenant = current_setting(%L, true))',
                '__SCHEMA__', t, 'factum.tenant', 'factum.tenant');
        END IF;
    END LOOP;

    IF EXISTS (SELECT 1 FROM pg_constraint
               WHERE conrelid = '__SCHEMA__.events'::regclass
                 AND conname = 'events_stream_version_key') THEN
        ALTER TABLE __SCHEMA__.events
            DROP CONSTRAINT events_stream_version_key,
            DROP CONSTRAINT events_event_id_key,
            -- Also the index of stream reads and of the version check, the tenant first:
            -- the policy's equality is its first key.
            ADD CONSTRAINT events_tenant_stream_version_key
                UNIQUE (tenant, stream_id, stream_version),
            ADD CONSTRAINT events_tenant_event_id_key UNIQUE (tenant, event_id);
        ALTER TABLE __SCHEMA__.snapshots
            DROP CONSTRAINT snapshots_pkey,
            ADD PRIMARY KEY (tenant, stream_id, schema_version, version);
    END IF;
    -- The tenant first in the keys of the command log and the data keys, under the names
    -- the statements give them (migration 7).
    FOREACH t IN ARRAY ARRAY['command_log', 'data_keys'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_constraint c
                       JOIN pg_attribute a
                         ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
                       WHERE c.conrelid = format('%s.%I', '__SCHEMA__', t)::regclass
                         AND c.conname = t || '_pkey' AND a.attname = 'tenant') THEN
            EXECUTE format(
                'ALTER TABLE %s.%I DROP CONSTRAINT %I, ADD CONSTRAINT %I PRIMARY KEY (tenant, %I)',
                '__SCHEMA__', t, t || '_pkey', t || '_pkey',
                CASE t WHEN 'command_log' THEN 'command_id' ELSE 'subject' END);
        END IF;
    END LOOP;
END
$tenancy$;
