-- A page of the days and currencies after the day $1 and currency $2 (NULL: from the
-- first), at most $3 (NULL: all).
SELECT day::text AS day, currency, payments, refunds, net_cents
FROM daily_sales
WHERE $1::text IS NULL
   OR day > $1::date
   OR (day = $1::date AND currency COLLATE "C" > $2::text COLLATE "C")
ORDER BY day, currency COLLATE "C"
LIMIT $3::bigint
