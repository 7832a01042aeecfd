DELETE FROM __SCHEMA__.customer_spent;
DELETE FROM __SCHEMA__.customer_stats;
DELETE FROM __SCHEMA__.customer_orders;
