-- The first outcome of a command id: its row in the command log, or else an event with the
-- command's first derived id ($2), stored before the command log existed.
SELECT l.stream_id, l.version, l.outcome, l.message
FROM __SCHEMA__.command_log l
WHERE l.command_id = $1::uuid
UNION ALL
SELECT e.stream_id, e.stream_version - 1, 0::smallint, NULL::text
FROM __SCHEMA__.events e
WHERE e.event_id = $2::uuid
  AND NOT EXISTS (SELECT 1 FROM __SCHEMA__.command_log l WHERE l.command_id = $1::uuid)
LIMIT 1
