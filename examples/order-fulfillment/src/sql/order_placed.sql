-- $1 order id, $2 customer id, $3 total in cents, $4 currency, $5 customer name (personal,
-- as the event decoded it), $6 whether that name was erased.
INSERT INTO order_list (order_id, customer_id, status, total_cents, currency, customer_name,
                        customer_name_erased)
VALUES ($1, $2, 'placed', $3, $4, $5, $6)
ON CONFLICT ON CONSTRAINT order_list_pkey DO UPDATE
SET customer_id = EXCLUDED.customer_id,
    status = EXCLUDED.status,
    total_cents = EXCLUDED.total_cents,
    currency = EXCLUDED.currency,
    tracking = NULL,
    cancel_reason = NULL,
    customer_name = EXCLUDED.customer_name,
    customer_name_erased = EXCLUDED.customer_name_erased
