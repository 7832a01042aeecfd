SELECT coalesce(max(stream_version), 0) FROM __SCHEMA__.events WHERE stream_id = $1
