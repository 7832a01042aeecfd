-- The append: one call per command, all-or-nothing.
--
-- `__SCHEMA__` is the quoted schema name.
--
-- `p_expected`: -1 any version, -2 an existing stream, n >= 0 exactly version n (0: no
-- stream).
--
-- `status`: 0 appended (`version` is the new version, `first_position` the position of the
-- first event, 0 when nothing was appended); 1 wrong expected version (`version` is the
-- actual one).
--
-- Races are settled by the unique indexes: a concurrent append of the same stream version
-- or of a stored event id fails with SQLSTATE 23505, which the client turns into a version
-- conflict, an idempotent retry, or a duplicate id.
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
    v_base bigint;
BEGIN
    first_position := 0;

    IF p_expected = 0 AND n > 0 THEN
        -- A new stream: the unique index on (stream, version 1) is the check.
        v_current := 0;
    ELSE
        SELECT coalesce(max(e.stream_version), 0) INTO v_current
        FROM __SCHEMA__.events e WHERE e.stream_id = p_stream;
    END IF;
    IF NOT (p_expected = -1
            OR (p_expected = -2 AND v_current > 0)
            OR (p_expected >= 0 AND v_current = p_expected)) THEN
        status := 1;
        version := v_current;
        RETURN;
    END IF;
    status := 0;
    version := v_current + n;
    IF n = 0 THEN
        RETURN;
    END IF;
    IF n > 65536 THEN
        RAISE EXCEPTION 'at most 65536 events can be appended in one transaction'
            USING ERRCODE = 'FA002';
    END IF;

    -- Positions: this transaction's id * 65536 + the event's index in the transaction.
    IF pg_current_xact_id_if_assigned() IS NULL THEN
        -- The transaction's first write: no earlier append in it.
        first_position := pg_current_xact_id()::text::bigint * 65536;
    ELSE
        v_base := pg_current_xact_id()::text::bigint * 65536;
        SELECT coalesce(max(e.position) + 1, v_base) INTO first_position
        FROM __SCHEMA__.events e
        WHERE e.position >= v_base AND e.position < v_base + 65536;
        IF first_position + n > v_base + 65536 THEN
            RAISE EXCEPTION 'at most 65536 events can be appended in one transaction'
                USING ERRCODE = 'FA002';
        END IF;
    END IF;

    INSERT INTO __SCHEMA__.events (
        position, event_id, stream_id, stream_version, event_type, schema_version,
        payload, metadata
    )
    SELECT first_position + u.i - 1, u.id, p_stream, v_current + u.i, u.t, u.sv,
           u.p::jsonb, u.m::jsonb
    FROM unnest(p_ids, p_types, p_schema_versions, p_payloads, p_metadata)
         WITH ORDINALITY AS u(id, t, sv, p, m, i);
END
$$;
