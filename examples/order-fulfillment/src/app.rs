//! The application layer: repositories, the fulfillment process and the read models over one
//! event store, and the use cases the demo and the HTTP API call.

use std::fmt;
use std::time::Duration;

use factum::coordination::ParkedEvent;
use factum::process::{CommandDispatcher, DispatchError, ProcessOptions, RunningProcessManagers};
use factum::projection::{
    FailurePolicy, HealthProblem, ProjectionOptions, RebuildProgress, RunnerOptions,
};
use factum::store::StreamRead;
use factum::{EventStore, Executed, Metadata, Repository, StreamId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::backend::{Backend, Projections};
use crate::domain::Line;
use crate::domain::inventory::{Inventory, InventoryError, ReceiveStockV1};
use crate::domain::order::{CancelOrderV1, Order, OrderError, PlaceOrderV1, PlaceOrderV2};
use crate::domain::payment::{CapturePaymentV1, Payment, PaymentError};
use crate::domain::shipment::{DispatchShipmentV1, Shipment, ShipmentError};
use crate::fulfillment::{FulfillmentCommand, ORDER_FULFILLMENT, OrderFulfillment};
use crate::read_model::{
    CUSTOMER_STATS, CustomerStats, DAILY_SALES, DailySales, ORDER_LIST, OrderSummary, ReadModels,
};

/// Why a use case failed, by what the caller can do about it.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The request is malformed or breaks a validation rule: fix it.
    #[error("{0}")]
    BadRequest(String),
    /// The order (or other thing) does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request contradicts the current state (an invariant, a concurrent change).
    #[error("{0}")]
    Conflict(String),
    /// The store or the runtime failed: try again later.
    #[error("{0}")]
    Internal(String),
}

impl AppError {
    fn from_factum<E: std::error::Error>(error: factum::Error<E>) -> Self {
        match error {
            factum::Error::Rejected(e) => AppError::Conflict(e.to_string()),
            e @ (factum::Error::InvalidCommand { .. } | factum::Error::StreamId(_)) => {
                AppError::BadRequest(e.to_string())
            }
            e @ factum::Error::Conflict { .. } => AppError::Conflict(e.to_string()),
            e @ factum::Error::Store(factum::StoreError::DuplicateEventId { .. }) => {
                AppError::Conflict(format!(
                    "{e}: the idempotency key was already used for another request"
                ))
            }
            other => AppError::Internal(other.to_string()),
        }
    }
}

impl From<factum::StoreError> for AppError {
    fn from(error: factum::StoreError) -> Self {
        AppError::Internal(error.to_string())
    }
}

impl From<factum::projection::ProjectionError> for AppError {
    fn from(error: factum::projection::ProjectionError) -> Self {
        AppError::Internal(error.to_string())
    }
}

impl From<factum::process::ProcessError> for AppError {
    fn from(error: factum::process::ProcessError) -> Self {
        AppError::Internal(error.to_string())
    }
}

impl From<factum::BoxError> for AppError {
    fn from(error: factum::BoxError) -> Self {
        AppError::Internal(error.to_string())
    }
}

// ANCHOR: idempotency
/// Namespace of the command ids derived from idempotency keys.
const IDEMPOTENCY_NAMESPACE: Uuid = Uuid::from_u128(0x8c4e_21a7_5b3d_4f10_9e62_c7d1_0a4b_3f58);

/// The command id of the request `operation` (such as `"pay"`) sent with the idempotency key
/// `key`: the same pair always gives the same id, so the repository answers a retried request
/// with the first one's outcome instead of executing it again.
pub fn command_id_for(operation: &str, key: &str) -> Uuid {
    Uuid::new_v5(
        &IDEMPOTENCY_NAMESPACE,
        format!("{operation}\n{key}").as_bytes(),
    )
}

/// Metadata for a request: its command id comes from the idempotency key, when there is one.
fn metadata(operation: &str, key: Option<&str>) -> Metadata {
    let meta = Metadata::new().actor("order-fulfillment");
    match key {
        Some(key) => meta.command_id(command_id_for(operation, key)),
        None => meta,
    }
}
// ANCHOR_END: idempotency

