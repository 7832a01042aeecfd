-- Gives the checkpoints of $1 the fence of its lease of holder $2: a former holder's save
-- (with an older fence) fails from now on.
UPDATE __SCHEMA__.checkpoints AS c
SET fence = l.fence
FROM __SCHEMA__.leases AS l
WHERE c.name = $1 AND l.name = c.name AND l.partition = c.partition AND l.holder = $2
  AND c.fence < l.fence
