SELECT order_id, customer_id, status, total_cents, currency, tracking, cancel_reason,
       customer_name, customer_name_erased
FROM order_list
WHERE order_id = $1
