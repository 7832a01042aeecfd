//! The read models in PostgreSQL tables, next to the events, for the application on
//! `PgStore`: the same order list, customer statistics and daily sales as
//! [`MemoryReadModels`](crate::read_model::MemoryReadModels), written by transactional
//! projections.
//!
//! Each projection is a [`PgProjection`] run inside [`Transactional`]: every event's changes
//! and the projection's checkpoint commit in one transaction, so a crash at any point neither
//! loses nor repeats an event, and a restart resumes from the checkpoint instead of replaying
//! the store. The SQL is in `src/sql/*.sql`, with `__SCHEMA__` standing for the store's schema.

use std::sync::Arc;

use deadpool_postgres::Pool;
use factum::{BoxError, EventSet, RecordedEvent};
use factum_postgres::{PgProjection, PgStore, Transactional};
use tokio_postgres::Transaction;
use tokio_postgres::types::ToSql;

use crate::domain::order::OrderEvent;
use crate::domain::payment::PaymentEvent;
use crate::domain::total_cents;
use crate::read_model::{
    CUSTOMER_STATS, CustomerStats, Customers, DAILY_SALES, DailySales, Model, ORDER_LIST,
    OrderList, OrderSummary, ReadModels, Sales,
};

/// Every statement, with the schema filled in once.
#[derive(Debug)]
struct Sql {
    schema: String,
    order_placed: String,
    order_status: String,
    order_list_reset: String,
    customer_order_placed: String,
    customer_payment: String,
    customer_stats_reset: String,
    daily_sale: String,
    daily_sales_reset: String,
    query_orders: String,
    query_order: String,
    query_customers: String,
    query_daily_sales: String,
}

impl Sql {
    fn new(store: &PgStore) -> Self {
        let schema = store.config().schema.quoted();
        let r = |template: &str| template.replace("__SCHEMA__", &schema);
        Self {
            schema: r(include_str!("sql/schema.sql")),
            order_placed: r(include_str!("sql/order_placed.sql")),
            order_status: r(include_str!("sql/order_status.sql")),
            order_list_reset: r(include_str!("sql/order_list_reset.sql")),
            customer_order_placed: r(include_str!("sql/customer_order_placed.sql")),
            customer_payment: r(include_str!("sql/customer_payment.sql")),
            customer_stats_reset: r(include_str!("sql/customer_stats_reset.sql")),
            daily_sale: r(include_str!("sql/daily_sale.sql")),
            daily_sales_reset: r(include_str!("sql/daily_sales_reset.sql")),
            query_orders: r(include_str!("sql/query_orders.sql")),
            query_order: r(include_str!("sql/query_order.sql")),
            query_customers: r(include_str!("sql/query_customers.sql")),
            query_daily_sales: r(include_str!("sql/query_daily_sales.sql")),
        }
    }
}

/// The event types of the in-memory model of the same read model: both read the same events.
fn event_types<M: Model>() -> Vec<String> {
    M::EVENT_TYPES.iter().map(|t| (*t).to_owned()).collect()
}

/// Cents as a `bigint`.
fn db_cents(cents: u64) -> Result<i64, BoxError> {
    i64::try_from(cents).map_err(|_| format!("{cents} cents do not fit a bigint column").into())
}

/// A `bigint` count or amount read back, never negative (the tables' checks say so).
fn from_db(value: i64) -> Result<u64, BoxError> {
    u64::try_from(value).map_err(|_| format!("negative value {value} in a read model").into())
}

/// The read models in the store's schema: queries over the tables, and the projections
/// that write them. Cloning shares the pool.
#[derive(Clone, Debug)]
pub struct PgReadModels {
    pool: Pool,
    sql: Arc<Sql>,
}

impl PgReadModels {
    /// The read models of `store`, in its schema. Call [`create_tables`](Self::create_tables)
    /// before the first use.
    pub fn new(store: &PgStore) -> Self {
        Self {
            pool: store.pool().clone(),
            sql: Arc::new(Sql::new(store)),
        }
    }

