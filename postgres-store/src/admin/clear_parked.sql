DELETE FROM __SCHEMA__.dead_letters WHERE name = $1
