-- $1 order id, $2 customer id, $3 total in cents, $4 currency.
INSERT INTO order_list (order_id, customer_id, status, total_cents, currency)
VALUES ($1, $2, 'placed', $3, $4)
ON CONFLICT (order_id) DO UPDATE
SET customer_id = EXCLUDED.customer_id,
    status = EXCLUDED.status,
    total_cents = EXCLUDED.total_cents,
    currency = EXCLUDED.currency,
    tracking = NULL,
    cancel_reason = NULL