/// A new order, as clients send it. Without a currency it is a `PlaceOrderV1` (euros), with
/// one a `PlaceOrderV2`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewOrder {
    /// The order's id; generated when missing.
    #[serde(default)]
    pub order_id: Option<String>,
    /// Who places it.
    pub customer_id: String,
    /// What is ordered.
    pub lines: Vec<Line>,
    /// ISO 4217 code; euros when missing.
    #[serde(default)]
    pub currency: Option<String>,
}

/// What an executed command did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// The stream written to, such as `order-o-1`.
    pub stream: String,
    /// The aggregate's id.
    pub id: String,
    /// The stream's version after the command.
    pub version: u64,
    /// The types of the events it recorded.
    pub events: Vec<String>,
    /// Whether this is the recorded outcome of an earlier request with the same idempotency
    /// key, returned without executing anything.
    pub replayed: bool,
}

impl Outcome {
    fn of<A: factum::Aggregate>(executed: &Executed<A>) -> Self {
        use factum::EventSet as _;
        Self {
            stream: executed.stream_id.as_str().to_owned(),
            id: executed.stream_id.id().to_owned(),
            version: executed.version,
            events: executed
                .events
                .iter()
                .map(|e| e.event_type().to_owned())
                .collect(),
            replayed: executed.duplicate,
        }
    }
}

/// One stored event, as the history shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HistoryEntry {
    /// Its version in the stream.
    pub stream_version: u64,
    /// Its global position.
    pub position: u64,
    /// The stored type name.
    pub event_type: String,
    /// The schema version it was written with.
    pub schema_version: u32,
    /// When it was recorded.
    pub recorded_at: chrono::DateTime<chrono::Utc>,
    /// The payload, as stored.
    pub payload: serde_json::Value,
}

/// The stock of one SKU.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StockLevel {
    /// The SKU.
    pub sku: String,
    /// Units in the warehouse.
    pub on_hand: u32,
    /// Units reserved for orders.
    pub reserved: u32,
    /// Units free to reserve.
    pub available: u32,
}

/// The state of one partition of a projection or of the process manager.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WorkerHealth {
    /// The projection or process manager.
    pub name: String,
    /// The partition.
    pub partition: u32,
    /// What its worker does, such as `Running` or `Stopped`.
    pub state: String,
    /// Its saved checkpoint.
    pub checkpoint: u64,
    /// How far it is behind the last committed event, in positions (it grows while an open
    /// transaction holds the store's head back).
    pub lag_events: u64,
    /// Why it stopped, if it did.
    pub error: Option<String>,
}

/// What is wrong with the background workers, as `GET /health` reports it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum HealthIssue {
    /// Committed events have not been readable for longer than
    /// [`AppOptions::head_held_back_after`]: an open transaction in the store's database
    /// holds every worker back until it ends.
    HeadHeldBack {
        /// The last position the workers can read.
        readable: u64,
        /// The last committed position.
        committed: u64,
        /// How long, in seconds.
        held_back_seconds: f64,
        /// The transaction holding it back, when the store can tell.
        blocker: Option<BlockerInfo>,
    },
    /// A worker is behind what it can read and has made no progress.
    Stalled {
        /// The projection or process manager.
        name: String,
        /// The partition.
        partition: u32,
        /// For how long, in seconds.
        for_seconds: f64,
    },
    /// A worker stopped.
    Stopped {
        /// The projection or process manager.
        name: String,
        /// The partition.
        partition: u32,
        /// Why.
        error: String,
    },
    /// A worker keeps failing (its store or coordination store unavailable) and retries.
    Failing {
        /// The projection or process manager.
        name: String,
        /// The partition.
        partition: u32,
        /// The last failure.
        error: String,
        /// How many failures in a row.
        failures: u32,
        /// For how long, in seconds.
        for_seconds: f64,
    },
    /// Another problem, described.
    Other {
        /// What is wrong.
        description: String,
    },
}

