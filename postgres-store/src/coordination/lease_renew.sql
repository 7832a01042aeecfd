UPDATE __SCHEMA__.leases
SET expires_at = now() + $5::bigint * interval '1 millisecond'
WHERE name = $1 AND partition = $2 AND holder = $3 AND fence = $4 AND expires_at > now()
