-- Whether this server is a standby and, on a standby, how long ago the last replayed
-- transaction committed on the primary (NULL when none was replayed yet).
SELECT pg_is_in_recovery() AS standby,
       CASE WHEN pg_is_in_recovery()
            THEN extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8 END
           AS replay_lag
