SELECT position, fence FROM __SCHEMA__.checkpoints WHERE name = $1 AND partition = $2
