-- What a pooled connection must not carry to its next user: advisory locks, `LISTEN`
-- channels, session settings, an open transaction.
SELECT (SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'advisory'),
       (SELECT count(*) FROM pg_listening_channels()),
       (SELECT count(*) FROM pg_settings WHERE source = 'session'),
       pg_current_xact_id_if_assigned() IS NULL
