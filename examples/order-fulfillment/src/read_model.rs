//! Read models, each fed by its own projection: the order list, customer statistics and
//! daily sales.
//!
//! Here they are kept in memory behind [`ReadModels`], for the application on the in-memory
//! store, and rebuilt from the event store when it starts (the projections' checkpoints are in
//! memory too). On PostgreSQL the same read models are tables
//! ([`pg_read_model`](crate::pg_read_model)). Each projection
//! remembers, per stream, the version of the last event it applied and skips an event of that
//! stream at or below it, so the at-least-once delivery of the runtime applies every event
//! exactly once, a replayed dead letter included.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use factum::{BoxError, EventSet, Projection, RecordedEvent, StreamId};
use serde::Serialize;

use crate::domain::order::OrderEvent;
use crate::domain::payment::PaymentEvent;
use crate::domain::total_cents;

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

/// Where the application reads its read models from.
pub trait ReadModels: Clone + Send + Sync + 'static {
    /// Every order, by id.
    fn order_list(&self) -> impl Future<Output = Result<Vec<OrderSummary>, BoxError>> + Send;
    /// One order.
    fn order(
        &self,
        order_id: &str,
    ) -> impl Future<Output = Result<Option<OrderSummary>, BoxError>> + Send;
    /// Every customer, by id.
    fn customer_stats(&self) -> impl Future<Output = Result<Vec<CustomerStats>, BoxError>> + Send;
    /// Every day and currency, oldest first.
    fn daily_sales(&self) -> impl Future<Output = Result<Vec<DailySales>, BoxError>> + Send;
}

/// Projection names.
pub const ORDER_LIST: &str = "order_list";
/// Projection names.
pub const CUSTOMER_STATS: &str = "customer_stats";
/// Projection names.
pub const DAILY_SALES: &str = "daily_sales";

/// The read models in memory. Cloning shares them.
#[derive(Clone, Debug, Default)]
pub struct MemoryReadModels {
    orders: Arc<Mutex<Applied<OrderList>>>,
    customers: Arc<Mutex<Applied<Customers>>>,
    sales: Arc<Mutex<Applied<Sales>>>,
}

impl MemoryReadModels {
    /// Empty read models.
    pub fn new() -> Self {
        Self::default()
    }

    /// The three projections that feed these read models, to register with a runner.
    pub fn projections(
        &self,
    ) -> (
        MemoryProjection<OrderList>,
        MemoryProjection<Customers>,
        MemoryProjection<Sales>,
    ) {
        (
            MemoryProjection(Arc::clone(&self.orders)),
            MemoryProjection(Arc::clone(&self.customers)),
            MemoryProjection(Arc::clone(&self.sales)),
        )
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each model is changed by one `apply` at a time, which leaves it whole even if it
    // panicked half-way through (it only inserts and adds).
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ReadModels for MemoryReadModels {
    async fn order_list(&self) -> Result<Vec<OrderSummary>, BoxError> {
        Ok(lock(&self.orders).model.0.values().cloned().collect())
    }

    async fn order(&self, order_id: &str) -> Result<Option<OrderSummary>, BoxError> {
        Ok(lock(&self.orders).model.0.get(order_id).cloned())
    }

    async fn customer_stats(&self) -> Result<Vec<CustomerStats>, BoxError> {
        Ok(lock(&self.customers)
            .model
            .stats
            .values()
            .cloned()
            .collect())
    }

    async fn daily_sales(&self) -> Result<Vec<DailySales>, BoxError> {
        Ok(lock(&self.sales).model.days.values().cloned().collect())
    }
}

/// A read model that events change.
pub trait Model: Default + Send + 'static {
    /// The projection's name.
    const NAME: &'static str;
    /// The stored event types it reads.
    const EVENT_TYPES: &'static [&'static str];
    /// Applies one event.
    fn apply(&mut self, event: &RecordedEvent) -> Result<(), BoxError>;
}

/// A model and, per stream, the version of the last event applied to it.
///
/// Per stream rather than one global position: the runtime delivers each stream in order,
/// but not the streams in one global order. A parked event replayed after a fix sits below
/// the positions of other streams' events applied meanwhile, and above its own stream's last
/// applied version.
#[derive(Debug, Default)]
struct Applied<M> {
    model: M,
    versions: HashMap<StreamId, u64>,
}

