DELETE FROM daily_sales
