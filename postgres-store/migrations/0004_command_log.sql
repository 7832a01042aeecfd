-- The command log: the first outcome of each command id (see docs/adr/06-command-idempotency.md).
--
-- `__SCHEMA__` is replaced by the validated, quoted schema name before this runs.
--
-- `outcome`: 0 appended events (a claim written by the append, in its transaction), 1
-- accepted without events, 2 rejected (`message` is the rejection's text). `version` is the
-- stream version the command was decided on. The primary key settles races: an append and a
-- record of the same command id conflict on it, so exactly one is first.
CREATE TABLE __SCHEMA__.command_log (
    command_id uuid PRIMARY KEY,
    stream_id text NOT NULL,
    version bigint NOT NULL CHECK (version >= 0),
    outcome smallint NOT NULL CHECK (outcome IN (0, 1, 2)),
    message text,
    recorded_at timestamptz NOT NULL DEFAULT now()
);

-- The append of migration 2, claiming `p_command` (the command id of the events, or null)
-- in the command log in the same transaction. `status` 2: the command id already has an
-- outcome without events (`version` is the stream's version); nothing is appended.
CREATE FUNCTION __SCHEMA__.append(
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
        ON CONFLICT (command_id) DO UPDATE SET outcome = 0 WHERE l.outcome = 0;
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
