-- $1 day (YYYY-MM-DD, UTC), $2 currency, $3 1 for a payment (else 0), $4 1 for a refund (else
-- 0), $5 signed amount in cents.
INSERT INTO daily_sales (day, currency, payments, refunds, net_cents)
VALUES ($1::text::date, $2, $3, $4, $5)
ON CONFLICT ON CONSTRAINT daily_sales_pkey DO UPDATE
SET payments = daily_sales.payments + EXCLUDED.payments,
    refunds = daily_sales.refunds + EXCLUDED.refunds,
    net_cents = daily_sales.net_cents + EXCLUDED.net_cents
