-- Every customer with their spending per currency (none: a single row with NULLs).
SELECT s.customer_id, s.order_count, p.currency, p.spent_cents
FROM customer_stats AS s
LEFT JOIN customer_spent AS p USING (customer_id)
ORDER BY s.customer_id COLLATE "C", p.currency COLLATE "C"