/// The projection feeding a [`Model`] held in memory.
#[derive(Debug)]
pub struct MemoryProjection<M>(Arc<Mutex<Applied<M>>>);

// ANCHOR: memory_projection
impl<M: Model> Projection for MemoryProjection<M> {
    fn name(&self) -> &str {
        M::NAME
    }

    fn event_types(&self) -> Vec<String> {
        M::EVENT_TYPES.iter().map(|t| (*t).to_owned()).collect()
    }

    async fn handle(&self, event: &RecordedEvent) -> Result<(), BoxError> {
        let mut applied = lock(&self.0);
        let last = applied.versions.get(&event.stream_id).copied();
        if last.is_some_and(|version| event.stream_version <= version) {
            return Ok(()); // delivered again
        }
        applied.model.apply(event)?;
        applied
            .versions
            .insert(event.stream_id.clone(), event.stream_version);
        Ok(())
    }

    async fn reset(&self) -> Result<(), BoxError> {
        *lock(&self.0) = Applied::default();
        Ok(())
    }
}
// ANCHOR_END: memory_projection

// ANCHOR: order_list
/// The order list: one denormalised row per order.
#[derive(Debug, Default)]
pub struct OrderList(BTreeMap<String, OrderSummary>);

impl Model for OrderList {
    const NAME: &'static str = ORDER_LIST;
    const EVENT_TYPES: &'static [&'static str] =
        &["OrderPlaced", "OrderPaid", "OrderShipped", "OrderCancelled"];

    fn apply(&mut self, event: &RecordedEvent) -> Result<(), BoxError> {
        for event in OrderEvent::decode_recorded(event)? {
            match event {
                OrderEvent::OrderPlaced(e) => {
                    let row = OrderSummary {
                        order_id: e.order_id.clone(),
                        customer_id: e.customer_id,
                        status: "placed".into(),
                        total_cents: total_cents(&e.lines),
                        currency: e.currency,
                        tracking: None,
                        cancel_reason: None,
                    };
                    self.0.insert(e.order_id, row);
                }
                OrderEvent::OrderPaid(e) => self.update(&e.order_id, |row| {
                    row.status = "paid".into();
                }),
                OrderEvent::OrderShipped(e) => self.update(&e.order_id, |row| {
                    row.status = "shipped".into();
                    row.tracking = Some(e.tracking.clone());
                }),
                OrderEvent::OrderCancelled(e) => self.update(&e.order_id, |row| {
                    row.status = "cancelled".into();
                    row.cancel_reason = Some(e.reason.clone());
                }),
            }
        }
        Ok(())
    }
}
// ANCHOR_END: order_list

impl OrderList {
    fn update(&mut self, order_id: &str, f: impl FnOnce(&mut OrderSummary)) {
        if let Some(row) = self.0.get_mut(order_id) {
            f(row);
        }
    }
}

/// Customer statistics. Payments name orders, not customers, so it also keeps which
/// customer placed each order.
#[derive(Debug, Default)]
pub struct Customers {
    stats: BTreeMap<String, CustomerStats>,
    customer_of: BTreeMap<String, String>,
}

impl Model for Customers {
    const NAME: &'static str = CUSTOMER_STATS;
    const EVENT_TYPES: &'static [&'static str] =
        &["OrderPlaced", "PaymentCaptured", "PaymentRefunded"];

    fn apply(&mut self, event: &RecordedEvent) -> Result<(), BoxError> {
        if event.stream_id.category() == "order" {
            for event in OrderEvent::decode_recorded(event)? {
                if let OrderEvent::OrderPlaced(e) = event {
                    let stats =
                        self.stats
                            .entry(e.customer_id.clone())
                            .or_insert_with(|| CustomerStats {
                                customer_id: e.customer_id.clone(),
                                ..CustomerStats::default()
                            });
                    stats.order_count += 1;
                    self.customer_of.insert(e.order_id, e.customer_id);
                }
            }
            return Ok(());
        }
        for event in PaymentEvent::decode_recorded(event)? {
            let (order_id, currency, add, sub) = match &event {
                PaymentEvent::PaymentCaptured(e) => (&e.order_id, &e.currency, e.amount_cents, 0),
                PaymentEvent::PaymentRefunded(e) => (&e.order_id, &e.currency, 0, e.amount_cents),
            };
            let Some(stats) = self
                .customer_of
                .get(order_id)
                .and_then(|c| self.stats.get_mut(c))
            else {
                continue;
            };
            let spent = stats.total_spent_cents.entry(currency.clone()).or_default();
            *spent = spent.saturating_add(add).saturating_sub(sub);
        }
        Ok(())
    }
}