/// The session of an open transaction holding the store's head back.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BlockerInfo {
    /// Its server process id (none for a prepared transaction).
    pub pid: Option<u32>,
    /// Its application name.
    pub application_name: Option<String>,
    /// What it does, such as `idle in transaction` (none when the store's role may not
    /// see it).
    pub state: Option<String>,
    /// How long its transaction has been open, in seconds (none when the store's role may
    /// not see it).
    pub transaction_age_seconds: Option<f64>,
}

impl From<&HealthProblem> for HealthIssue {
    fn from(problem: &HealthProblem) -> Self {
        match problem {
            HealthProblem::HeadHeldBack {
                readable,
                committed,
                for_,
                blocker,
            } => Self::HeadHeldBack {
                readable: *readable,
                committed: *committed,
                held_back_seconds: for_.as_secs_f64(),
                blocker: blocker.as_ref().map(|b| BlockerInfo {
                    pid: b.pid,
                    application_name: b.application_name.clone(),
                    state: b.state.clone(),
                    transaction_age_seconds: b.transaction_age.map(|a| a.as_secs_f64()),
                }),
            },
            HealthProblem::Stalled {
                name,
                partition,
                for_,
                ..
            } => Self::Stalled {
                name: name.clone(),
                partition: *partition,
                for_seconds: for_.as_secs_f64(),
            },
            HealthProblem::Stopped {
                name,
                partition,
                error,
            } => Self::Stopped {
                name: name.clone(),
                partition: *partition,
                error: error.clone(),
            },
            HealthProblem::Failing {
                name,
                partition,
                error,
                failures,
                for_,
            } => Self::Failing {
                name: name.clone(),
                partition: *partition,
                error: error.clone(),
                failures: *failures,
                for_seconds: for_.as_secs_f64(),
            },
            other => Self::Other {
                description: format!("{other:?}"),
            },
        }
    }
}

/// The health of the background workers.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HealthReport {
    /// Whether nothing is wrong.
    pub healthy: bool,
    /// Every partition of every projection and of the process manager.
    pub workers: Vec<WorkerHealth>,
    /// What is wrong (empty when healthy).
    pub problems: Vec<HealthIssue>,
}

/// How the background workers run.
#[derive(Clone, Debug)]
pub struct AppOptions {
    /// How often caught-up projections and the process poll the store (store notifications
    /// usually wake them sooner).
    pub poll_interval: Duration,
    /// How long a worker's lease on a partition lasts without renewal: after a crash, a new
    /// process takes over the partitions of the dead one once their leases expire (on
    /// PostgreSQL; in memory every start has leases of its own).
    pub lease_ttl: Duration,
    /// What a read model's projection does with an event its handler keeps failing on: by
    /// default, five attempts from 100 ms apart up to 2 s, then the event is parked as a dead
    /// letter (see [`App::dead_letters`]) and the projection moves on.
    pub failure: FailurePolicy,
    /// How long committed events may stay unreadable to the workers (an open transaction in
    /// the store's database holding them back) before health reports it: 30 s by default.
    pub head_held_back_after: Duration,
}

impl Default for AppOptions {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_millis(100),
            lease_ttl: Duration::from_secs(10),
            failure: FailurePolicy::park_after(5)
                .backoff(Duration::from_millis(100), Duration::from_secs(2)),
            head_held_back_after: RunnerOptions::DEFAULT_HEAD_HELD_BACK_AFTER,
        }
    }
}

// ANCHOR: app
/// The application over the event store `S`: `factum::MemoryStore` or
/// `factum_postgres::PgStore` (see [`Backend`]).
///
/// Starting it starts the projections and the fulfillment process in the background. In
/// memory their checkpoints and the read models are rebuilt from the store at each start; on
/// PostgreSQL they are tables in the store's schema, and a restart resumes from the
/// checkpoints. [`shutdown`](Self::shutdown) stops them gracefully; dropping the `App`
/// aborts them, as a crash would.
pub struct App<S: Backend> {
    store: S,
    orders: Repository<Order, S>,
    payments: Repository<Payment, S>,
    inventory: Repository<Inventory, S>,
    shipments: Repository<Shipment, S>,
    read_models: S::ReadModels,
    projections: Projections<S>,
    processes: RunningProcessManagers,
}

