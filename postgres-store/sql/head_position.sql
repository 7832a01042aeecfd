-- `visible`: the last committed position; `safe`: the last position below which no running
-- transaction can still commit an event; `bound`: the first position a running (or future)
-- transaction that may write here can hold (`read_bound.sql`).
-- When committed events lie above the bound (`visible > safe`), the `blocker_*` columns
-- name the transaction holding them back: its session (`pid`, `application_name`, `state`,
-- seconds since its transaction started), or a prepared transaction (no `pid`, its `gid`
-- in `blocker_state`). `state` and the age are NULL for a session of another role unless
-- the store's role may read all statistics; all are NULL when it is not found.
WITH h AS MATERIALIZED (
    SELECT (SELECT coalesce(max(position), 0) FROM __SCHEMA__.events) AS visible,
           (SELECT coalesce(max(position), 0) FROM __SCHEMA__.events
            WHERE position < b.bound) AS safe,
           b.bound
    FROM (SELECT __READ_BOUND__ AS bound) AS b
)
SELECT h.visible, h.safe, h.bound, w.blocker_pid, w.blocker_application_name,
       w.blocker_state, w.blocker_age
FROM h
LEFT JOIN LATERAL (
    SELECT a.pid AS blocker_pid, a.application_name AS blocker_application_name,
           a.state AS blocker_state,
           extract(epoch FROM now() - a.xact_start)::float8 AS blocker_age
    FROM pg_stat_activity AS a
    WHERE a.backend_xid::text::bigint = (h.bound / 65536) % 4294967296
    UNION ALL
    SELECT NULL, NULL, 'prepared transaction ' || p.gid,
           extract(epoch FROM now() - p.prepared)::float8
    FROM pg_prepared_xacts AS p
    WHERE p.transaction::text::bigint = (h.bound / 65536) % 4294967296
    LIMIT 1
) AS w ON h.visible > h.safe
