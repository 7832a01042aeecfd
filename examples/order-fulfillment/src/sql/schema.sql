-- The read models of the order-fulfillment example, next to the events in the store's schema:
-- run in a `PgTransaction`, whose `search_path` is that schema, so tables are named plainly.
-- The statements name each key by its constraint (`order_list_pkey`): the multi-tenant
-- layout (schema_tenants.sql) has the same constraints with the tenant first.
-- Idempotent: run at every start, under a transaction-scoped advisory lock so that several
-- processes starting together do not race on the catalog.
SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.order_fulfillment_read_models'));

-- The order list: one denormalised row per order (projection `order_list`).
CREATE TABLE IF NOT EXISTS order_list (
    order_id      text PRIMARY KEY,
    customer_id   text NOT NULL,
    status        text NOT NULL,
    total_cents   bigint NOT NULL CHECK (total_cents >= 0),
    currency      text NOT NULL,
    tracking      text,
    cancel_reason text
);
CREATE INDEX IF NOT EXISTS order_list_customer ON order_list (customer_id);
-- The customer's name (personal data): erased once the customer is forgotten and the read
-- model rebuilt. Added to tables created before it existed.
ALTER TABLE order_list ADD COLUMN IF NOT EXISTS customer_name text;
ALTER TABLE order_list ADD COLUMN IF NOT EXISTS customer_name_erased boolean NOT NULL DEFAULT false;

-- Customer statistics (projection `customer_stats`). Payments name orders, not customers, so
-- the projection also keeps which customer placed each order.
CREATE TABLE IF NOT EXISTS customer_stats (
    customer_id text PRIMARY KEY,
    order_count bigint NOT NULL CHECK (order_count >= 0)
);
CREATE TABLE IF NOT EXISTS customer_spent (
    customer_id text NOT NULL REFERENCES customer_stats (customer_id),
    currency    text NOT NULL,
    spent_cents bigint NOT NULL CHECK (spent_cents >= 0),
    PRIMARY KEY (customer_id, currency)
);
CREATE TABLE IF NOT EXISTS customer_orders (
    order_id    text PRIMARY KEY,
    customer_id text NOT NULL
);

-- Daily sales by day (UTC) and currency (projection `daily_sales`).
CREATE TABLE IF NOT EXISTS daily_sales (
    day       date NOT NULL,
    currency  text NOT NULL,
    payments  bigint NOT NULL CHECK (payments >= 0),
    refunds   bigint NOT NULL CHECK (refunds >= 0),
    net_cents bigint NOT NULL,
    PRIMARY KEY (day, currency)
);