impl<S: Backend> App<S> {
    /// Starts the application on `store`, with default options.
    pub async fn start(store: S) -> Result<Self, AppError> {
        Self::start_with(store, &AppOptions::default()).await
    }

    /// Starts the application on `store`: prepares the read models (their tables, on
    /// PostgreSQL), then starts the workers. Must be called within a tokio runtime.
    pub async fn start_with(store: S, options: &AppOptions) -> Result<Self, AppError> {
        store.prepare().await?;
        let runner = RunnerOptions::new()
            .lease_ttl(options.lease_ttl)
            .lease_retry(Duration::from_millis(200))
            .head_held_back_after(options.head_held_back_after);
        let projection = ProjectionOptions::new()
            .poll_interval(options.poll_interval)
            .failure(options.failure);
        let (read_models, projections) = store.start_projections(runner.clone(), &projection);
        let dispatcher = Dispatcher {
            orders: Repository::new(store.clone()),
            payments: Repository::new(store.clone()),
            inventory: Repository::new(store.clone()),
            shipments: Repository::new(store.clone()),
        };
        let processes = store
            .process_runner()
            .options(runner)
            .register(
                OrderFulfillment,
                dispatcher,
                ProcessOptions::new().poll_interval(options.poll_interval),
            )
            .start();
        Ok(Self {
            orders: Repository::new(store.clone()),
            payments: Repository::new(store.clone()),
            inventory: Repository::new(store.clone()),
            shipments: Repository::new(store.clone()),
            store,
            read_models,
            projections,
            processes,
        })
    }
    // ANCHOR_END: app

    /// Stops the background workers gracefully.
    pub async fn shutdown(self) -> Result<(), AppError> {
        let projections = self.projections.shutdown().await;
        let processes = self.processes.shutdown().await;
        projections?;
        processes?;
        Ok(())
    }

    /// The event store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The read models.
    pub fn read_models(&self) -> &S::ReadModels {
        &self.read_models
    }

    // ANCHOR: place
    /// Places an order, as `PlaceOrderV1` without a currency and `PlaceOrderV2` with one.
    pub async fn place_order(
        &self,
        order: NewOrder,
        idempotency_key: Option<&str>,
    ) -> Result<Outcome, AppError> {
        let meta = metadata("place", idempotency_key);
        let order_id = match order.order_id {
            Some(id) => id,
            // A retried request must name the same order: derive its id from the key.
            None => {
                let seed = meta.command_id.unwrap_or_else(Uuid::new_v4).simple();
                format!("o-{}", &seed.to_string()[..16])
            }
        };
        let executed = match order.currency {
            None => {
                let command = PlaceOrderV1 {
                    order_id: order_id.clone(),
                    customer_id: order.customer_id,
                    lines: order.lines,
                };
                self.orders.execute_on(&order_id, command, meta).await
            }
            Some(currency) => {
                let command = PlaceOrderV2 {
                    order_id: order_id.clone(),
                    customer_id: order.customer_id,
                    lines: order.lines,
                    currency,
                };
                self.orders.execute_on(&order_id, command, meta).await
            }
        };
        executed
            .map(|e| Outcome::of(&e))
            .map_err(AppError::from_factum)
    }
    // ANCHOR_END: place

    /// Loads an order that must exist.
    async fn existing_order(&self, order_id: &str) -> Result<Order, AppError> {
        let loaded = self
            .orders
            .load(order_id)
            .await
            .map_err(AppError::from_factum)?;
        if loaded.state.is_placed() {
            Ok(loaded.state)
        } else {
            Err(AppError::NotFound(format!("no order `{order_id}`")))
        }
    }

