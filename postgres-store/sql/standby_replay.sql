-- On a standby: whether it still replays (false once promoted), how far it has replayed, and
-- how long ago the last transaction it replayed committed on the primary (seconds).
SELECT pg_is_in_recovery() AS in_recovery,
       pg_last_wal_replay_lsn() AS replayed,
       extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8 AS replay_age