    /// Creates the tables when missing (the events' schema must exist: migrate the store
    /// first). Safe to run from several processes at once.
    pub async fn create_tables(&self) -> Result<(), BoxError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        tx.batch_execute(&self.sql.schema).await?;
        tx.commit().await?;
        Ok(())
    }

    // ANCHOR: pg_projections
    /// The three projections that write these tables, each wrapped in [`Transactional`] so
    /// that it commits its checkpoint with its changes. Register them with a
    /// `ProjectionRunner` whose checkpoints are `PgCoordination`'s.
    pub fn projections(
        &self,
        store: &PgStore,
    ) -> (
        Transactional<PgOrderList>,
        Transactional<PgCustomerStats>,
        Transactional<PgDailySales>,
    ) {
        (
            Transactional::new(store, PgOrderList(Arc::clone(&self.sql))),
            Transactional::new(store, PgCustomerStats(Arc::clone(&self.sql))),
            Transactional::new(store, PgDailySales(Arc::clone(&self.sql))),
        )
    }
    // ANCHOR_END: pg_projections

    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, BoxError> {
        let client = self.pool.get().await?;
        let statement = client.prepare_cached(sql).await?;
        Ok(client.query(&statement, params).await?)
    }
}

fn order_row(row: &tokio_postgres::Row) -> Result<OrderSummary, BoxError> {
    Ok(OrderSummary {
        order_id: row.try_get("order_id")?,
        customer_id: row.try_get("customer_id")?,
        status: row.try_get("status")?,
        total_cents: from_db(row.try_get("total_cents")?)?,
        currency: row.try_get("currency")?,
        tracking: row.try_get("tracking")?,
        cancel_reason: row.try_get("cancel_reason")?,
    })
}

impl ReadModels for PgReadModels {
    async fn order_list(&self) -> Result<Vec<OrderSummary>, BoxError> {
        self.query(&self.sql.query_orders, &[])
            .await?
            .iter()
            .map(order_row)
            .collect()
    }

    async fn order(&self, order_id: &str) -> Result<Option<OrderSummary>, BoxError> {
        self.query(&self.sql.query_order, &[&order_id])
            .await?
            .first()
            .map(order_row)
            .transpose()
    }

    async fn customer_stats(&self) -> Result<Vec<CustomerStats>, BoxError> {
        let mut customers: Vec<CustomerStats> = Vec::new();
        for row in self.query(&self.sql.query_customers, &[]).await? {
            let customer_id: String = row.try_get("customer_id")?;
            if customers
                .last()
                .is_none_or(|c| c.customer_id != customer_id)
            {
                customers.push(CustomerStats {
                    customer_id,
                    order_count: from_db(row.try_get("order_count")?)?,
                    ..CustomerStats::default()
                });
            }
            let currency: Option<String> = row.try_get("currency")?;
            let spent: Option<i64> = row.try_get("spent_cents")?;
            if let (Some(currency), Some(spent), Some(customer)) =
                (currency, spent, customers.last_mut())
            {
                customer.total_spent_cents.insert(currency, from_db(spent)?);
            }
        }
        Ok(customers)
    }

    async fn daily_sales(&self) -> Result<Vec<DailySales>, BoxError> {
        self.query(&self.sql.query_daily_sales, &[])
            .await?
            .iter()
            .map(|row| {
                Ok(DailySales {
                    day: row.try_get("day")?,
                    currency: row.try_get("currency")?,
                    payments: from_db(row.try_get("payments")?)?,
                    refunds: from_db(row.try_get("refunds")?)?,
                    net_cents: row.try_get("net_cents")?,
                })
            })
            .collect()
    }
}

// ANCHOR: pg_order_list
/// The projection writing the `order_list` table.
#[derive(Debug)]
pub struct PgOrderList(Arc<Sql>);

impl PgProjection for PgOrderList {
    fn name(&self) -> &str {
        ORDER_LIST
    }

    fn event_types(&self) -> Vec<String> {
        event_types::<OrderList>()
    }

