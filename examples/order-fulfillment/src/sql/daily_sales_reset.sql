DELETE FROM __SCHEMA__.daily_sales
