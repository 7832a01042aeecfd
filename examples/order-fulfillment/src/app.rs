//! The application layer: the aggregates, the fulfillment process and the read models over
//! one event store, as one [`factum::Application`], and the use cases the demo and the HTTP
//! API call.

use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

use factum::coordination::{Coordination, ParkedEvent};
use factum::personal::{
    Forgotten, KeyStore, KeyStoreError, MasterKey, MemoryKeyStore, PersonalError, PersonalSchema,
    Shredding,
};
use factum::process::ProcessOptions;
use factum::projection::{
    FailurePolicy, HealthProblem, ProjectionOptions, RebuildProgress, RunnerOptions,
};
use factum::store::StreamRead;
use factum::tenant::TenantId;
use factum::trace::TraceContext;
use factum::{
    Application, ApplicationBuilder, ApplicationError, Dispatched, EventStore, MemoryCoordination,
    MemoryStore, Metadata, Rejection, Routed, StreamId,
};
use factum_postgres::{PgCoordination, PgKeyStore, PgStore};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::Line;
use crate::domain::inventory::{Inventory, ReceiveStockV1};
use crate::domain::order::{
    CancelOrderV1, Order, OrderError, OrderPlaced, PlaceOrderV1, PlaceOrderV2,
};
use crate::domain::payment::{CapturePaymentV1, Payment, PaymentError};
use crate::domain::shipment::{DispatchShipmentV1, Shipment, ShipmentError};
use crate::fulfillment::{ORDER_FULFILLMENT, OrderFulfillment};
use crate::pg_read_model::PgReadModels;
use crate::read_model::{
    CUSTOMER_STATS, CustomerStats, DAILY_SALES, DailySales, MemoryReadModels, ORDER_LIST,
    OrderSummary, Page, READ_MODELS, ReadModels,
};
use crate::service::timed;
use crate::tenants::{Named, worker_name};

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
    /// The request was made on a version of the stream that is no longer current (an HTTP
    /// `If-Match` that no longer holds): nothing was changed; read again and decide again.
    #[error("stream `{stream}` is at version {actual}, not at the expected version {expected}")]
    VersionMismatch {
        /// The stream.
        stream: String,
        /// The version the request expected.
        expected: u64,
        /// The version the stream has.
        actual: u64,
    },
    /// A read model has not caught up with a position in time: try again later (health
    /// says why).
    #[error("{0}")]
    Unavailable(String),
    /// The store or the runtime failed: try again later.
    #[error("{0}")]
    Internal(String),
}

