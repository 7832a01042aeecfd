-- The data keys of crypto-shredding (`factum::personal`, `PgKeyStore`): one row per subject.
--
-- `__SCHEMA__` is replaced by the validated, quoted schema name before this runs.
--
-- `wrapped_key` is the subject's data key encrypted by the master key given in configuration
-- (never the key itself). Forgetting the subject sets it to null and stamps `forgotten_at`:
-- the row stays as a tombstone, so that a forgotten subject (its fields read as erased) is
-- told from one that never had a key (an error).
CREATE TABLE __SCHEMA__.data_keys (
    subject text PRIMARY KEY,
    wrapped_key bytea,
    created_at timestamptz NOT NULL DEFAULT now(),
    forgotten_at timestamptz,
    CHECK ((wrapped_key IS NULL) = (forgotten_at IS NOT NULL))
);
