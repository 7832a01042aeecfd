-- The leases of $1 that holder $2 still holds (live), locked.
SELECT partition, fence FROM __SCHEMA__.leases
WHERE name = $1 AND holder = $2 AND expires_at > now()
FOR UPDATE
