-- Byte order, the order every process computes partition assignments from.
SELECT member FROM __SCHEMA__.members
WHERE name = $1 AND expires_at > now()
ORDER BY member COLLATE "C"
