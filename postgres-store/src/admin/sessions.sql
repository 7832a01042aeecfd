-- The client sessions of this database inside a transaction, oldest transaction first ($1
-- one process id, or NULL for all; $2 the most to list), this one left out. Background
-- workers (autovacuum) are left out too: they hold no transaction id an operator can end.
SELECT pid, coalesce(application_name, '') AS application_name, usename::text AS usename,
       client_addr::text AS client_addr, state,
       extract(epoch FROM now() - xact_start)::float8 AS transaction_age,
       backend_xid IS NOT NULL AS writes, query
FROM pg_stat_activity
WHERE datname = current_database()
  AND backend_type = 'client backend'
  AND pid <> pg_backend_pid()
  AND ($1::integer IS NULL OR pid = $1)
  AND ($1::integer IS NOT NULL OR xact_start IS NOT NULL)
ORDER BY xact_start NULLS LAST, pid
LIMIT $2
