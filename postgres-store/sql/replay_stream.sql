-- What replaying an aggregate needs: the bounds of read_stream.sql, without ids, metadata
-- and times. $2..$3: version bounds (inclusive); $4: limit (NULL: no limit). Temporal loads
-- run replay_stream_until.sql.
--
-- The bounds are read through scalar subqueries, whose values the planner does not see: every
-- plan of the prepared statement, the first custom ones as well as the generic one, is the
-- ordered index scan of `events_stream_version_key`, never a bitmap scan and a sort of a long
-- stream (docs/adr/09-lean-statements.md).
SELECT stream_version, position, event_type, schema_version, payload
FROM __SCHEMA__.events
WHERE stream_id = (SELECT $1::text)
  AND stream_version >= (SELECT $2::bigint)
  AND stream_version <= (SELECT $3::bigint)
ORDER BY stream_version
LIMIT $4
