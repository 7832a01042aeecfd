DELETE FROM order_list
