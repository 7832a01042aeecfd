-- A page of the orders after the id $1 (NULL: from the first), at most $2 (NULL: all).
SELECT order_id, customer_id, status, total_cents, currency, tracking, cancel_reason,
       customer_name, customer_name_erased
FROM order_list
WHERE $1::text IS NULL OR order_id COLLATE "C" > $1::text COLLATE "C"
ORDER BY order_id COLLATE "C"
LIMIT $2::bigint
