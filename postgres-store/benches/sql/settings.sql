SELECT name, current_setting(name)
FROM pg_settings
WHERE name IN ('shared_buffers', 'fsync', 'synchronous_commit', 'wal_level', 'max_wal_size',
               'work_mem', 'max_connections', 'wal_sync_method', 'full_page_writes',
               'checkpoint_timeout')
ORDER BY name
