SELECT day::text AS day, currency, payments, refunds, net_cents
FROM __SCHEMA__.daily_sales
ORDER BY day, currency COLLATE "C"
