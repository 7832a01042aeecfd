-- `save_snapshot.sql` for a multi-tenant store (sql/tenancy.sql): the tenant is the column's
-- default, the one bound to the transaction, and part of the key.
INSERT INTO __SCHEMA__.snapshots (stream_id, schema_version, version, state, taken_at)
VALUES ($1, $2, $3, $4::text::jsonb, $5)
ON CONFLICT (tenant, stream_id, schema_version, version)
DO UPDATE SET state = excluded.state, taken_at = excluded.taken_at
