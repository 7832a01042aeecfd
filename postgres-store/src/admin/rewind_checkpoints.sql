-- Sets every checkpoint of $1 to 0, with a fence past its lease's: a holder's save with an
-- older fence fails, and the next holder's claim (with a later fence) takes position 0.
UPDATE __SCHEMA__.checkpoints AS c
SET position = 0, updated_at = now(),
    fence = greatest(c.fence + 1,
                     coalesce((SELECT l.fence FROM __SCHEMA__.leases AS l
                               WHERE l.name = c.name AND l.partition = c.partition), 0))
WHERE c.name = $1
