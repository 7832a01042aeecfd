-- The partition key of every event, for partition-aware reads (see
-- docs/adr/19-partition-aware-reads.md).
--
-- `__SCHEMA__` is replaced by the validated, quoted schema name before this runs.
--
-- `stream_hash` is FNV-1a (64-bit) of the stream id's UTF-8 bytes, as a signed bigint: the
-- hash `factum::coordination::partition_of` takes modulo the number of partitions, so that
-- partition p of N in the store is the runners' partition p of N and existing checkpoints
-- stay valid. It is computed by PostgreSQL on insert (a stored generated column), so the
-- append statements are unchanged.
--
-- On an existing table, adding a stored generated column rewrites it under an ACCESS
-- EXCLUSIVE lock: appends and reads wait until the rewrite (and the hashing of every
-- stream id) is done.
CREATE FUNCTION __SCHEMA__.stream_hash(p_stream text) RETURNS bigint
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    b bytea := convert_to(p_stream, 'UTF8');
    -- The 64-bit state in two 32-bit halves, so that no product overflows a bigint.
    hi bigint := 3421674724;  -- 0xcbf29ce4, the high half of the offset basis
    lo bigint := 2216829733;  -- 0x84222325, its low half
    t bigint;
BEGIN
    FOR i IN 0 .. length(b) - 1 LOOP
        lo := lo # get_byte(b, i);
        -- state * (2^40 + 0x1b3) modulo 2^64: the low half times 0x1b3 carries into the
        -- high half, and the low half shifted by 40 lands in the high half.
        t := lo * 435;
        hi := (hi * 435 + (t >> 32) + (lo << 8)) & 4294967295;
        lo := t & 4294967295;
    END LOOP;
    RETURN (hi << 32) | lo;
END
$$;

ALTER TABLE __SCHEMA__.events
    ADD COLUMN stream_hash bigint
        GENERATED ALWAYS AS (__SCHEMA__.stream_hash(stream_id)) STORED;
