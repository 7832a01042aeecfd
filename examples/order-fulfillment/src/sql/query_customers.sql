-- A page of the customers after the id $1 (NULL: from the first), at most $2 (NULL: all),
-- with their spending per currency (none: a single row with NULLs).
WITH page AS (
    SELECT customer_id, order_count
    FROM customer_stats
    WHERE $1::text IS NULL OR customer_id COLLATE "C" > $1::text COLLATE "C"
    ORDER BY customer_id COLLATE "C"
    LIMIT $2::bigint
)
SELECT s.customer_id, s.order_count, p.currency, p.spent_cents
FROM page AS s
LEFT JOIN customer_spent AS p USING (customer_id)
ORDER BY s.customer_id COLLATE "C", p.currency COLLATE "C"
