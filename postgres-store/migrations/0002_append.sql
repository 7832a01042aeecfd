-- The append: one call per command, all-or-nothing.
--
-- `__SCHEMA__` is the quoted schema name; `__LOCK_CLASS__, __LOCK_KEY__` the advisory lock
-- that orders position reservation.
--
-- `p_expected`: -1 any version, -2 an existing stream, n >= 0 exactly version n (0: no
-- stream).
--
-- `status`: 0 appended (`version` is the new version, `first_position` the position of the
-- first event, 0 when nothing was appended); 1 wrong expected version (`version` is the
-- actual one); 2 some event ids are already stored (the caller decides whether this is a
-- retry).
CREATE FUNCTION __SCHEMA__.append(
    p_stream text,
    p_expected bigint,
    p_ids uuid[],
    p_types text[],
    p_schema_versions integer[],
    p_payloads text[],
    p_metadata text[],
    OUT status integer,
    OUT version bigint,
    OUT first_position bigint
)
LANGUAGE plpgsql AS $$
DECLARE
    n integer := coalesce(cardinality(p_ids), 0);
    v_current bigint;
    v_now timestamptz;
BEGIN
    first_position := 0;
    version := 0;

    -- An idempotent retry (or a reused id): decided by the caller, nothing written.
    IF n > 0 AND EXISTS (SELECT 1 FROM __SCHEMA__.events e WHERE e.event_id = ANY (p_ids)) THEN
        status := 2;
        RETURN;
    END IF;

    -- Early check, before anything is written (no transaction id, no position used).
    IF p_expected <> -1 OR n = 0 THEN
        SELECT s.version INTO v_current FROM __SCHEMA__.streams s WHERE s.stream_id = p_stream;
        v_current := coalesce(v_current, 0);
        IF NOT (p_expected = -1
                OR (p_expected = -2 AND v_current > 0)
                OR (p_expected >= 0 AND v_current = p_expected)) THEN
            status := 1;
            version := v_current;
            RETURN;
        END IF;
        IF n = 0 THEN
            status := 0;
            version := v_current;
            RETURN;
        END IF;
    END IF;

    -- Reserve positions. The transaction id is taken inside the same short critical
    -- section, so that position order is transaction-id order: a reader that only reads
    -- transactions older than the oldest running one can never be overtaken by a
    -- transaction that commits later with a lower position. The lock is released here, not
    -- at commit: writers still commit (and fsync) concurrently. The exception handler makes
    -- sure that a cancel inside the section cannot leave the session lock behind.
    BEGIN
        PERFORM pg_advisory_lock(__LOCK_CLASS__, __LOCK_KEY__);
        PERFORM pg_current_xact_id();
        first_position := nextval('__SCHEMA__.positions');
        IF n > 1 THEN
            PERFORM setval('__SCHEMA__.positions', first_position + n - 1);
        END IF;
        PERFORM pg_advisory_unlock(__LOCK_CLASS__, __LOCK_KEY__);
    EXCEPTION WHEN query_canceled OR others THEN
        PERFORM pg_advisory_unlock(__LOCK_CLASS__, __LOCK_KEY__);
        RAISE;
    END;

    version := NULL;

    -- The authoritative version check: the stream row is locked until commit, so appends
    -- to one stream are serialised and a concurrent writer re-checks against the new row.
    IF p_expected = -1 THEN
        INSERT INTO __SCHEMA__.streams AS s (stream_id, version) VALUES (p_stream, n)
        ON CONFLICT (stream_id) DO UPDATE SET version = s.version + n
        RETURNING s.version INTO version;
    ELSIF p_expected = 0 THEN
        INSERT INTO __SCHEMA__.streams AS s (stream_id, version) VALUES (p_stream, n)
        ON CONFLICT (stream_id) DO NOTHING
        RETURNING s.version INTO version;
    ELSIF p_expected = -2 THEN
        UPDATE __SCHEMA__.streams s SET version = s.version + n
        WHERE s.stream_id = p_stream
        RETURNING s.version INTO version;
    ELSE
        UPDATE __SCHEMA__.streams s SET version = s.version + n
        WHERE s.stream_id = p_stream AND s.version = p_expected
        RETURNING s.version INTO version;
    END IF;

    IF version IS NULL THEN
        status := 1;
        first_position := 0;
        SELECT coalesce(max(s.version), 0) INTO version
        FROM __SCHEMA__.streams s WHERE s.stream_id = p_stream;
        RETURN;
    END IF;

    -- Taken after the stream row lock: monotonic within a stream.
    v_now := clock_timestamp();
    INSERT INTO __SCHEMA__.events (
        position, event_id, stream_id, stream_version, event_type, schema_version,
        payload, metadata, recorded_at
    )
    SELECT first_position + u.i - 1, u.id, p_stream, version - n + u.i, u.t, u.sv,
           u.p::jsonb, u.m::jsonb, v_now
    FROM unnest(p_ids, p_types, p_schema_versions, p_payloads, p_metadata)
         WITH ORDINALITY AS u(id, t, sv, p, m, i);

    status := 0;
END
$$;
