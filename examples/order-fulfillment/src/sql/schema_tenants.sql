-- The read models of the order-fulfillment example on a multi-tenant store: the tables of
-- schema.sql with a `tenant` column first in every key, so two tenants' orders or customers
-- with one id are two rows. The column is the one `tenant_policy` adds (the tenant bound to
-- the writing transaction, never empty); the application applies that policy to each table
-- after this script, which gives it row-level security: a transaction reads and writes only
-- rows of the tenant bound to it, and none without one. The statements name each key by its
-- constraint (`order_list_pkey`), so they are the same for both layouts.
-- Idempotent, under the same advisory lock as schema.sql.
SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.order_fulfillment_read_models'));

CREATE TABLE IF NOT EXISTS order_list (
    tenant               text NOT NULL DEFAULT current_setting('factum.tenant', true)
                         CHECK (tenant <> ''),
    order_id             text NOT NULL,
    customer_id          text NOT NULL,
    status               text NOT NULL,
    total_cents          bigint NOT NULL CHECK (total_cents >= 0),
    currency             text NOT NULL,
    tracking             text,
    cancel_reason        text,
    customer_name        text,
    customer_name_erased boolean NOT NULL DEFAULT false,
    CONSTRAINT order_list_pkey PRIMARY KEY (tenant, order_id)
);
CREATE INDEX IF NOT EXISTS order_list_customer ON order_list (tenant, customer_id);

CREATE TABLE IF NOT EXISTS customer_stats (
    tenant      text NOT NULL DEFAULT current_setting('factum.tenant', true)
                CHECK (tenant <> ''),
    customer_id text NOT NULL,
    order_count bigint NOT NULL CHECK (order_count >= 0),
    CONSTRAINT customer_stats_pkey PRIMARY KEY (tenant, customer_id)
);
CREATE TABLE IF NOT EXISTS customer_spent (
    tenant      text NOT NULL DEFAULT current_setting('factum.tenant', true)
                CHECK (tenant <> ''),
    customer_id text NOT NULL,
    currency    text NOT NULL,
    spent_cents bigint NOT NULL CHECK (spent_cents >= 0),
    CONSTRAINT customer_spent_pkey PRIMARY KEY (tenant, customer_id, currency),
    FOREIGN KEY (tenant, customer_id) REFERENCES customer_stats (tenant, customer_id)
);
CREATE TABLE IF NOT EXISTS customer_orders (
    tenant      text NOT NULL DEFAULT current_setting('factum.tenant', true)
                CHECK (tenant <> ''),
    order_id    text NOT NULL,
    customer_id text NOT NULL,
    CONSTRAINT customer_orders_pkey PRIMARY KEY (tenant, order_id)
);

CREATE TABLE IF NOT EXISTS daily_sales (
    tenant    text NOT NULL DEFAULT current_setting('factum.tenant', true)
              CHECK (tenant <> ''),
    day       date NOT NULL,
    currency  text NOT NULL,
    payments  bigint NOT NULL CHECK (payments >= 0),
    refunds   bigint NOT NULL CHECK (refunds >= 0),
    net_cents bigint NOT NULL,
    CONSTRAINT daily_sales_pkey PRIMARY KEY (tenant, day, currency)
);