    async fn handle(&self, tx: &Transaction<'_>, event: &RecordedEvent) -> Result<(), BoxError> {
        let sql = &self.0;
        let none: Option<&str> = None;
        for event in OrderEvent::decode_recorded(event)? {
            match event {
                OrderEvent::OrderPlaced(e) => {
                    let total = db_cents(total_cents(&e.lines))?;
                    tx.execute(
                        &sql.order_placed,
                        &[&e.order_id, &e.customer_id, &total, &e.currency],
                    )
                    .await?;
                }
                OrderEvent::OrderPaid(e) => {
                    tx.execute(&sql.order_status, &[&e.order_id, &"paid", &none, &none])
                        .await?;
                }
                OrderEvent::OrderShipped(e) => {
                    let tracking = Some(e.tracking.as_str());
                    tx.execute(
                        &sql.order_status,
                        &[&e.order_id, &"shipped", &tracking, &none],
                    )
                    .await?;
                }
                OrderEvent::OrderCancelled(e) => {
                    let reason = Some(e.reason.as_str());
                    tx.execute(
                        &sql.order_status,
                        &[&e.order_id, &"cancelled", &none, &reason],
                    )
                    .await?;
                }
            }
        }
        Ok(())
    }

    async fn reset(&self, tx: &Transaction<'_>) -> Result<(), BoxError> {
        tx.batch_execute(&self.0.order_list_reset).await?;
        Ok(())
    }
}
// ANCHOR_END: pg_order_list

/// The projection writing the `customer_stats`, `customer_spent` and `customer_orders`
/// tables.
#[derive(Debug)]
pub struct PgCustomerStats(Arc<Sql>);

impl PgProjection for PgCustomerStats {
    fn name(&self) -> &str {
        CUSTOMER_STATS
    }

    fn event_types(&self) -> Vec<String> {
        event_types::<Customers>()
    }

    async fn handle(&self, tx: &Transaction<'_>, event: &RecordedEvent) -> Result<(), BoxError> {
        let sql = &self.0;
        if event.stream_id.category() == "order" {
            for event in OrderEvent::decode_recorded(event)? {
                if let OrderEvent::OrderPlaced(e) = event {
                    tx.execute(&sql.customer_order_placed, &[&e.order_id, &e.customer_id])
                        .await?;
                }
            }
            return Ok(());
        }
        for event in PaymentEvent::decode_recorded(event)? {
            let (order_id, currency, captured, refunded) = match &event {
                PaymentEvent::PaymentCaptured(e) => (&e.order_id, &e.currency, e.amount_cents, 0),
                PaymentEvent::PaymentRefunded(e) => (&e.order_id, &e.currency, 0, e.amount_cents),
            };
            let (captured, refunded) = (db_cents(captured)?, db_cents(refunded)?);
            tx.execute(
                &sql.customer_payment,
                &[order_id, currency, &captured, &refunded],
            )
            .await?;
        }
        Ok(())
    }

    async fn reset(&self, tx: &Transaction<'_>) -> Result<(), BoxError> {
        tx.batch_execute(&self.0.customer_stats_reset).await?;
        Ok(())
    }
}

/// The projection writing the `daily_sales` table.
#[derive(Debug)]
pub struct PgDailySales(Arc<Sql>);

impl PgProjection for PgDailySales {
    fn name(&self) -> &str {
        DAILY_SALES
    }

    fn event_types(&self) -> Vec<String> {
        event_types::<Sales>()
    }

    async fn handle(&self, tx: &Transaction<'_>, event: &RecordedEvent) -> Result<(), BoxError> {
        let day = event.recorded_at.format("%Y-%m-%d").to_string();
        for event in PaymentEvent::decode_recorded(event)? {
            let (currency, payments, refunds, net) = match &event {
                PaymentEvent::PaymentCaptured(e) => {
                    (&e.currency, 1i64, 0i64, db_cents(e.amount_cents)?)
                }
                PaymentEvent::PaymentRefunded(e) => (&e.currency, 0, 1, -db_cents(e.amount_cents)?),
            };
            tx.execute(
                &self.0.daily_sale,
                &[&day, currency, &payments, &refunds, &net],
            )
            .await?;
        }
        Ok(())
    }

    async fn reset(&self, tx: &Transaction<'_>) -> Result<(), BoxError> {
        tx.batch_execute(&self.0.daily_sales_reset).await?;
        Ok(())
    }
}
