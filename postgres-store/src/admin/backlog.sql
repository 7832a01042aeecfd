-- $1 a checkpoint, $2 the most events to count: how many committed events lie after it (of
-- every stream and type), and how long ago the first of them was recorded.
SELECT (SELECT count(*) FROM (SELECT 1 FROM __SCHEMA__.events
                              WHERE position > $1 LIMIT $2) AS e) AS events,
       (SELECT extract(epoch FROM now() - recorded_at)::float8 FROM __SCHEMA__.events
        WHERE position > $1 ORDER BY position LIMIT 1) AS oldest
