-- Hands the leases of $1 held by $2 back: the next holder gets the next fence.
UPDATE __SCHEMA__.leases SET holder = NULL WHERE name = $1 AND holder = $2
