DELETE FROM customer_spent;
DELETE FROM customer_stats;
DELETE FROM customer_orders;
