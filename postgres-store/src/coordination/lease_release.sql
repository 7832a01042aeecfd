UPDATE __SCHEMA__.leases SET holder = NULL
WHERE name = $1 AND partition = $2 AND fence = $3
