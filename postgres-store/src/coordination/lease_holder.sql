SELECT holder, fence FROM __SCHEMA__.leases
WHERE name = $1 AND partition = $2 AND holder IS NOT NULL AND expires_at > now()
