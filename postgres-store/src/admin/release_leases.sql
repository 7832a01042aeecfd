-- Takes the leases of $1 (the partitions in $2, or all when NULL) from their holders: the
-- fence moves on, so a holder's next renewal or fenced checkpoint fails, and whoever takes the
-- lease next claims the checkpoint anew (as after a lost lease).
UPDATE __SCHEMA__.leases
SET holder = NULL, fence = fence + 1
WHERE name = $1 AND ($2::integer[] IS NULL OR partition = ANY ($2))
