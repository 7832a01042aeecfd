-- The standbys streaming from this server.
SELECT coalesce(application_name, '') AS application_name, client_addr::text AS client_addr,
       state, sync_state, extract(epoch FROM replay_lag)::float8 AS replay_lag
FROM pg_stat_replication
ORDER BY application_name, client_addr
