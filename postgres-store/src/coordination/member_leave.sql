DELETE FROM __SCHEMA__.members WHERE name = $1 AND member = $2
