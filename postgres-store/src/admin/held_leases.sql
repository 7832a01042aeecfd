-- The live leases of $1 held by others than $2 (of the partitions in $3, or all when NULL),
-- locked, with how long each has left.
SELECT partition, extract(epoch FROM expires_at - now())::float8 AS left_secs
FROM __SCHEMA__.leases
WHERE name = $1 AND holder IS NOT NULL AND holder <> $2 AND expires_at > now()
  AND ($3::integer[] IS NULL OR partition = ANY ($3))
FOR UPDATE
