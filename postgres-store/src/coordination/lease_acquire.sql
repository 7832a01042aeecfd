-- Grants the lease when free, expired, or held by the same holder (who keeps the fence while
-- the lease is live); a new holder gets the next fence. No row: someone else holds it.
INSERT INTO __SCHEMA__.leases AS l (name, partition, holder, fence, expires_at)
VALUES ($1, $2, $3, 1, now() + $4::bigint * interval '1 millisecond')
ON CONFLICT (name, partition) DO UPDATE
    SET holder = EXCLUDED.holder,
        fence = CASE
            WHEN l.holder = EXCLUDED.holder AND l.expires_at > now() THEN l.fence
            ELSE l.fence + 1
        END,
        expires_at = EXCLUDED.expires_at
    WHERE l.holder IS NULL OR l.expires_at <= now() OR l.holder = EXCLUDED.holder
RETURNING fence
