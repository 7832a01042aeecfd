-- Events, streams, snapshots, and the append-only guard.
--
-- `__SCHEMA__` is replaced by the validated, quoted schema name before this runs.

-- Global positions are `transaction id * 65536 + index in the transaction`: position order
-- is transaction-id order, so a reader bounded by the oldest running transaction can never
-- be overtaken by a later commit (see docs/adr/02-postgres-ordering.md).
CREATE TABLE __SCHEMA__.events (
    position bigint PRIMARY KEY,
    event_id uuid NOT NULL,
    stream_id text NOT NULL,
    stream_version bigint NOT NULL CHECK (stream_version > 0),
    category text GENERATED ALWAYS AS (split_part(stream_id, '-', 1)) STORED,
    event_type text NOT NULL,
    schema_version integer NOT NULL,
    payload jsonb NOT NULL,
    metadata jsonb NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT events_event_id_key UNIQUE (event_id),
    -- Also the index of stream reads and of the version check.
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, stream_version)
);

CREATE INDEX events_category_position_idx ON __SCHEMA__.events (category, position);
CREATE INDEX events_event_type_position_idx ON __SCHEMA__.events (event_type, position);

CREATE TABLE __SCHEMA__.snapshots (
    stream_id text NOT NULL,
    schema_version integer NOT NULL,
    version bigint NOT NULL CHECK (version >= 0),
    state jsonb NOT NULL,
    taken_at timestamptz NOT NULL,
    PRIMARY KEY (stream_id, schema_version, version)
);

-- Stored events are never changed or removed.
CREATE FUNCTION __SCHEMA__.reject_event_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are append-only: % on %.% is not allowed',
        TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME
        USING ERRCODE = 'FA001';
END
$$;

-- Statement-level, so that a statement matching no row is refused too.
CREATE TRIGGER events_append_only
    BEFORE UPDATE OR DELETE ON __SCHEMA__.events
    FOR EACH STATEMENT EXECUTE FUNCTION __SCHEMA__.reject_event_change();

CREATE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON __SCHEMA__.events
    FOR EACH STATEMENT EXECUTE FUNCTION __SCHEMA__.reject_event_change();

-- `ALWAYS`: the triggers fire under `session_replication_role = replica` as well.
ALTER TABLE __SCHEMA__.events ENABLE ALWAYS TRIGGER events_append_only;
ALTER TABLE __SCHEMA__.events ENABLE ALWAYS TRIGGER events_no_truncate;
