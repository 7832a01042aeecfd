//! Read models, each fed by its own projection: the order list, customer statistics and
//! daily sales.
//!
//! Here they are kept in memory, each written by a `#[projection]`, for the application on the
//! in-memory store, and rebuilt from the event store when it starts (the projections'
//! checkpoints are in memory too). On PostgreSQL the same read models are tables
//! ([`pg_read_model`](crate::pg_read_model)); [`ReadModels`] queries either. Each projection
//! remembers, per stream, the version of the last event it applied and skips an event of that
//! stream at or below it, so the at-least-once delivery of the runtime applies every event
//! exactly once, a replayed dead letter included.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use factum::personal::Personal;
use factum::{BoxError, RecordedEvent, StreamId, projection};
use serde::Serialize;

use crate::domain::order::{OrderCancelled, OrderPaid, OrderPlaced, OrderShipped};
use crate::domain::payment::{PaymentCaptured, PaymentRefunded};
use crate::domain::total_cents;
use crate::pg_read_model::PgReadModels;

/// One row of the order list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OrderSummary {
    /// The order.
    pub order_id: String,
    /// Who placed it.
    pub customer_id: String,
    /// `placed`, `paid`, `shipped` or `cancelled`.
    pub status: String,
    /// Its total, in cents.
    pub total_cents: u64,
    /// Its currency.
    pub currency: String,
    /// The carrier's tracking number, once shipped.
    pub tracking: Option<String>,
    /// Why it was cancelled, if it was.
    pub cancel_reason: Option<String>,
    /// The customer's name, when the order gave one: `{"$erased": true}` once the customer
    /// was forgotten (and the read model rebuilt).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_name: Option<Personal<String>>,
}

/// What one customer ordered and spent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CustomerStats {
    /// The customer.
    pub customer_id: String,
    /// Orders placed, cancelled ones included.
    pub order_count: u64,
    /// Money captured and not refunded, in cents, per currency.
    pub total_spent_cents: BTreeMap<String, u64>,
}

/// Sales of one day in one currency: payments captured, less refunds, by the day they were
/// recorded (UTC).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DailySales {
    /// The day, `YYYY-MM-DD`.
    pub day: String,
    /// The currency.
    pub currency: String,
    /// Payments captured that day.
    pub payments: u64,
    /// Refunds made that day.
    pub refunds: u64,
    /// Captured minus refunded, in cents.
    pub net_cents: i64,
}

/// Projection names.
pub const ORDER_LIST: &str = "order_list";
/// Projection names.
pub const CUSTOMER_STATS: &str = "customer_stats";
/// Projection names.
pub const DAILY_SALES: &str = "daily_sales";
/// Every read model's projection, in the order they are registered and rebuilt.
pub const READ_MODELS: [&str; 3] = [ORDER_LIST, CUSTOMER_STATS, DAILY_SALES];

/// Where the application reads its read models from: memory or the store's tables.
#[derive(Clone, Debug)]
pub enum ReadModels {
    /// In memory, written by [`MemoryReadModels`]' projections.
    Memory(MemoryReadModels),
    /// In PostgreSQL tables, written by [`PgReadModels`]' transactional projections.
    Postgres(PgReadModels),
}

// ANCHOR: page
/// A page of a list: the rows after the key `after` (none: from the first), at most
/// `limit` of them (none: all), in the list's order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Page<'a> {
    /// The key of the last row of the previous page: an order or customer id, or
    /// `DAY/CURRENCY` for the daily sales.
    pub after: Option<&'a str>,
    /// The most rows to return.
    pub limit: Option<usize>,
}

impl Page<'_> {
    /// Every row.
    pub const ALL: Page<'static> = Page {
        after: None,
        limit: None,
    };
}