    /// Captures the payment of an order, for its total.
    pub async fn pay(
        &self,
        order_id: &str,
        idempotency_key: Option<&str>,
    ) -> Result<Outcome, AppError> {
        let meta = metadata("pay", idempotency_key);
        let order = self.existing_order(order_id).await?;
        if order.is_cancelled() {
            return Err(AppError::Conflict(OrderError::Cancelled.to_string()));
        }
        let command = CapturePaymentV1 {
            order_id: order_id.to_owned(),
            amount_cents: order.total_cents(),
            currency: order.currency().to_owned(),
        };
        let executed = self
            .payments
            .execute_on(order_id, command, meta)
            .await
            .map_err(|e| match e {
                factum::Error::Rejected(PaymentError::AlreadyCaptured) => {
                    AppError::Conflict("the order is already paid".into())
                }
                other => AppError::from_factum(other),
            })?;
        Ok(Outcome::of(&executed))
    }

    /// Hands an order's shipment to a carrier. The shipment exists once the order is paid
    /// and its stock reserved.
    pub async fn ship(
        &self,
        order_id: &str,
        carrier: &str,
        idempotency_key: Option<&str>,
    ) -> Result<Outcome, AppError> {
        let meta = metadata("ship", idempotency_key);
        self.existing_order(order_id).await?;
        let command = DispatchShipmentV1 {
            order_id: order_id.to_owned(),
            carrier: carrier.to_owned(),
        };
        self.shipments
            .execute_on(order_id, command, meta)
            .await
            .map(|e| Outcome::of(&e))
            .map_err(|e| match e {
                factum::Error::Rejected(ShipmentError::NotCreated) => {
                    AppError::Conflict(ShipmentError::NotCreated.to_string())
                }
                other => AppError::from_factum(other),
            })
    }

    /// Cancels an order; the fulfillment process then releases its stock and refunds it.
    pub async fn cancel(
        &self,
        order_id: &str,
        reason: &str,
        idempotency_key: Option<&str>,
    ) -> Result<Outcome, AppError> {
        let meta = metadata("cancel", idempotency_key);
        let command = CancelOrderV1 {
            order_id: order_id.to_owned(),
            reason: reason.to_owned(),
        };
        self.orders
            .execute_on(order_id, command, meta)
            .await
            .map(|e| Outcome::of(&e))
            .map_err(|e| match e {
                factum::Error::Rejected(OrderError::NotPlaced) => {
                    AppError::NotFound(format!("no order `{order_id}`"))
                }
                other => AppError::from_factum(other),
            })
    }

    /// Adds received stock of `sku`.
    pub async fn receive_stock(
        &self,
        sku: &str,
        quantity: u32,
        idempotency_key: Option<&str>,
    ) -> Result<Outcome, AppError> {
        let meta = metadata("receive", idempotency_key);
        let command = ReceiveStockV1 {
            sku: sku.to_owned(),
            quantity,
        };
        self.inventory
            .execute_on(sku, command, meta)
            .await
            .map(|e| Outcome::of(&e))
            .map_err(AppError::from_factum::<InventoryError>)
    }

    /// The stock of `sku` (all zero for a SKU never received).
    pub async fn stock(&self, sku: &str) -> Result<StockLevel, AppError> {
        let loaded = self
            .inventory
            .load(sku)
            .await
            .map_err(AppError::from_factum)?;
        Ok(StockLevel {
            sku: sku.to_owned(),
            on_hand: loaded.state.on_hand(),
            reserved: loaded.state.reserved(),
            available: loaded.state.available(),
        })
    }

