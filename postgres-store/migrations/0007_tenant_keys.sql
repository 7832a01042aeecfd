-- Command ids and data keys per tenant (see docs/adr/14-tenants.md and
-- docs/adr/15-crypto-shredding.md).
--
-- `__SCHEMA__` is replaced by the validated, quoted schema name before this runs.
--
-- The multi-tenant layout (`sql/tenancy.sql`) makes the command log's primary key
-- `(tenant, command_id)`, so that a command id is unique per tenant, as stream ids and event
-- ids are; the appends name the key by its constraint, `command_log_pkey`, which is
-- `(command_id)` in a single-tenant store and `(tenant, command_id)` in a multi-tenant one.
-- The key table gains the tenant column of migration 5: NULL in a single-tenant store, the
-- tenant of the key (which its key id also names) in a multi-tenant one, under the events'
-- policy.
ALTER TABLE __SCHEMA__.data_keys
    ADD COLUMN tenant text CONSTRAINT data_keys_tenant_not_empty CHECK (tenant <> '');

-- The append of migration 4, claiming the command id under the command log's primary key,
-- whichever columns it has.
CREATE OR REPLACE FUNCTION __SCHEMA__.append(
    p_stream text,
    p_expected bigint,
    p_ids uuid[],
    p_types text[],
    p_schema_versions integer[],
    p_payloads text[],
    p_metadata text[],
    p_command uuid,
    OUT status integer,
    OUT version bigint,
    OUT first_position bigint
)
LANGUAGE plpgsql AS $$
DECLARE
    n integer := coalesce(cardinality(p_ids), 0);
    v_current bigint;
BEGIN
    IF p_command IS NOT NULL AND n > 0 THEN
        SELECT coalesce(max(e.stream_version), 0) INTO v_current
        FROM __SCHEMA__.events e WHERE e.stream_id = p_stream;
        IF NOT (p_expected = -1
                OR (p_expected = -2 AND v_current > 0)
                OR (p_expected >= 0 AND v_current = p_expected)) THEN
            status := 1;
            version := v_current;
            first_position := 0;
            RETURN;
        END IF;
        -- Waits for a concurrent record of the same command id, and sees it once committed.
        INSERT INTO __SCHEMA__.command_log AS l (command_id, stream_id, version, outcome)
        VALUES (p_command, p_stream, v_current, 0)
        ON CONFLICT ON CONSTRAINT command_log_pkey DO UPDATE SET outcome = 0 WHERE l.outcome = 0;
        IF NOT FOUND THEN
            status := 2;
            version := v_current;
            first_position := 0;
            RETURN;
        END IF;
    END IF;
    SELECT a.status, a.version, a.first_position INTO status, version, first_position
    FROM __SCHEMA__.append(p_stream, p_expected, p_ids, p_types, p_schema_versions,
                           p_payloads, p_metadata) a;
END
$$;
