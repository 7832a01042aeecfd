-- Every partition of every projection or process manager known to the coordination tables
-- (a checkpoint, a lease or a parked event), with its checkpoint, its live lease holder and
-- its number of parked events. $1 a name, or NULL for all.
WITH keys AS (
    SELECT name, partition FROM __SCHEMA__.checkpoints
    UNION SELECT name, partition FROM __SCHEMA__.leases
    UNION SELECT name, partition FROM __SCHEMA__.dead_letters
)
SELECT k.name, k.partition,
       coalesce(c.position, 0) AS position,
       c.updated_at,
       CASE WHEN l.expires_at > now() THEN l.holder END AS holder,
       CASE WHEN l.expires_at > now() AND l.holder IS NOT NULL
            THEN extract(epoch FROM l.expires_at - now())::float8 END AS lease_left,
       extract(epoch FROM now() - c.updated_at)::float8 AS since_update,
       (SELECT count(*) FROM __SCHEMA__.dead_letters AS d
        WHERE d.name = k.name AND d.partition = k.partition) AS parked
FROM keys AS k
LEFT JOIN __SCHEMA__.checkpoints AS c ON c.name = k.name AND c.partition = k.partition
LEFT JOIN __SCHEMA__.leases AS l ON l.name = k.name AND l.partition = k.partition
WHERE $1::text IS NULL OR k.name = $1
ORDER BY k.name COLLATE "C", k.partition