    /// The stored events of one order, oldest first.
    pub async fn history(&self, order_id: &str) -> Result<Vec<HistoryEntry>, AppError> {
        let stream =
            StreamId::new("order", order_id).map_err(|e| AppError::BadRequest(e.to_string()))?;
        let events = self.store.read_stream(&stream, &StreamRead::all()).await?;
        if events.is_empty() {
            return Err(AppError::NotFound(format!("no order `{order_id}`")));
        }
        events
            .into_iter()
            .map(|e| {
                Ok(HistoryEntry {
                    stream_version: e.stream_version,
                    position: e.position,
                    event_type: e.event_type,
                    schema_version: e.schema_version,
                    recorded_at: e.recorded_at,
                    payload: e
                        .payload
                        .to_value()
                        .map_err(|e| AppError::Internal(e.to_string()))?,
                })
            })
            .collect()
    }

    /// The order list.
    pub async fn orders(&self) -> Result<Vec<OrderSummary>, AppError> {
        Ok(self.read_models.order_list().await?)
    }

    /// One order from the order list; from the order itself when the list has not caught up
    /// with it yet.
    pub async fn order(&self, order_id: &str) -> Result<OrderSummary, AppError> {
        if let Some(row) = self.read_models.order(order_id).await? {
            return Ok(row);
        }
        let order = self.existing_order(order_id).await?;
        Ok(OrderSummary {
            order_id: order_id.to_owned(),
            customer_id: order.customer_id().to_owned(),
            status: order.status().to_owned(),
            total_cents: order.total_cents(),
            currency: order.currency().to_owned(),
            tracking: None,
            cancel_reason: None,
        })
    }

    /// Customer statistics.
    pub async fn customers(&self) -> Result<Vec<CustomerStats>, AppError> {
        Ok(self.read_models.customer_stats().await?)
    }

    /// Daily sales.
    pub async fn daily_sales(&self) -> Result<Vec<DailySales>, AppError> {
        Ok(self.read_models.daily_sales().await?)
    }

    /// The background workers: healthy unless one stopped, or made no progress for
    /// `stalled_after` while behind.
    pub fn health(&self, stalled_after: Duration) -> (bool, Vec<WorkerHealth>) {
        let report = self.health_report(stalled_after);
        (report.healthy, report.workers)
    }

    /// The background workers and what is wrong with them: a worker stopped, one made no
    /// progress for `stalled_after` while behind, or an open transaction has kept committed
    /// events from every worker for [`AppOptions::head_held_back_after`] (named).
    pub fn health_report(&self, stalled_after: Duration) -> HealthReport {
        let projections = self.projections.health(stalled_after);
        let processes = self.processes.health(stalled_after);
        let healthy = projections.is_healthy() && processes.is_healthy();
        let mut problems: Vec<HealthIssue> =
            projections.problems.iter().map(HealthIssue::from).collect();
        // Both runners watch the same store: its head is reported once.
        let head_reported = problems
            .iter()
            .any(|p| matches!(p, HealthIssue::HeadHeldBack { .. }));
        problems.extend(
            processes
                .problems
                .iter()
                .filter(|p| !(head_reported && matches!(p, HealthProblem::HeadHeldBack { .. })))
                .map(HealthIssue::from),
        );
        let workers = projections
            .partitions
            .iter()
            .chain(&processes.partitions)
            .map(|p| WorkerHealth {
                name: p.name.clone(),
                partition: p.partition,
                state: format!("{:?}", p.state),
                checkpoint: p.checkpoint,
                lag_events: p.lag_events,
                error: p.error.clone(),
            })
            .collect();
        HealthReport {
            healthy,
            workers,
            problems,
        }
    }

    /// Rebuilds every read model from the first event, while the application keeps
    /// running; returns once they have caught up with the events stored when it started.
    pub async fn rebuild_read_models(&self) -> Result<(), AppError> {
        self.rebuild_read_models_with(|_| {}).await
    }

    /// Like [`rebuild_read_models`](Self::rebuild_read_models), calling `progress` after
    /// each batch of each read model's rebuild.
    pub async fn rebuild_read_models_with(
        &self,
        mut progress: impl FnMut(&RebuildProgress) + Send,
    ) -> Result<(), AppError> {
        for name in [ORDER_LIST, CUSTOMER_STATS, DAILY_SALES] {
            self.projections.rebuild(name, &mut progress).await?;
        }
        Ok(())
    }

