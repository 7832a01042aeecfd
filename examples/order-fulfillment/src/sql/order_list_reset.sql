DELETE FROM __SCHEMA__.order_list