impl AppError {
    /// Maps a dispatched command's error; `rejected` maps the aggregate's own error, which
    /// the rejection carries (match on it with [`Rejection::downcast_ref`]).
    fn from_dispatch(
        error: factum::Error<Rejection>,
        rejected: impl FnOnce(&Rejection) -> Option<AppError>,
    ) -> Self {
        match error {
            factum::Error::Rejected(rejection) => {
                rejected(&rejection).unwrap_or_else(|| AppError::Conflict(rejection.to_string()))
            }
            factum::Error::VersionMismatch {
                stream,
                expected,
                actual,
            } => AppError::VersionMismatch {
                stream: stream.as_str().to_owned(),
                expected,
                actual,
            },
            other => AppError::from_factum(other),
        }
    }

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
            factum::Error::Store(factum::StoreError::Personal(e))
                if matches!(*e, PersonalError::SubjectForgotten { .. }) =>
            {
                AppError::Conflict(format!(
                    "{e}: a forgotten customer's name cannot be recorded again"
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

impl From<ApplicationError> for AppError {
    fn from(error: ApplicationError) -> Self {
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

/// The command id of the request `operation` sent with the idempotency key `key` by
/// `tenant`: command ids are unique across the tenants of a store (ADR 14), so two tenants
/// using the same key get two ids.
pub fn tenant_command_id_for(tenant: &TenantId, operation: &str, key: &str) -> Uuid {
    Uuid::new_v5(
        &IDEMPOTENCY_NAMESPACE,
        format!("{tenant}\u{1f}{operation}\n{key}").as_bytes(),
    )
}

/// Metadata for a request of `tenant` (none on a single-tenant store): its command id comes
/// from the idempotency key, when there is one, and it continues the trace of the request
/// that runs it (see [`with_trace`]).
fn metadata(tenant: Option<&TenantId>, operation: &str, key: Option<&str>) -> Metadata {
    let mut meta = Metadata::new().actor("order-fulfillment");
    if let Ok(Some(trace)) = REQUEST_TRACE.try_with(Clone::clone) {
        meta = meta.trace(trace);
    }
    match (key, tenant) {
        (Some(key), None) => meta.command_id(command_id_for(operation, key)),
        (Some(key), Some(tenant)) => meta.command_id(tenant_command_id_for(tenant, operation, key)),
        (None, _) => meta,
    }
}
// ANCHOR_END: idempotency

// ANCHOR: with_trace
tokio::task_local! {
    /// The W3C trace context of the HTTP request being served, if it came with one.
    static REQUEST_TRACE: Option<TraceContext>;
}

/// Runs `work` (a request's handling) with `trace` as the trace context of the commands it
/// sends: their events carry it in their metadata, and the framework continues it into the
/// projections and the fulfillment process that handle them, and the commands that sends.
pub async fn with_trace<F: Future>(trace: Option<TraceContext>, work: F) -> F::Output {
    REQUEST_TRACE.scope(trace, work).await
}
// ANCHOR_END: with_trace

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
    /// The customer's name: personal data, stored encrypted under the customer's key.
    #[serde(default)]
    pub customer_name: Option<String>,
}

/// What an executed command did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// The stream written to, such as `order-o-1`.
    pub stream: String,
    /// The aggregate's id.
    pub id: String,
    /// The stream's version after the command: send it back in `If-Match` to act on this
    /// version only.
    pub version: u64,
    /// The global position of the command's last event (0 when it recorded none): a read
    /// model that reached it shows the command's writes.
    pub position: u64,
    /// The types of the events it recorded.
    pub events: Vec<String>,
    /// Whether this is the recorded outcome of an earlier request with the same idempotency
    /// key, returned without executing anything.
    pub replayed: bool,
}

impl From<Dispatched> for Outcome {
    fn from(dispatched: Dispatched) -> Self {
        Self {
            stream: dispatched.stream_id.as_str().to_owned(),
            id: dispatched.stream_id.id().to_owned(),
            version: dispatched.version,
            position: dispatched.position,
            events: dispatched
                .event_types
                .iter()
                .map(|&t| t.to_owned())
                .collect(),
            replayed: dispatched.duplicate,
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
    /// How long a request that reads a read model after its own command waits for the read
    /// model to catch up before it answers "unavailable": 30 s by default.
    pub read_your_writes_within: Duration,
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
            read_your_writes_within: Duration::from_secs(30),
            poll_interval: Duration::from_millis(100),
            lease_ttl: Duration::from_secs(10),
            failure: FailurePolicy::park_after(5)
                .backoff(Duration::from_millis(100), Duration::from_secs(2)),
            head_held_back_after: RunnerOptions::DEFAULT_HEAD_HELD_BACK_AFTER,
        }
    }
}

// ANCHOR: app
/// The application over the event store `S` and the coordination backend `C`: on
/// `MemoryStore` with everything in memory ([`in_memory`](App::in_memory)), or on `PgStore`
/// with `PgCoordination` and read model tables ([`on_postgres`](App::on_postgres)).
///
/// Starting it starts the projections and the fulfillment process in the background. In
/// memory their checkpoints and the read models are rebuilt from the store at each start; on
/// PostgreSQL they are tables in the store's schema, and a restart resumes from the
/// checkpoints. [`shutdown`](Self::shutdown) stops them gracefully; dropping the `App`
/// aborts them, as a crash would.
pub struct App<S, C = MemoryCoordination> {
    app: Application<S, C>,
    read_models: ReadModels,
    read_your_writes_within: Duration,
    /// The tenant whose handle of a multi-tenant store the app runs on (see
    /// [`Tenants`](crate::tenants::Tenants)).
    tenant: Option<TenantId>,
}

/// The domain, the same on every store: the four aggregates, whose commands the
/// application's router dispatches, and the fulfillment process, which sends its commands
/// through that router.
fn domain<S: EventStore, C: Coordination>(
    builder: ApplicationBuilder<S, C>,
    options: &AppOptions,
    tenant: Option<&TenantId>,
) -> ApplicationBuilder<S, C> {
    let runner = RunnerOptions::new()
        .lease_ttl(options.lease_ttl)
        .lease_retry(Duration::from_millis(200))
        .head_held_back_after(options.head_held_back_after);
    builder
        .options(runner)
        .aggregate::<Order>()
        .aggregate::<Payment>()
        .aggregate::<Inventory>()
        .aggregate::<Shipment>()
        .process_manager(
            Named::new(OrderFulfillment, worker_name(ORDER_FULFILLMENT, tenant)),
            ProcessOptions::new().poll_interval(options.poll_interval),
        )
}

/// How the read models' projections poll and what they do with an event that keeps failing.
fn projection_options(options: &AppOptions) -> ProjectionOptions {
    ProjectionOptions::new()
        .poll_interval(options.poll_interval)
        .failure(options.failure)
}

// ANCHOR: personal_store
/// The personal fields of the example's events: the customer's name in `OrderPlaced`,
/// whose subject is the customer.
pub fn personal_schema() -> PersonalSchema {
    // `#[personal]` checks the declaration when the event compiles; a test registers it.
    PersonalSchema::new()
        .register::<OrderPlaced>()
        .expect("OrderPlaced's personal fields are checked by #[personal] at compile time")
}

/// The application in memory: its store encrypts personal fields with keys in memory.
pub type MemoryApp = App<Shredding<MemoryStore, MemoryKeyStore>>;

/// The application on PostgreSQL: its store encrypts personal fields with keys in the
/// store's `data_keys` table, wrapped by a master key.
pub type PgApp = App<Shredding<PgStore, PgKeyStore>, PgCoordination>;
// ANCHOR_END: personal_store

impl MemoryApp {
    /// Starts the application on the in-memory `store` (wrapped in a [`Shredding`] store
    /// with keys in memory), its read models, checkpoints and process instances in memory
    /// too. Must be called within a tokio runtime.
    pub fn in_memory(store: MemoryStore, options: &AppOptions) -> Self {
        Self::in_memory_with_keys(store, MemoryKeyStore::new(), options)
    }

    /// Like [`in_memory`](Self::in_memory), with the data keys in `keys`.
    pub fn in_memory_with_keys(
        store: MemoryStore,
        keys: MemoryKeyStore,
        options: &AppOptions,
    ) -> Self {
        let store = Shredding::new(store, keys, personal_schema());
        Self::start_in_memory(store, options)
    }

    /// Starts the application on `store`: on a tenant's handle of a multi-tenant store,
    /// the tenant's app, with read models of its own and workers named `name@tenant`.
    pub(crate) fn start_in_memory(
        store: Shredding<MemoryStore, MemoryKeyStore>,
        options: &AppOptions,
    ) -> Self {
        let tenant = store.bound_tenant().cloned();
        let read_models = MemoryReadModels::new();
        let projection = projection_options(options);
        let named = |base| worker_name(base, tenant.as_ref());
        let app = domain(Application::builder(store), options, tenant.as_ref())
            .projection(
                Named::new(read_models.orders.clone(), named(ORDER_LIST)),
                projection.clone(),
            )
            .projection(
                Named::new(read_models.customers.clone(), named(CUSTOMER_STATS)),
                projection.clone(),
            )
            .projection(
                Named::new(read_models.sales.clone(), named(DAILY_SALES)),
                projection,
            )
            .start();
        Self::new(app, ReadModels::Memory(read_models), options, tenant)
    }
}

impl PgApp {
    /// Starts the application on PostgreSQL: creates the read model tables when missing,
    /// then starts the workers, with their checkpoints, leases, dead letters and process
    /// instances in `PgCoordination`. Personal fields are encrypted with data keys kept in
    /// the store's schema, wrapped by `master`. Must be called within a tokio runtime.
    ///
    /// A multi-tenant store is served per tenant, by
    /// [`PgTenants`](crate::tenants::PgTenants): given one bound to no tenant, whose every
    /// read would be refused, this is [`AppError::BadRequest`].
    pub async fn on_postgres(
        store: PgStore,
        master: MasterKey,
        options: &AppOptions,
    ) -> Result<Self, AppError> {
        if store.config().multi_tenant && store.bound_tenant().is_none() {
            return Err(AppError::BadRequest(
                "the store is multi-tenant: serve it per tenant, with PgTenants".into(),
            ));
        }
        PgReadModels::new(&store)
            .create_tables()
            .await
            .map_err(|e| AppError::Internal(format!("creating the read model tables: {e}")))?;
        let keys = PgKeyStore::new(&store, master);
        let store = Shredding::new(store, keys, personal_schema());
        Ok(Self::start_on_postgres(store, options))
    }

    /// Starts the application on `store`, whose read model tables exist: on a tenant's
    /// handle of a multi-tenant store, the tenant's app, whose projections write and whose
    /// queries read the tables bound to the tenant, with workers named `name@tenant` and
    /// dead letters and process instances of the tenant's.
    pub(crate) fn start_on_postgres(
        store: Shredding<PgStore, PgKeyStore>,
        options: &AppOptions,
    ) -> Self {
        let tenant = store.bound_tenant().cloned();
        let read_models = PgReadModels::new(store.inner());
        let (order_list, customer_stats, daily_sales) = read_models.projections(store.inner());
        let projection = projection_options(options);
        let coordination = PgCoordination::new(store.inner());
        let builder = Application::builder(store).coordination(coordination);
        let app = domain(builder, options, tenant.as_ref())
            .projection(order_list, projection.clone())
            .projection(customer_stats, projection.clone())
            .projection(daily_sales, projection)
            .start();
        Self::new(app, ReadModels::Postgres(read_models), options, tenant)
    }
}
// ANCHOR_END: app

impl<S: EventStore, C: Coordination> App<S, C> {
    fn new(
        app: Application<S, C>,
        read_models: ReadModels,
        options: &AppOptions,
        tenant: Option<TenantId>,
    ) -> Self {
        Self {
            app,
            read_models,
            read_your_writes_within: options.read_your_writes_within,
            tenant,
        }
    }

    /// The tenant the app runs for, on a multi-tenant store.
    pub fn tenant(&self) -> Option<&TenantId> {
        self.tenant.as_ref()
    }

    /// The name of this app's projection or process manager `base` (`base@tenant` for a
    /// tenant's app).
    pub fn worker_name(&self, base: &str) -> String {
        worker_name(base, self.tenant.as_ref())
    }

    /// Stops the background workers gracefully.
    pub async fn shutdown(self) -> Result<(), AppError> {
        Ok(self.app.shutdown().await?)
    }

    /// The event store.
    pub fn store(&self) -> &S {
        self.app.store()
    }

    /// The framework's application: its router, projections and process manager.
    pub fn application(&self) -> &Application<S, C> {
        &self.app
    }

    /// The read models.
    pub fn read_models(&self) -> &ReadModels {
        &self.read_models
    }

    /// Dispatches `command` (recording the command's figures as `operation`), only at
    /// version `expected` of its instance when given.
    async fn send<K: Routed>(
        &self,
        command: K,
        expected: Option<u64>,
        metadata: Metadata,
    ) -> Result<Dispatched, factum::Error<Rejection>> {
        let started = Instant::now();
        let dispatched = match expected {
            Some(version) => {
                self.app
                    .dispatch_expecting(command, version, metadata)
                    .await
            }
            None => self.app.dispatch(command, metadata).await,
        };
        record_command(K::NAME, started, &dispatched);
        dispatched
    }

    // ANCHOR: place
    /// Places an order, as `PlaceOrderV1` without a currency or a name and `PlaceOrderV2`
    /// with either.
    pub async fn place_order(
        &self,
        order: NewOrder,
        idempotency_key: Option<&str>,
    ) -> Result<Outcome, AppError> {
        let meta = metadata(self.tenant.as_ref(), "place", idempotency_key);
        let order_id = match order.order_id {
            Some(id) => id,
            // A retried request must name the same order: derive its id from the key.
            None => {
                let seed = meta.command_id.unwrap_or_else(Uuid::new_v4).simple();
                format!("o-{}", &seed.to_string()[..16])
            }
        };
        let dispatched = match (order.currency, order.customer_name) {
            (None, None) => {
                let command = PlaceOrderV1 {
                    order_id,
                    customer_id: order.customer_id,
                    lines: order.lines,
                };
                self.send(command, None, meta).await
            }
            (currency, customer_name) => {
                let command = PlaceOrderV2 {
                    order_id,
                    customer_id: order.customer_id,
                    lines: order.lines,
                    currency: currency.unwrap_or_else(|| "EUR".into()),
                    customer_name,
                };
                self.send(command, None, meta).await
            }
        };
        dispatched
            .map(Outcome::from)
            .map_err(|e| AppError::from_dispatch(e, |_| None))
    }
    // ANCHOR_END: place

    /// Loads an order that must exist.
    async fn existing_order(&self, order_id: &str) -> Result<Order, AppError> {
        let started = Instant::now();
        let loaded = self.app.repository::<Order>().load(order_id).await;
        timed(LOAD_SECONDS, &[("aggregate", "order".into())], started);
        let loaded = loaded.map_err(AppError::from_factum)?;
        if loaded.state.is_placed() {
            Ok(loaded.state)
        } else {
            Err(AppError::NotFound(format!("no order `{order_id}`")))
        }
    }

    /// Captures the payment of an order, for its total; only while its payment's stream is
    /// at version `expected`, when given.
    pub async fn pay(
        &self,
        order_id: &str,
        expected: Option<u64>,
        idempotency_key: Option<&str>,
    ) -> Result<Outcome, AppError> {
        let meta = metadata(self.tenant.as_ref(), "pay", idempotency_key);
        let order = self.existing_order(order_id).await?;
        if order.is_cancelled() {
            return Err(AppError::Conflict(OrderError::Cancelled.to_string()));
        }
        let command = CapturePaymentV1 {
            order_id: order_id.to_owned(),
            amount_cents: order.total_cents(),
            currency: order.currency().to_owned(),
        };
        let dispatched = self.send(command, expected, meta).await;
        dispatched.map(Outcome::from).map_err(|e| {
            AppError::from_dispatch(e, |rejection| match rejection.downcast_ref() {
                Some(PaymentError::AlreadyCaptured) => {
                    Some(AppError::Conflict("the order is already paid".into()))
                }
                _ => None,
            })
        })
    }

    /// Hands an order's shipment to a carrier. The shipment exists once the order is paid
    /// and its stock reserved.
    pub async fn ship(
        &self,
        order_id: &str,
        carrier: &str,
        idempotency_key: Option<&str>,
    ) -> Result<Outcome, AppError> {
        let meta = metadata(self.tenant.as_ref(), "ship", idempotency_key);
        self.existing_order(order_id).await?;
        let command = DispatchShipmentV1 {
            order_id: order_id.to_owned(),
            carrier: carrier.to_owned(),
        };
        let dispatched = self.send(command, None, meta).await;
        dispatched.map(Outcome::from).map_err(|e| {
            AppError::from_dispatch(e, |rejection| {
                rejection
                    .downcast_ref::<ShipmentError>()
                    .map(|e| AppError::Conflict(e.to_string()))
            })
        })
    }

    /// Cancels an order, only while its stream is at version `expected`, when given; the
    /// fulfillment process then releases its stock and refunds it.
    pub async fn cancel(
        &self,
        order_id: &str,
        reason: &str,
        expected: Option<u64>,
        idempotency_key: Option<&str>,
    ) -> Result<Outcome, AppError> {
        let meta = metadata(self.tenant.as_ref(), "cancel", idempotency_key);
        let command = CancelOrderV1 {
            order_id: order_id.to_owned(),
            reason: reason.to_owned(),
        };
        let dispatched = self.send(command, expected, meta).await;
        dispatched.map(Outcome::from).map_err(|e| {
            AppError::from_dispatch(e, |rejection| match rejection.downcast_ref() {
                Some(OrderError::NotPlaced) => {
                    Some(AppError::NotFound(format!("no order `{order_id}`")))
                }
                _ => None,
            })
        })
    }

    /// Adds received stock of `sku`.
    pub async fn receive_stock(
        &self,
        sku: &str,
        quantity: u32,
        idempotency_key: Option<&str>,
    ) -> Result<Outcome, AppError> {
        let meta = metadata(self.tenant.as_ref(), "receive", idempotency_key);
        let command = ReceiveStockV1 {
            sku: sku.to_owned(),
            quantity,
        };
        self.send(command, None, meta)
            .await
            .map(Outcome::from)
            .map_err(|e| AppError::from_dispatch(e, |_| None))
    }

    /// The stock of `sku` (all zero for a SKU never received).
    pub async fn stock(&self, sku: &str) -> Result<StockLevel, AppError> {
        let started = Instant::now();
        let loaded = self.app.repository::<Inventory>().load(sku).await;
        timed(LOAD_SECONDS, &[("aggregate", "inventory".into())], started);
        let loaded = loaded.map_err(AppError::from_factum)?;
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
        let events = self
            .store()
            .read_stream(&stream, &StreamRead::all())
            .await?;
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

    // ANCHOR: read_your_writes
    /// Waits until the read model `projection` has handled every event up to `position` (a
    /// command's [`Outcome::position`]), so that reading it shows that command's writes;
    /// [`AppError::Unavailable`] after [`AppOptions::read_your_writes_within`].
    pub async fn caught_up(&self, projection: &str, position: u64) -> Result<(), AppError> {
        let within = self.read_your_writes_within;
        let name = self.worker_name(projection);
        match tokio::time::timeout(within, self.app.wait_for(&name, position)).await {
            Ok(reached) => Ok(reached?),
            Err(_) => {
                tracing::warn!(
                    projection,
                    position,
                    "a read model did not catch up with a request's own writes in time"
                );
                Err(AppError::Unavailable(format!(
                    "the read model `{projection}` has not reached position {position} within {} s: see /health",
                    within.as_secs()
                )))
            }
        }
    }
    // ANCHOR_END: read_your_writes

    /// The order list.
    pub async fn orders(&self) -> Result<Vec<OrderSummary>, AppError> {
        Ok(self.read_models.order_list().await?)
    }

    /// A page of the order list, by id.
    pub async fn orders_page(&self, page: Page<'_>) -> Result<Vec<OrderSummary>, AppError> {
        Ok(self.read_models.order_page(page).await?)
    }

    /// A page of the customer statistics, by customer id.
    pub async fn customers_page(&self, page: Page<'_>) -> Result<Vec<CustomerStats>, AppError> {
        Ok(self.read_models.customer_page(page).await?)
    }

    /// A page of the daily sales, oldest first, after `DAY/CURRENCY`.
    pub async fn daily_sales_page(&self, page: Page<'_>) -> Result<Vec<DailySales>, AppError> {
        Ok(self.read_models.daily_sales_page(page).await?)
    }

    /// One order from the order list.
    pub async fn order(&self, order_id: &str) -> Result<OrderSummary, AppError> {
        self.read_models
            .order(order_id)
            .await?
            .ok_or_else(|| AppError::NotFound(format!("no order `{order_id}`")))
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
        let health = self.app.health(stalled_after);
        let workers = health
            .partitions
            .iter()
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
            healthy: health.is_healthy(),
            workers,
            problems: health.problems.iter().map(HealthIssue::from).collect(),
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
        for name in READ_MODELS {
            let name = self.worker_name(name);
            self.app.projections().rebuild(&name, &mut progress).await?;
        }
        Ok(())
    }

    // ANCHOR: dead_letters
    /// The events the read models' projections parked after their handlers kept failing,
    /// by projection and position.
    pub async fn dead_letters(&self) -> Result<Vec<ParkedEvent>, AppError> {
        let mut parked = Vec::new();
        for name in READ_MODELS {
            parked.extend(
                self.app
                    .projections()
                    .parked(&self.worker_name(name))
                    .await?,
            );
        }
        Ok(parked)
    }

    /// Asks for every parked event to be handled again (once the cause is fixed), in order
    /// within each stream; returns how many were marked. One that fails again is parked
    /// again.
    pub async fn replay_dead_letters(&self) -> Result<usize, AppError> {
        let mut marked = 0;
        for name in READ_MODELS {
            let name = self.worker_name(name);
            marked += self.app.projections().replay_parked(&name, None).await?;
        }
        Ok(marked)
    }
    // ANCHOR_END: dead_letters

    /// Waits until the fulfillment process and every projection have handled every event
    /// in the store, including those that the process's own commands appended.
    pub async fn settle(&self) -> Result<(), AppError> {
        Ok(self.app.settle().await?)
    }
}

// ANCHOR: app_metrics
/// The histogram of the time to load an aggregate, by aggregate, in seconds.
pub const LOAD_SECONDS: &str = "order_fulfillment_load_seconds";
/// The histogram of the time to execute a command (load, decide, append), by command and
/// outcome (`ok`, `rejected` or `error`), in seconds.
pub const COMMAND_SECONDS: &str = "order_fulfillment_command_seconds";
/// The counter of the events appended by the API's commands, by command.
pub const EVENTS_APPENDED: &str = "order_fulfillment_events_appended_total";

/// Records a dispatched command's figures: its time and outcome, and the events it appended
/// (none for a replayed one).
fn record_command(
    command: &'static str,
    started: Instant,
    dispatched: &Result<Dispatched, factum::Error<Rejection>>,
) {
    let outcome = match dispatched {
        Ok(_) => "ok",
        Err(factum::Error::Rejected(_)) => "rejected",
        Err(_) => "error",
    };
    let labels = [("command", command.to_owned()), ("outcome", outcome.into())];
    timed(COMMAND_SECONDS, &labels, started);
    if let Ok(done) = dispatched {
        if !done.duplicate {
            let appended = u64::try_from(done.event_types.len()).unwrap_or(u64::MAX);
            metrics::counter!(EVENTS_APPENDED, "command" => command).increment(appended);
        }
    }
}
// ANCHOR_END: app_metrics

/// An event store that keeps personal data under subject keys and can forget a subject:
/// the [`Shredding`] store the application runs on, on either store.
pub trait PersonalStore: EventStore {
    /// Destroys the key of `subject` (see [`Shredding::forget`]).
    fn forget_subject(
        &self,
        subject: &str,
    ) -> impl Future<Output = Result<Forgotten, KeyStoreError>> + Send;
}

impl<S: EventStore, K: KeyStore> PersonalStore for Shredding<S, K> {
    async fn forget_subject(&self, subject: &str) -> Result<Forgotten, KeyStoreError> {
        self.forget(subject).await
    }
}

// ANCHOR: forget
impl<S: PersonalStore, C: Coordination> App<S, C> {
    /// Forgets a customer: destroys the key of their personal data, so that every stored
    /// copy of it (their name in each `OrderPlaced`) can no longer be read, then rebuilds
    /// the read models, which then show the name as erased. Their orders stay, and load.
    /// [`AppError::NotFound`] for a customer whose personal data the store never held.
    pub async fn forget_customer(&self, customer_id: &str) -> Result<Forgotten, AppError> {
        let forgotten = match self.store().forget_subject(customer_id).await {
            Ok(forgotten) => forgotten,
            Err(KeyStoreError::UnknownSubject { subject }) => {
                return Err(AppError::NotFound(format!(
                    "no personal data of customer `{subject}`"
                )));
            }
            Err(KeyStoreError::EmptySubject) => {
                return Err(AppError::BadRequest(
                    "the customer id must not be empty".into(),
                ));
            }
            Err(e) => return Err(AppError::Internal(e.to_string())),
        };
        self.rebuild_read_models().await?;
        Ok(forgotten)
    }
}
// ANCHOR_END: forget

impl<S: EventStore, C: Coordination> fmt::Debug for App<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("App")
            .field("app", &self.app)
            .finish_non_exhaustive()
    }
}
