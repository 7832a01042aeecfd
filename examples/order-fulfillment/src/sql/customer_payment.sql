-- $1 order id, $2 currency, $3 cents captured, $4 cents refunded: the spending of the customer
-- who placed the order, never below zero. Nothing when the order is unknown.
INSERT INTO customer_spent (customer_id, currency, spent_cents)
SELECT customer_id, $2, greatest($3::bigint - $4::bigint, 0)
FROM customer_orders
WHERE order_id = $1
ON CONFLICT ON CONSTRAINT customer_spent_pkey DO UPDATE
SET spent_cents = greatest(customer_spent.spent_cents + $3::bigint - $4::bigint, 0)