    // ANCHOR: dead_letters
    /// The events the read models' projections parked after their handlers kept failing,
    /// by projection and position.
    pub async fn dead_letters(&self) -> Result<Vec<ParkedEvent>, AppError> {
        let mut parked = Vec::new();
        for name in [ORDER_LIST, CUSTOMER_STATS, DAILY_SALES] {
            parked.extend(self.projections.parked(name).await?);
        }
        Ok(parked)
    }

    /// Asks for every parked event to be handled again (once the cause is fixed), in order
    /// within each stream; returns how many were marked. One that fails again is parked
    /// again.
    pub async fn replay_dead_letters(&self) -> Result<usize, AppError> {
        let mut marked = 0;
        for name in [ORDER_LIST, CUSTOMER_STATS, DAILY_SALES] {
            marked += self.projections.replay_parked(name, None).await?;
        }
        Ok(marked)
    }
    // ANCHOR_END: dead_letters

    /// Waits until the fulfillment process and every projection have handled every event
    /// in the store, including those that the process's own commands appended.
    pub async fn settle(&self) -> Result<(), AppError> {
        loop {
            let head = self.store.head_position().await?;
            self.processes.wait_for(ORDER_FULFILLMENT, head).await?;
            for name in [ORDER_LIST, CUSTOMER_STATS, DAILY_SALES] {
                self.projections.wait_for(name, head).await?;
            }
            if self.store.head_position().await? == head {
                return Ok(());
            }
        }
    }
}

impl<S: Backend> fmt::Debug for App<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("App")
            .field("projections", &self.projections.status())
            .field("processes", &self.processes.status())
            .finish_non_exhaustive()
    }
}

// ANCHOR: dispatcher
/// Executes the fulfillment process's commands on the aggregates. The metadata carries the
/// command id the runtime derived, so a command dispatched again after a crash returns the
/// first execution's outcome and appends nothing.
#[derive(Clone, Debug)]
struct Dispatcher<S> {
    orders: Repository<Order, S>,
    payments: Repository<Payment, S>,
    inventory: Repository<Inventory, S>,
    shipments: Repository<Shipment, S>,
}

impl<S: EventStore> CommandDispatcher<FulfillmentCommand> for Dispatcher<S> {
    async fn dispatch(
        &self,
        command: &FulfillmentCommand,
        metadata: &Metadata,
    ) -> Result<(), DispatchError> {
        let meta = metadata.clone();
        match command.clone() {
            FulfillmentCommand::ReserveStock(c) => {
                self.inventory.execute_on(&c.sku.clone(), c, meta).await?;
            }
            FulfillmentCommand::ReleaseStock(c) => {
                self.inventory.execute_on(&c.sku.clone(), c, meta).await?;
            }
            FulfillmentCommand::ShipStock(c) => {
                self.inventory.execute_on(&c.sku.clone(), c, meta).await?;
            }
            FulfillmentCommand::MarkOrderPaid(c) => {
                self.orders.execute_on(&c.order_id.clone(), c, meta).await?;
            }
            FulfillmentCommand::ShipOrder(c) => {
                self.orders.execute_on(&c.order_id.clone(), c, meta).await?;
            }
            FulfillmentCommand::CancelOrder(c) => {
                self.orders.execute_on(&c.order_id.clone(), c, meta).await?;
            }
            FulfillmentCommand::RefundPayment(c) => {
                self.payments
                    .execute_on(&c.order_id.clone(), c, meta)
                    .await?;
            }
            FulfillmentCommand::CreateShipment(c) => {
                self.shipments
                    .execute_on(&c.order_id.clone(), c, meta)
                    .await?;
            }
            FulfillmentCommand::CancelShipment(c) => {
                self.shipments
                    .execute_on(&c.order_id.clone(), c, meta)
                    .await?;
            }
        }
        Ok(())
    }
}
// ANCHOR_END: dispatcher
