-- `append.sql` for events whose first carries a command id ($8, the caller's idempotency
-- key): the `append` of migrations/0004_command_log.sql, which also claims it.
SELECT status, version, first_position
FROM __SCHEMA__.append($1, $2, $3, $4, $5, $6, $7, $8)
