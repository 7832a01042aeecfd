-- $1 order id, $2 new status, $3 tracking number (kept when NULL), $4 cancel reason (kept
-- when NULL).
UPDATE order_list
SET status = $2,
    tracking = coalesce($3, tracking),
    cancel_reason = coalesce($4, cancel_reason)
WHERE order_id = $1
