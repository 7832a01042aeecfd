-- Takes the leases of every known partition of $1 (those in $2, or all when NULL) for
-- holder $3 for $4 milliseconds, whoever holds them: the fence moves on, so a former holder's
-- next renewal fails. Returns each partition with its new fence.
INSERT INTO __SCHEMA__.leases AS l (name, partition, holder, fence, expires_at)
SELECT $1, k.partition, $3, 1, now() + $4::bigint * interval '1 millisecond'
FROM (SELECT partition FROM __SCHEMA__.checkpoints WHERE name = $1
      UNION SELECT partition FROM __SCHEMA__.leases WHERE name = $1
      UNION SELECT partition FROM __SCHEMA__.dead_letters WHERE name = $1) AS k
WHERE $2::integer[] IS NULL OR k.partition = ANY ($2)
ON CONFLICT (name, partition) DO UPDATE
    SET holder = EXCLUDED.holder, fence = l.fence + 1, expires_at = EXCLUDED.expires_at
RETURNING partition, fence
