-- $1 order id, $2 customer id: one more order for the customer, and remember whose order it
-- is (the payments name only the order).
WITH known AS (
    INSERT INTO customer_orders (order_id, customer_id)
    VALUES ($1, $2)
    ON CONFLICT ON CONSTRAINT customer_orders_pkey DO NOTHING
    RETURNING customer_id
)
INSERT INTO customer_stats (customer_id, order_count)
SELECT customer_id, 1 FROM known
ON CONFLICT ON CONSTRAINT customer_stats_pkey DO UPDATE
SET order_count = customer_stats.order_count + 1
