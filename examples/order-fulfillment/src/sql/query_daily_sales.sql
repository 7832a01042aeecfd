SELECT day::text AS day, currency, payments, refunds, net_cents
FROM daily_sales
ORDER BY day, currency COLLATE "C"