/// Daily sales, by day and currency.
#[derive(Debug, Default)]
pub struct Sales {
    days: BTreeMap<(String, String), DailySales>,
}

impl Model for Sales {
    const NAME: &'static str = DAILY_SALES;
    const EVENT_TYPES: &'static [&'static str] = &["PaymentCaptured", "PaymentRefunded"];

    fn apply(&mut self, event: &RecordedEvent) -> Result<(), BoxError> {
        let day = event.recorded_at.format("%Y-%m-%d").to_string();
        for event in PaymentEvent::decode_recorded(event)? {
            let currency = match &event {
                PaymentEvent::PaymentCaptured(e) => &e.currency,
                PaymentEvent::PaymentRefunded(e) => &e.currency,
            };
            let row = self
                .days
                .entry((day.clone(), currency.clone()))
                .or_insert_with(|| DailySales {
                    day: day.clone(),
                    currency: currency.clone(),
                    ..DailySales::default()
                });
            match &event {
                PaymentEvent::PaymentCaptured(e) => {
                    row.payments += 1;
                    row.net_cents = row.net_cents.saturating_add(cents(e.amount_cents));
                }
                PaymentEvent::PaymentRefunded(e) => {
                    row.refunds += 1;
                    row.net_cents = row.net_cents.saturating_sub(cents(e.amount_cents));
                }
            }
        }
        Ok(())
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
    use factum::{EventStore, ExpectedVersion, MemoryStore, Metadata};
    use uuid::Uuid;

    use super::*;
    use crate::domain::Line;
    use crate::domain::order::{OrderPaid, OrderPlaced, OrderShipped};

    /// The order list, failing on one chosen event until it is healed (as a bug fixed and
    /// redeployed would).
    #[derive(Debug, Default)]
    struct Flaky {
        orders: OrderList,
        poison: Option<Uuid>,
    }

    impl Model for Flaky {
        const NAME: &'static str = "flaky_order_list";
        const EVENT_TYPES: &'static [&'static str] = OrderList::EVENT_TYPES;

        fn apply(&mut self, event: &RecordedEvent) -> Result<(), BoxError> {
            if self.poison == Some(event.event_id) {
                return Err(format!("cannot apply the event at {}", event.position).into());
            }
            self.orders.apply(event)
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

    fn status(applied: &Mutex<Applied<Flaky>>, order_id: &str) -> Option<String> {
        lock(applied)
            .model
            .orders
            .0
            .get(order_id)
            .map(|row| row.status.clone())
    }

    /// An event parked while later events of other streams were applied is applied when
    /// replayed: it sits below their positions, but above its own stream's last version.
    #[tokio::test]
    async fn a_replayed_parked_event_is_applied() {
        let store = MemoryStore::new();
        let applied = Arc::new(Mutex::new(Applied::<Flaky>::default()));
        let running = ProjectionRunner::new(store.clone())
            .register(
                MemoryProjection(Arc::clone(&applied)),
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
        let poison = paid("a");
        lock(&applied).model.poison = Some(poison.event_id);
        append(&store, "order-a", poison).await;
        append(&store, "order-b", paid("b")).await;
        let head = append(&store, "order-b", shipped("b")).await;
        let patience = Duration::from_secs(60);
        tokio::time::timeout(patience, running.wait_for(Flaky::NAME, head))
            .await
            .expect("the projection reaches the head")
            .expect("the projection runs");
        let parked = running.parked(Flaky::NAME).await.expect("parked");
        assert_eq!(parked.len(), 1, "{parked:?}");
        assert_eq!(status(&applied, "a").as_deref(), Some("placed"));
        assert_eq!(status(&applied, "b").as_deref(), Some("shipped"));

        lock(&applied).model.poison = None;
        running
            .replay_parked(Flaky::NAME, None)
            .await
            .expect("replay");
        tokio::time::timeout(patience, async {
            while !running
                .parked(Flaky::NAME)
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
            status(&applied, "a").as_deref(),
            Some("paid"),
            "the replayed event was applied, not skipped"
        );
        running.shutdown().await.expect("clean shutdown");
    }
}
