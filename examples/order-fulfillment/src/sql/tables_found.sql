-- $1 table names: those of them that exist in the store's schema (the transaction's first
-- search path entry), and whether each is in the multi-tenant layout: a `tenant` column,
-- under forced row-level security.
SELECT c.relname::text AS name,
       c.relforcerowsecurity AND EXISTS (
           SELECT 1 FROM pg_catalog.pg_attribute AS a
           WHERE a.attrelid = c.oid AND a.attname = 'tenant' AND NOT a.attisdropped
       ) AS per_tenant
FROM pg_catalog.pg_class AS c
WHERE c.relnamespace = current_schema()::regnamespace
  AND c.relkind = 'r'
  AND c.relname = ANY($1)
ORDER BY c.relname
