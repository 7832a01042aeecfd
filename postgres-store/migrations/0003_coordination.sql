-- What the projection and process-manager runtimes store besides events: checkpoints,
-- leases, members, parked events and process instances (factum's `CheckpointStore`,
-- `LeaseStore`, `DeadLetterStore` and `ProcessStore`; see docs/adr/04-projections.md).
--
-- `__SCHEMA__` is replaced by the validated, quoted schema name before this runs. Lease and
-- member expiry use the database's clock, never the application hosts'.

-- A checkpoint moves only with the fence of the last claim (compare-and-set).
CREATE TABLE __SCHEMA__.checkpoints (
    name text NOT NULL,
    partition integer NOT NULL CHECK (partition >= 0),
    position bigint NOT NULL DEFAULT 0 CHECK (position >= 0),
    fence bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, partition)
);

-- One holder per partition; `fence` grows with every new holder. A released lease keeps its
-- row (and fence) with no holder.
CREATE TABLE __SCHEMA__.leases (
    name text NOT NULL,
    partition integer NOT NULL CHECK (partition >= 0),
    holder text,
    fence bigint NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (name, partition)
);

-- Live workers of each projection or process manager (heartbeats).
CREATE TABLE __SCHEMA__.members (
    name text NOT NULL,
    member text NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (name, member)
);

-- Parked events (dead letters) of projections.
CREATE TABLE __SCHEMA__.dead_letters (
    name text NOT NULL,
    position bigint NOT NULL,
    partition integer NOT NULL,
    event_id uuid NOT NULL,
    stream_id text NOT NULL,
    event_type text NOT NULL,
    reason jsonb NOT NULL,
    parked_at timestamptz NOT NULL,
    replay_requested boolean NOT NULL DEFAULT false,
    PRIMARY KEY (name, position)
);

CREATE INDEX dead_letters_partition_idx ON __SCHEMA__.dead_letters (name, partition, position);

-- Process-manager instances: state, outbox and deadlines saved together, with a revision
-- for compare-and-set. `next_deadline` is the earliest deadline, for the due-timeout scan.
CREATE TABLE __SCHEMA__.process_instances (
    name text NOT NULL,
    key text NOT NULL,
    revision bigint NOT NULL CHECK (revision > 0),
    active boolean NOT NULL,
    last_position bigint NOT NULL,
    correlation_id uuid,
    state jsonb NOT NULL,
    pending jsonb NOT NULL,
    deadlines jsonb NOT NULL,
    next_deadline timestamptz,
    PRIMARY KEY (name, key)
);

CREATE INDEX process_instances_due_idx ON __SCHEMA__.process_instances (name, next_deadline)
    WHERE active AND next_deadline IS NOT NULL;
CREATE INDEX process_instances_pending_idx ON __SCHEMA__.process_instances (name, key)
    WHERE pending <> '[]'::jsonb;