/// The `(day, currency)` key of a daily sales cursor `DAY/CURRENCY`, such as
/// `2026-03-01/EUR`.
pub fn sales_key(cursor: &str) -> Result<(&str, &str), BoxError> {
    cursor
        .split_once('/')
        .filter(|(day, _)| chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").is_ok())
        .ok_or_else(|| {
            format!("the daily sales cursor `{cursor}` is not DAY/CURRENCY, such as 2026-03-01/EUR")
                .into()
        })
}

/// The rows of `rows` after `after`, at most `limit`.
fn page_of<K: Ord, V: Clone>(
    rows: &BTreeMap<K, V>,
    after: Option<&K>,
    limit: Option<usize>,
) -> Vec<V> {
    let range = match after {
        Some(after) => rows.range((Bound::Excluded(after), Bound::Unbounded)),
        None => rows.range(..),
    };
    range
        .map(|(_, v)| v.clone())
        .take(limit.unwrap_or(usize::MAX))
        .collect()
}
// ANCHOR_END: page

impl ReadModels {
    /// Every order, by id.
    pub async fn order_list(&self) -> Result<Vec<OrderSummary>, BoxError> {
        self.order_page(Page::ALL).await
    }

    /// A page of the orders, by id.
    pub async fn order_page(&self, page: Page<'_>) -> Result<Vec<OrderSummary>, BoxError> {
        match self {
            Self::Memory(m) => {
                let after = page.after.map(str::to_owned);
                Ok(m.orders
                    .read(|rows| page_of(rows, after.as_ref(), page.limit)))
            }
            Self::Postgres(pg) => pg.order_page(page).await,
        }
    }

    /// One order.
    pub async fn order(&self, order_id: &str) -> Result<Option<OrderSummary>, BoxError> {
        match self {
            Self::Memory(m) => Ok(m.orders.read(|rows| rows.get(order_id).cloned())),
            Self::Postgres(pg) => pg.order(order_id).await,
        }
    }

    /// Every customer, by id.
    pub async fn customer_stats(&self) -> Result<Vec<CustomerStats>, BoxError> {
        self.customer_page(Page::ALL).await
    }

    /// A page of the customers, by id.
    pub async fn customer_page(&self, page: Page<'_>) -> Result<Vec<CustomerStats>, BoxError> {
        match self {
            Self::Memory(m) => {
                let after = page.after.map(str::to_owned);
                Ok(m.customers
                    .read(|stats| page_of(stats, after.as_ref(), page.limit)))
            }
            Self::Postgres(pg) => pg.customer_page(page).await,
        }
    }

    /// Every day and currency, oldest first.
    pub async fn daily_sales(&self) -> Result<Vec<DailySales>, BoxError> {
        self.daily_sales_page(Page::ALL).await
    }

    /// A page of the days and currencies, oldest first; `after` is `DAY/CURRENCY`.
    pub async fn daily_sales_page(&self, page: Page<'_>) -> Result<Vec<DailySales>, BoxError> {
        match self {
            Self::Memory(m) => {
                let after = match page.after {
                    Some(cursor) => {
                        let (day, currency) = sales_key(cursor)?;
                        Some((day.to_owned(), currency.to_owned()))
                    }
                    None => None,
                };
                Ok(m.sales
                    .read(|days| page_of(days, after.as_ref(), page.limit)))
            }
            Self::Postgres(pg) => pg.daily_sales_page(page).await,
        }
    }
}

/// The read models in memory: the three projections that write them. Cloning shares them.
#[derive(Clone, Debug, Default)]
pub struct MemoryReadModels {
    /// The order list.
    pub orders: OrderList,
    /// Customer statistics.
    pub customers: Customers,
    /// Daily sales.
    pub sales: Sales,
}

impl MemoryReadModels {
    /// Empty read models.
    pub fn new() -> Self {
        Self::default()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each model is changed by one handler at a time, which leaves it whole even if it
    // panicked half-way through (it only inserts and adds).
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

// ANCHOR: memory_projection
/// A model held in memory and, per stream, the version of the last event applied to it.
/// Cloning shares it.
///
/// Per stream rather than one global position: the runtime delivers each stream in order,
/// but not the streams in one global order. A parked event replayed after a fix sits below
/// the positions of other streams' events applied meanwhile, and above its own stream's last
/// applied version. (Each event type read here decodes to one event per stored event.)
#[derive(Debug, Default)]
pub struct Guarded<M>(Arc<Mutex<Applied<M>>>);

#[derive(Debug, Default)]
struct Applied<M> {
    model: M,
    versions: HashMap<StreamId, u64>,
}

impl<M> Clone for Guarded<M> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<M: Default> Guarded<M> {
    /// Applies `change` for `recorded`, unless an event of its stream at or above its version
    /// was applied already (it is delivered again).
    fn apply(&self, recorded: &RecordedEvent, change: impl FnOnce(&mut M)) {
        let mut applied = lock(&self.0);
        let last = applied.versions.get(&recorded.stream_id).copied();
        if last.is_some_and(|version| recorded.stream_version <= version) {
            return;
        }
        change(&mut applied.model);
        applied
            .versions
            .insert(recorded.stream_id.clone(), recorded.stream_version);
    }

    /// Reads the model.
    fn read<T>(&self, read: impl FnOnce(&M) -> T) -> T {
        read(&lock(&self.0).model)
    }

    /// Empties the model, for a rebuild.
    fn clear(&self) {
        *lock(&self.0) = Applied::default();
    }
}
// ANCHOR_END: memory_projection

// ANCHOR: order_list
/// The order list: one denormalised row per order.
#[derive(Clone, Debug, Default)]
pub struct OrderList(Guarded<BTreeMap<String, OrderSummary>>);

#[projection(name = "order_list")]
impl OrderList {
    async fn placed(&self, e: &OrderPlaced, recorded: &RecordedEvent) {
        self.0.apply(recorded, |rows| {
            let row = OrderSummary {
                order_id: e.order_id.clone(),
                customer_id: e.customer_id.clone(),
                status: "placed".into(),
                total_cents: total_cents(&e.lines),
                currency: e.currency.clone(),
                tracking: None,
                cancel_reason: None,
                customer_name: e.customer_name.clone(),
            };
            rows.insert(e.order_id.clone(), row);
        });
    }

    async fn paid(&self, e: &OrderPaid, recorded: &RecordedEvent) {
        self.update(recorded, &e.order_id, |row| row.status = "paid".into());
    }

    async fn shipped(&self, e: &OrderShipped, recorded: &RecordedEvent) {
        self.update(recorded, &e.order_id, |row| {
            row.status = "shipped".into();
            row.tracking = Some(e.tracking.clone());
        });
    }

    async fn cancelled(&self, e: &OrderCancelled, recorded: &RecordedEvent) {
        self.update(recorded, &e.order_id, |row| {
            row.status = "cancelled".into();
            row.cancel_reason = Some(e.reason.clone());
        });
    }

    #[reset]
    async fn clear(&self) {
        self.0.clear();
    }
}
// ANCHOR_END: order_list

impl OrderList {
    fn update(&self, recorded: &RecordedEvent, order_id: &str, f: impl FnOnce(&mut OrderSummary)) {
        self.0.apply(recorded, |rows| {
            if let Some(row) = rows.get_mut(order_id) {
                f(row);
            }
        });
    }

    /// Reads the rows, by order id.
    pub fn read<T>(&self, read: impl FnOnce(&BTreeMap<String, OrderSummary>) -> T) -> T {
        self.0.read(read)
    }
}

/// What [`Customers`] keeps: the statistics, and which customer placed each order.
#[derive(Debug, Default)]
pub struct CustomerModel {
    stats: BTreeMap<String, CustomerStats>,
    customer_of: BTreeMap<String, String>,
}

/// Customer statistics. Payments name orders, not customers, so it also keeps which
/// customer placed each order.
#[derive(Clone, Debug, Default)]
pub struct Customers(Guarded<CustomerModel>);

#[projection(name = "customer_stats")]
impl Customers {
    async fn placed(&self, e: &OrderPlaced, recorded: &RecordedEvent) {
        self.0.apply(recorded, |model| {
            let stats = model
                .stats
                .entry(e.customer_id.clone())
                .or_insert_with(|| CustomerStats {
                    customer_id: e.customer_id.clone(),
                    ..CustomerStats::default()
                });
            stats.order_count += 1;
            model
                .customer_of
                .insert(e.order_id.clone(), e.customer_id.clone());
        });
    }

    async fn captured(&self, e: &PaymentCaptured, recorded: &RecordedEvent) {
        self.spent(recorded, &e.order_id, &e.currency, e.amount_cents, 0);
    }

    async fn refunded(&self, e: &PaymentRefunded, recorded: &RecordedEvent) {
        self.spent(recorded, &e.order_id, &e.currency, 0, e.amount_cents);
    }

    #[reset]
    async fn clear(&self) {
        self.0.clear();
    }
}

impl Customers {
    /// Adds `add` and takes `sub` from the spending of the order's customer.
    fn spent(&self, recorded: &RecordedEvent, order_id: &str, currency: &str, add: u64, sub: u64) {
        self.0.apply(recorded, |model| {
            let Some(stats) = model
                .customer_of
                .get(order_id)
                .and_then(|c| model.stats.get_mut(c))
            else {
                return;
            };
            let spent = stats
                .total_spent_cents
                .entry(currency.to_owned())
                .or_default();
            *spent = spent.saturating_add(add).saturating_sub(sub);
        });
    }

    /// Reads the statistics, by customer id.
    pub fn read<T>(&self, read: impl FnOnce(&BTreeMap<String, CustomerStats>) -> T) -> T {
        self.0.read(|model| read(&model.stats))
    }
}

/// Daily sales, by day (UTC, as each payment or refund was recorded) and currency.
#[derive(Clone, Debug, Default)]
pub struct Sales(Guarded<BTreeMap<(String, String), DailySales>>);

#[projection(name = "daily_sales")]
impl Sales {
    async fn captured(&self, e: &PaymentCaptured, recorded: &RecordedEvent) {
        self.add(recorded, &e.currency, (1, 0), cents(e.amount_cents));
    }

    async fn refunded(&self, e: &PaymentRefunded, recorded: &RecordedEvent) {
        self.add(recorded, &e.currency, (0, 1), -cents(e.amount_cents));
    }

    #[reset]
    async fn clear(&self) {
        self.0.clear();
    }
}

impl Sales {
    /// Adds `(payments, refunds)` and `net` cents to the day `recorded` was recorded on.
    fn add(
        &self,
        recorded: &RecordedEvent,
        currency: &str,
        (payments, refunds): (u64, u64),
        net: i64,
    ) {
        let day = recorded.recorded_at.format("%Y-%m-%d").to_string();
        self.0.apply(recorded, |days| {
            let row = days
                .entry((day.clone(), currency.to_owned()))
                .or_insert_with(|| DailySales {
                    day,
                    currency: currency.to_owned(),
                    ..DailySales::default()
                });
            row.payments += payments;
            row.refunds += refunds;
            row.net_cents = row.net_cents.saturating_add(net);
        });
    }

    /// Reads the days, by day and currency.
    pub fn read<T>(&self, read: impl FnOnce(&BTreeMap<(String, String), DailySales>) -> T) -> T {
        self.0.read(read)
    }
}

fn cents(amount: u64) -> i64 {
    i64::try_from(amount).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use factum::projection::{FailurePolicy, ProjectionOptions, ProjectionRunner};
    use factum::store::NewEvent;
    use factum::{EventStore, ExpectedVersion, MemoryStore, Metadata, Projection};
    use uuid::Uuid;

    use super::*;
    use crate::domain::Line;

    /// The order list, failing on one chosen event until it is healed (as a bug fixed and
    /// redeployed would).
    #[derive(Debug, Default)]
    struct Flaky {
        orders: OrderList,
        poison: Arc<Mutex<Option<Uuid>>>,
    }

    impl Projection for Flaky {
        fn name(&self) -> &str {
            "flaky_order_list"
        }

        fn event_types(&self) -> Vec<String> {
            self.orders.event_types()
        }

        async fn handle(&self, event: &RecordedEvent) -> Result<(), BoxError> {
            if *lock(&self.poison) == Some(event.event_id) {
                return Err(format!("cannot apply the event at {}", event.position).into());
            }
            self.orders.handle(event).await
        }

        async fn reset(&self) -> Result<(), BoxError> {
            self.orders.reset().await
        }
    }

    fn placed(order_id: &str) -> NewEvent {
        let event = OrderPlaced {
            order_id: order_id.into(),
            customer_id: "c-1".into(),
            lines: vec![Line {
                sku: "sku-1".into(),
                quantity: 1,
                unit_price_cents: 500,
            }],
            currency: "EUR".into(),
            customer_name: None,
        };
        NewEvent::from_event(&event, Metadata::default()).expect("encode")
    }

    fn paid(order_id: &str) -> NewEvent {
        let event = OrderPaid {
            order_id: order_id.into(),
            amount_cents: 500,
        };
        NewEvent::from_event(&event, Metadata::default()).expect("encode")
    }

    fn shipped(order_id: &str) -> NewEvent {
        let event = OrderShipped {
            order_id: order_id.into(),
            carrier: "post".into(),
            tracking: "t-1".into(),
        };
        NewEvent::from_event(&event, Metadata::default()).expect("encode")
    }

    async fn append(store: &MemoryStore, stream: &str, event: NewEvent) -> u64 {
        let stream = StreamId::parse(stream).expect("stream");
        store
            .append(&stream, ExpectedVersion::Any, &[event])
            .await
            .expect("append")
            .last_position
    }

    fn status(orders: &OrderList, order_id: &str) -> Option<String> {
        orders.read(|rows| rows.get(order_id).map(|row| row.status.clone()))
    }

    /// An event delivered again (as after a crash before the checkpoint moved) changes
    /// nothing: the guard skips it by its stream version.
    #[tokio::test]
    async fn an_event_delivered_twice_is_applied_once() {
        let store = MemoryStore::new();
        append(&store, "order-a", placed("a")).await;
        append(&store, "order-a", paid("a")).await;
        let events = all(&store).await;
        let customers = Customers::default();
        for event in events.iter().chain(&events) {
            customers.handle(event).await.expect("handled");
        }
        let orders = customers.read(|stats| stats["c-1"].order_count);
        assert_eq!(orders, 1, "the order was counted once");
    }

    async fn all(store: &MemoryStore) -> Vec<RecordedEvent> {
        store
            .read_all(&factum::store::ReadAll::after(0))
            .await
            .expect("read_all")
    }

    /// An event parked while later events of other streams were applied is applied when
    /// replayed: it sits below their positions, but above its own stream's last version.
    #[tokio::test]
    async fn a_replayed_parked_event_is_applied() {
        let store = MemoryStore::new();
        let flaky = Flaky::default();
        let orders = flaky.orders.clone();
        let healing = Arc::clone(&flaky.poison);
        let poison = paid("a");
        *lock(&healing) = Some(poison.event_id);
        let running = ProjectionRunner::new(store.clone())
            .register(
                flaky,
                ProjectionOptions::new()
                    .poll_interval(Duration::from_millis(10))
                    .failure(
                        FailurePolicy::park_after(2)
                            .backoff(Duration::from_millis(1), Duration::from_millis(1)),
                    ),
            )
            .start();
        append(&store, "order-a", placed("a")).await;
        append(&store, "order-b", placed("b")).await;
        append(&store, "order-a", poison).await;
        append(&store, "order-b", paid("b")).await;
        let head = append(&store, "order-b", shipped("b")).await;
        let patience = Duration::from_secs(60);
        tokio::time::timeout(patience, running.wait_for("flaky_order_list", head))
            .await
            .expect("the projection reaches the head")
            .expect("the projection runs");
        let parked = running.parked("flaky_order_list").await.expect("parked");
        assert_eq!(parked.len(), 1, "{parked:?}");
        assert_eq!(status(&orders, "a").as_deref(), Some("placed"));
        assert_eq!(status(&orders, "b").as_deref(), Some("shipped"));

        *lock(&healing) = None;
        running
            .replay_parked("flaky_order_list", None)
            .await
            .expect("replay");
        tokio::time::timeout(patience, async {
            while !running
                .parked("flaky_order_list")
                .await
                .expect("parked")
                .is_empty()
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the parked event is replayed");
        assert_eq!(
            status(&orders, "a").as_deref(),
            Some("paid"),
            "the replayed event was applied, not skipped"
        );
        running.shutdown().await.expect("clean shutdown");
    }
}
