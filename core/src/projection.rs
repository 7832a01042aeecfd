//! Projections: read models fed by subscriptions, with checkpoints, partitions, leases, a
//! failure policy per projection, parked events, rebuilds and lag reporting.
//!
//! A [`Projection`] handles recorded events of the types it names. A [`ProjectionRunner`]
//! starts every registered projection together: each is split into
//! [`ProjectionOptions::partitions`] partitions by a stable hash of the stream name
//! ([`partition_of`](crate::partition_of)), and each partition is processed by the one worker,
//! across all processes sharing the [`LeaseStore`], that holds its lease.
//!
//! # Delivery
//!
//! At-least-once, in order per stream: a partition handles its events one at a time in global
//! order and saves its checkpoint after each batch, so a crash between handling and saving
//! delivers the events of that batch again. Make handlers idempotent (upsert by event id or
//! stream version), or keep the read model and the checkpoint in one transaction (the
//! PostgreSQL store's transactional projections). A worker whose lease was taken over cannot
//! move the checkpoint any more (see [`CheckpointStore::claim`]).
//!
//! # Failures
//!
//! A failing handler is retried with exponential backoff ([`FailurePolicy`]); then the event
//! is either parked in the [`DeadLetterStore`] (later events of the same stream are parked
//! behind it, so the stream's order holds, while other streams flow) or the partition stops.
//! Parked events are listed with [`RunningProjections::parked`] and replayed, once the cause
//! is fixed, with [`RunningProjections::replay_parked`].
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use factum::{BoxError, MemoryStore, Projection, ProjectionOptions, ProjectionRunner, RecordedEvent};
//!
//! #[derive(Default)]
//! struct OrderCount(AtomicU64);
//!
//! impl Projection for OrderCount {
//!     fn name(&self) -> &str { "order_count" }
//!     fn event_types(&self) -> Vec<String> { vec!["OrderPlaced".into()] }
//!     async fn handle(&self, _event: &RecordedEvent) -> Result<(), BoxError> {
//!         self.0.fetch_add(1, Ordering::Relaxed);
//!         Ok(())
//!     }
//! }
//!
//! let running = ProjectionRunner::new(MemoryStore::new())
//!     .register(OrderCount::default(), ProjectionOptions::new())
//!     .start();
//! running.shutdown().await?;
//! # Ok::<(), factum::ProjectionError>(())
//! # }).unwrap();
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::Utc;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument;

use crate::coordination::{
    Assignment, CheckpointStore, CoordinationError, DeadLetterStore, Lease, LeaseStore,
    MemoryCheckpointStore, MemoryDeadLetterStore, MemoryLeaseStore, ParkReason, ParkedEvent,
    membership, partition_of,
};
use crate::error::{BoxError, StoreError};
use crate::event::RecordedEvent;
use crate::store::EventStore;
use crate::stream::StreamId;
use crate::subscription::{Shutdown, Subscription, SubscriptionOptions};

/// A read model fed by events.
///
/// Handlers take `&self`: the partitions of one projection run concurrently, so the read
/// model is shared (behind a lock, a connection pool, or atomics). Delivery is at-least-once
/// and in order per stream; see the [module documentation](self).
pub trait Projection: Send + Sync + 'static {
    /// The projection's name: the key of its checkpoints, leases and parked events. Unique
    /// among the projections and process managers sharing those stores.
    fn name(&self) -> &str;

    /// The stored event types it handles; other events are filtered out by the store and
    /// never decoded. Empty: every event.
    fn event_types(&self) -> Vec<String> {
        Vec::new()
    }

    /// Only events of streams in these categories (all when empty).
    fn categories(&self) -> Vec<String> {
        Vec::new()
    }

    /// Handles one event. An error is retried according to the projection's
    /// [`FailurePolicy`].
    fn handle(&self, event: &RecordedEvent) -> impl Future<Output = Result<(), BoxError>> + Send;

    /// Handles one event knowing the lease it is handled under. The runner calls this; by
    /// default it calls [`handle`](Self::handle).
    ///
    /// A projection whose read model shares a database with the checkpoints overrides it to
    /// save the checkpoint at `event.position` in the handler's transaction, with
    /// `context.lease`'s fence (compare-and-set): then a crash neither loses nor repeats an
    /// event. When that save finds the lease taken over, return the
    /// [`CoordinationError::Fenced`] as the error (boxed): the runner then stops handling
    /// the partition instead of retrying.
    fn handle_in(
        &self,
        event: &RecordedEvent,
        context: &HandleContext,
    ) -> impl Future<Output = Result<(), BoxError>> + Send {
        let _ = context;
        self.handle(event)
    }

    /// Handles several events of one partition together, all or nothing, or declines.
    ///
    /// The runner offers each batch's events of the partition here first (two or more, in
    /// position order, none of them behind a parked event), with the partition's lease.
    ///
    /// - `Ok(true)`: every event was handled. A projection whose read model shares a database
    ///   with the checkpoints handles them in one transaction that also saves the checkpoint
    ///   at the last event's position, with `context.lease`'s fence.
    /// - `Ok(false)` (the default): not supported; the runner hands the events to
    ///   [`handle_in`](Self::handle_in) one by one and does not offer batches again.
    /// - An error must leave nothing applied (the transaction rolled back): the runner then
    ///   hands the same events to `handle_in` one by one, where the failure policy retries and
    ///   parks them individually. A [`CoordinationError::Fenced`] error means that the lease
    ///   was lost, as for `handle_in`.
    fn handle_batch_in(
        &self,
        events: &[&RecordedEvent],
        context: &HandleContext,
    ) -> impl Future<Output = Result<bool, BoxError>> + Send {
        let _ = (events, context);
        async { Ok(false) }
    }

    /// Empties the read model, before a [rebuild](RunningProjections::rebuild).
    fn reset(&self) -> impl Future<Output = Result<(), BoxError>> + Send {
        async { Ok(()) }
    }
}

/// What the runner tells [`Projection::handle_in`] besides the event.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HandleContext {
    /// The lease the partition is held under (name, partition, fence).
    pub lease: Lease,
    /// Which attempt this is (1 for the first).
    pub attempt: u32,
}

impl HandleContext {
    /// A context (for tests of projections outside a runner).
    pub fn new(lease: Lease, attempt: u32) -> Self {
        Self { lease, attempt }
    }
}

impl<P: Projection> Projection for Arc<P> {
    fn name(&self) -> &str {
        P::name(self)
    }
    fn event_types(&self) -> Vec<String> {
        P::event_types(self)
    }
    fn categories(&self) -> Vec<String> {
        P::categories(self)
    }
    fn handle(&self, event: &RecordedEvent) -> impl Future<Output = Result<(), BoxError>> + Send {
        P::handle(self, event)
    }
    fn handle_in(
        &self,
        event: &RecordedEvent,
        context: &HandleContext,
    ) -> impl Future<Output = Result<(), BoxError>> + Send {
        P::handle_in(self, event, context)
    }
    fn handle_batch_in(
        &self,
        events: &[&RecordedEvent],
        context: &HandleContext,
    ) -> impl Future<Output = Result<bool, BoxError>> + Send {
        P::handle_batch_in(self, events, context)
    }
    fn reset(&self) -> impl Future<Output = Result<(), BoxError>> + Send {
        P::reset(self)
    }
}

/// [`Projection`] with boxed futures, so projections of different types run together.
trait ErasedProjection: Send + Sync {
    fn handle<'a>(
        &'a self,
        event: &'a RecordedEvent,
        context: &'a HandleContext,
    ) -> BoxFuture<'a, Result<(), BoxError>>;
    fn handle_batch<'a>(
        &'a self,
        events: &'a [&'a RecordedEvent],
        context: &'a HandleContext,
    ) -> BoxFuture<'a, Result<bool, BoxError>>;
    fn reset(&self) -> BoxFuture<'_, Result<(), BoxError>>;
}

impl<P: Projection> ErasedProjection for P {
    fn handle<'a>(
        &'a self,
        event: &'a RecordedEvent,
        context: &'a HandleContext,
    ) -> BoxFuture<'a, Result<(), BoxError>> {
        Box::pin(Projection::handle_in(self, event, context))
    }
    fn handle_batch<'a>(
        &'a self,
        events: &'a [&'a RecordedEvent],
        context: &'a HandleContext,
    ) -> BoxFuture<'a, Result<bool, BoxError>> {
        Box::pin(Projection::handle_batch_in(self, events, context))
    }
    fn reset(&self) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(Projection::reset(self))
    }
}

/// What happens to an event whose handler failed on every attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OnExhausted {
    /// Park it in the dead-letter store and go on; later events of its stream wait behind it.
    Park,
    /// Stop the partition; it resumes from the failed event when restarted.
    Stop,
}

/// Retry with exponential backoff, then park or stop.
///
/// ```
/// use std::time::Duration;
/// use factum::FailurePolicy;
/// let policy = FailurePolicy::park_after(4).backoff(Duration::from_millis(100), Duration::from_secs(1));
/// assert_eq!(policy.delay(1), Duration::from_millis(100));
/// assert_eq!(policy.delay(2), Duration::from_millis(200));
/// assert_eq!(policy.delay(10), Duration::from_secs(1));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FailurePolicy {
    /// How many times an event is tried (at least 1).
    pub max_attempts: u32,
    /// The wait after the first failure; it doubles after each further failure.
    pub initial_backoff: Duration,
    /// The longest wait between attempts.
    pub max_backoff: Duration,
    /// What happens after the last attempt.
    pub on_exhausted: OnExhausted,
}

impl Default for FailurePolicy {
    /// 5 attempts, 100 ms doubling up to 10 s, then park.
    fn default() -> Self {
        Self::park_after(5)
    }
}

impl FailurePolicy {
    /// Tries `attempts` times, then parks the event.
    pub fn park_after(attempts: u32) -> Self {
        Self {
            max_attempts: attempts.max(1),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            on_exhausted: OnExhausted::Park,
        }
    }

    /// Tries `attempts` times, then stops the partition.
    pub fn stop_after(attempts: u32) -> Self {
        Self {
            on_exhausted: OnExhausted::Stop,
            ..Self::park_after(attempts)
        }
    }

    /// Sets the backoff: `initial` after the first failure, doubling up to `max`.
    #[must_use]
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max.max(initial);
        self
    }

    /// The wait after the `attempt`-th failure (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(32);
        self.initial_backoff
            .saturating_mul(1u32 << doublings.min(31))
            .min(self.max_backoff)
    }
}

/// How one projection runs.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProjectionOptions {
    /// Number of partitions (at least 1). Changing it later reassigns streams: rebuild then.
    pub partitions: u32,
    /// Most events per read.
    pub batch_size: usize,
    /// How often a caught-up partition polls the store (hints wake it sooner).
    pub poll_interval: Duration,
    /// Retries and what follows them.
    pub failure: FailurePolicy,
}

impl Default for ProjectionOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl ProjectionOptions {
    /// One partition, default batch size and poll interval, the default failure policy.
    pub fn new() -> Self {
        let sub = SubscriptionOptions::new();
        Self {
            partitions: 1,
            batch_size: sub.batch_size,
            poll_interval: sub.poll_interval,
            failure: FailurePolicy::default(),
        }
    }

    /// Sets the number of partitions (at least 1).
    #[must_use]
    pub fn partitions(mut self, partitions: u32) -> Self {
        self.partitions = partitions.max(1);
        self
    }

    /// Sets the batch size (at least 1).
    #[must_use]
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// Sets the poll interval.
    #[must_use]
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Sets the failure policy.
    #[must_use]
    pub fn failure(mut self, policy: FailurePolicy) -> Self {
        self.failure = policy;
        self
    }
}

/// Settings shared by every projection of a runner.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunnerOptions {
    /// This worker's id in the lease store: unique per process.
    pub worker_id: String,
    /// How long a lease lasts without renewal; a dead worker's partitions fail over after it.
    pub lease_ttl: Duration,
    /// How often a worker without a lease tries to take it.
    pub lease_retry: Duration,
}

impl Default for RunnerOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl RunnerOptions {
    /// A random worker id, 30 s leases, retried every 5 s.
    pub fn new() -> Self {
        Self {
            worker_id: uuid::Uuid::new_v4().to_string(),
            lease_ttl: Duration::from_secs(30),
            lease_retry: Duration::from_secs(5),
        }
    }

    /// Sets the worker id.
    #[must_use]
    pub fn worker_id(mut self, id: impl Into<String>) -> Self {
        self.worker_id = id.into();
        self
    }

    /// Sets the lease time to live (renewed every third of it).
    #[must_use]
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// Sets how often a worker without a lease tries to take it.
    #[must_use]
    pub fn lease_retry(mut self, retry: Duration) -> Self {
        self.lease_retry = retry;
        self
    }
}

/// What the projection runtime reports.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectionError {
    /// The event store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The checkpoint, lease or dead-letter store failed.
    #[error(transparent)]
    Coordination(#[from] CoordinationError),
    /// A handler failed on every attempt and the policy is to stop.
    #[error(
        "projection `{name}` stopped at position {position} (stream `{stream}`) after {attempts} failed attempts: {source}"
    )]
    HandlerFailed {
        /// The projection.
        name: String,
        /// The failing event's position.
        position: u64,
        /// The failing event's stream.
        stream: StreamId,
        /// How many attempts were made.
        attempts: u32,
        /// The last error.
        source: BoxError,
    },
    /// No projection of this name is registered with the runner.
    #[error("no projection named `{name}` is registered")]
    UnknownProjection {
        /// The name asked for.
        name: String,
    },
    /// Another process holds a partition, so it cannot be rebuilt from here.
    #[error("projection `{name}` partition {partition} is held by another worker")]
    NotOwned {
        /// The projection.
        name: String,
        /// The partition.
        partition: u32,
    },
    /// A partition's worker has stopped.
    #[error("projection `{name}` partition {partition} is not running")]
    NotRunning {
        /// The projection.
        name: String,
        /// The partition.
        partition: u32,
    },
    /// [`Projection::reset`] failed.
    #[error("resetting projection `{name}` failed: {source}")]
    Reset {
        /// The projection.
        name: String,
        /// What it reported.
        source: BoxError,
    },
}

/// What a partition's worker is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WorkerState {
    /// Waiting for the partition's lease (another worker holds it, or none was tried yet).
    WaitingForLease,
    /// Holding the lease and reading.
    Running,
    /// Paused by a rebuild.
    Paused,
    /// Stopped by its failure policy.
    Stopped,
    /// Shut down.
    Finished,
}

/// The state of one partition of a projection in this runner.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct PartitionStatus {
    /// The projection.
    pub name: String,
    /// The partition.
    pub partition: u32,
    /// What the worker is doing.
    pub state: WorkerState,
    /// The saved checkpoint.
    pub checkpoint: u64,
    /// The position of the last event handled (or skipped as another partition's).
    pub position: u64,
    /// The store's head position last seen.
    pub head: u64,
    /// How far behind the head it is, measured in positions: `head - position` (0 when
    /// caught up). On a store with dense positions (the in-memory one) this is the number of
    /// events behind; on one with gaps between positions (PostgreSQL) it is an upper bound.
    pub lag_events: u64,
    /// How long it has been behind the head (zero when caught up).
    pub lag_time: Duration,
    /// How long since the position last moved, or the partition last found itself caught up.
    pub since_progress: Duration,
    /// Why it stopped, when it did.
    pub error: Option<String>,
}

/// A problem found by [`RunningProjections::health`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HealthProblem {
    /// Behind the head with no progress for longer than the allowed time.
    Stalled {
        /// The projection.
        name: String,
        /// The partition.
        partition: u32,
        /// Its position.
        position: u64,
        /// The head it is behind.
        head: u64,
        /// How long it has made no progress.
        for_: Duration,
    },
    /// Stopped by its failure policy.
    Stopped {
        /// The projection.
        name: String,
        /// The partition.
        partition: u32,
        /// Why.
        error: String,
    },
}

/// The result of a health check.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Health {
    /// Every partition of this runner.
    pub partitions: Vec<PartitionStatus>,
    /// What is wrong (empty when healthy).
    pub problems: Vec<HealthProblem>,
}

impl Health {
    /// Whether no problem was found.
    pub fn is_healthy(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Progress of a rebuild, as reported to the callback of [`RunningProjections::rebuild`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RebuildProgress {
    /// The projection.
    pub name: String,
    /// Every partition has handled the events up to here.
    pub position: u64,
    /// The head position when the rebuild started: it is done when `position` reaches it.
    pub target: u64,
}

/// Status cells shared by the workers and the handle (of projections and process managers).
#[derive(Debug, Default)]
pub(crate) struct Shared {
    statuses: Mutex<BTreeMap<(String, u32), StatusCell>>,
    changed: watch::Sender<u64>,
}

#[derive(Debug)]
pub(crate) struct StatusCell {
    pub(crate) state: WorkerState,
    pub(crate) checkpoint: u64,
    pub(crate) position: u64,
    pub(crate) head: u64,
    last_progress: Instant,
    behind_since: Option<Instant>,
    pub(crate) error: Option<String>,
}

impl Shared {
    fn cells(&self) -> MutexGuard<'_, BTreeMap<(String, u32), StatusCell>> {
        // Updates are single assignments: a panic cannot leave a cell half-written.
        self.statuses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn update(&self, name: &str, partition: u32, f: impl FnOnce(&mut StatusCell)) {
        let now = Instant::now();
        {
            let mut cells = self.cells();
            let cell = cells
                .entry((name.to_owned(), partition))
                .or_insert_with(|| StatusCell {
                    state: WorkerState::WaitingForLease,
                    checkpoint: 0,
                    position: 0,
                    head: 0,
                    last_progress: now,
                    behind_since: None,
                    error: None,
                });
            let before = (cell.position, cell.head);
            f(cell);
            if cell.position != before.0 || cell.position >= cell.head {
                cell.last_progress = now;
            }
            if cell.position >= cell.head {
                cell.behind_since = None;
            } else if cell.behind_since.is_none() {
                cell.behind_since = Some(now);
            }
            #[cfg(feature = "metrics")]
            record_metrics(name, partition, cell, now);
        }
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Sets the lag gauges of every partition from its current cell.
    #[cfg(feature = "metrics")]
    pub(crate) fn refresh_metrics(&self) {
        let now = Instant::now();
        for ((name, partition), cell) in self.cells().iter() {
            record_metrics(name, *partition, cell, now);
        }
    }

    /// Refreshes the lag gauges every second (so the time behind grows while a partition is
    /// stuck), until `shutdown`.
    #[cfg(feature = "metrics")]
    pub(crate) async fn metrics_ticker(self: Arc<Self>, shutdown: Shutdown) {
        loop {
            tokio::select! {
                () = shutdown.triggered() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => self.refresh_metrics(),
            }
        }
    }

    pub(crate) fn health(&self, stalled_after: Duration) -> Health {
        let partitions = self.snapshot();
        let problems = partitions
            .iter()
            .filter_map(|p| match p.state {
                WorkerState::Stopped => Some(HealthProblem::Stopped {
                    name: p.name.clone(),
                    partition: p.partition,
                    error: p.error.clone().unwrap_or_default(),
                }),
                WorkerState::Running if p.lag_events > 0 && p.since_progress >= stalled_after => {
                    Some(HealthProblem::Stalled {
                        name: p.name.clone(),
                        partition: p.partition,
                        position: p.position,
                        head: p.head,
                        for_: p.since_progress,
                    })
                }
                _ => None,
            })
            .collect();
        Health {
            partitions,
            problems,
        }
    }

    /// Waits until every partition of `name` saved a checkpoint at or after `position`;
    /// `Err(partition)` when one stops first.
    pub(crate) async fn wait_for(&self, name: &str, position: u64) -> Result<(), u32> {
        let mut changed = self.changed.subscribe();
        loop {
            changed.borrow_and_update();
            let mut done = true;
            for p in self.snapshot().iter().filter(|p| p.name == name) {
                if matches!(p.state, WorkerState::Stopped | WorkerState::Finished) {
                    return Err(p.partition);
                }
                done &= p.checkpoint >= position;
            }
            if done {
                return Ok(());
            }
            // The sender lives in `self`.
            let _ = changed.changed().await;
        }
    }

    pub(crate) fn snapshot(&self) -> Vec<PartitionStatus> {
        let now = Instant::now();
        self.cells()
            .iter()
            .map(|((name, partition), c)| PartitionStatus {
                name: name.clone(),
                partition: *partition,
                state: c.state,
                checkpoint: c.checkpoint,
                position: c.position,
                head: c.head,
                lag_events: c.head.saturating_sub(c.position),
                lag_time: c.behind_since.map_or(Duration::ZERO, |t| now - t),
                since_progress: now - c.last_progress,
                error: c.error.clone(),
            })
            .collect()
    }
}

#[cfg(feature = "metrics")]
fn record_metrics(name: &str, partition: u32, cell: &StatusCell, now: Instant) {
    let labels = [
        ("projection", name.to_owned()),
        ("partition", partition.to_string()),
    ];
    #[allow(
        clippy::cast_precision_loss,
        reason = "a gauge is a float; lags beyond 2^53 events lose precision harmlessly"
    )]
    let lag = cell.head.saturating_sub(cell.position) as f64;
    metrics::gauge!("factum_projection_lag_positions", &labels).set(lag);
    let behind = cell.behind_since.map_or(0.0, |t| (now - t).as_secs_f64());
    metrics::gauge!("factum_projection_lag_seconds", &labels).set(behind);
}

/// Registers projections and starts them together.
///
/// The checkpoint, lease and dead-letter stores default to in-memory ones (one process);
/// give shared ones (PostgreSQL) to scale out across processes.
#[derive(Debug)]
pub struct ProjectionRunner<
    S,
    C = MemoryCheckpointStore,
    L = MemoryLeaseStore,
    D = MemoryDeadLetterStore,
> {
    store: S,
    checkpoints: C,
    leases: L,
    dead_letters: D,
    options: RunnerOptions,
    projections: Vec<Registered>,
}

struct Registered {
    name: String,
    projection: Arc<dyn ErasedProjection>,
    subscription: SubscriptionOptions,
    options: ProjectionOptions,
}

impl std::fmt::Debug for Registered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registered")
            .field("name", &self.name)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl<S: EventStore> ProjectionRunner<S> {
    /// A runner over `store` with in-memory checkpoints, leases and dead letters.
    pub fn new(store: S) -> Self {
        Self {
            store,
            checkpoints: MemoryCheckpointStore::new(),
            leases: MemoryLeaseStore::new(),
            dead_letters: MemoryDeadLetterStore::new(),
            options: RunnerOptions::new(),
            projections: Vec::new(),
        }
    }
}

impl<S, C, L, D> ProjectionRunner<S, C, L, D>
where
    S: EventStore,
    C: CheckpointStore,
    L: LeaseStore,
    D: DeadLetterStore,
{
    /// Uses `checkpoints` for the checkpoints.
    pub fn with_checkpoints<C2: CheckpointStore>(
        self,
        checkpoints: C2,
    ) -> ProjectionRunner<S, C2, L, D> {
        ProjectionRunner {
            store: self.store,
            checkpoints,
            leases: self.leases,
            dead_letters: self.dead_letters,
            options: self.options,
            projections: self.projections,
        }
    }

    /// Uses `leases` for the leases.
    pub fn with_leases<L2: LeaseStore>(self, leases: L2) -> ProjectionRunner<S, C, L2, D> {
        ProjectionRunner {
            store: self.store,
            checkpoints: self.checkpoints,
            leases,
            dead_letters: self.dead_letters,
            options: self.options,
            projections: self.projections,
        }
    }

    /// Uses `dead_letters` for parked events.
    pub fn with_dead_letters<D2: DeadLetterStore>(
        self,
        dead_letters: D2,
    ) -> ProjectionRunner<S, C, L, D2> {
        ProjectionRunner {
            store: self.store,
            checkpoints: self.checkpoints,
            leases: self.leases,
            dead_letters,
            options: self.options,
            projections: self.projections,
        }
    }

    /// Sets the runner's options.
    #[must_use]
    pub fn options(mut self, options: RunnerOptions) -> Self {
        self.options = options;
        self
    }

    /// Adds a projection. A second projection with the same name replaces the first.
    #[must_use]
    pub fn register<P: Projection>(mut self, projection: P, options: ProjectionOptions) -> Self {
        let name = projection.name().to_owned();
        let subscription = SubscriptionOptions::new()
            .batch_size(options.batch_size)
            .poll_interval(options.poll_interval)
            .event_types(projection.event_types())
            .categories(projection.categories());
        self.projections.retain(|r| r.name != name);
        self.projections.push(Registered {
            name,
            projection: Arc::new(projection),
            subscription,
            options,
        });
        self
    }

    /// Starts a worker for every partition of every registered projection, on the current
    /// tokio runtime.
    pub fn start(self) -> RunningProjections<S, C, L, D> {
        let shutdown = Shutdown::new();
        let shared = Arc::new(Shared::default());
        let options = Arc::new(self.options);
        let mut tasks = JoinSet::new();
        let mut projections = HashMap::new();
        #[cfg(feature = "metrics")]
        tasks.spawn(Arc::clone(&shared).metrics_ticker(shutdown.clone()).map(Ok));
        for registered in self.projections {
            let (view, members) = watch::channel(Vec::new());
            tasks.spawn(
                membership(
                    self.leases.clone(),
                    registered.name.clone(),
                    options.worker_id.clone(),
                    options.lease_ttl,
                    view,
                    shutdown.clone(),
                )
                .map(Ok),
            );
            let assignment = Assignment::new(
                members,
                options.worker_id.clone(),
                registered.options.partitions,
            );
            let mut controls = Vec::new();
            for partition in 0..registered.options.partitions {
                let (tx, rx) = mpsc::unbounded_channel();
                controls.push(tx);
                shared.update(&registered.name, partition, |_| {});
                let worker = Worker {
                    store: self.store.clone(),
                    checkpoints: self.checkpoints.clone(),
                    leases: self.leases.clone(),
                    dead_letters: self.dead_letters.clone(),
                    projection: Arc::clone(&registered.projection),
                    name: registered.name.clone(),
                    partition,
                    options: registered.options.clone(),
                    subscription: registered.subscription.clone(),
                    runner: Arc::clone(&options),
                    shutdown: shutdown.clone(),
                    control: rx,
                    shared: Arc::clone(&shared),
                    assignment: assignment.clone(),
                    renew_at: Instant::now(),
                    progress: None,
                    batches: true,
                };
                tasks.spawn(worker.run());
            }
            projections.insert(
                registered.name.clone(),
                RunningProjection {
                    projection: registered.projection,
                    controls,
                },
            );
        }
        RunningProjections {
            store: self.store,
            checkpoints: self.checkpoints,
            dead_letters: self.dead_letters,
            leases: self.leases,
            shutdown,
            shared,
            tasks,
            projections,
        }
    }
}

struct RunningProjection {
    projection: Arc<dyn ErasedProjection>,
    controls: Vec<mpsc::UnboundedSender<Control>>,
}

impl std::fmt::Debug for RunningProjection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningProjection")
            .field("partitions", &self.controls.len())
            .finish_non_exhaustive()
    }
}

/// The running projections of a [`ProjectionRunner`].
///
/// [`shutdown`](Self::shutdown) stops them gracefully (each partition saves its checkpoint
/// and releases its lease). Dropping the handle aborts the workers where they are, as a crash
/// would: their leases then expire, and the events after the last saved checkpoints are
/// delivered again.
#[derive(Debug)]
pub struct RunningProjections<S, C, L, D> {
    store: S,
    checkpoints: C,
    leases: L,
    dead_letters: D,
    shutdown: Shutdown,
    shared: Arc<Shared>,
    tasks: JoinSet<Result<(), ProjectionError>>,
    projections: HashMap<String, RunningProjection>,
}

impl<S, C, L, D> RunningProjections<S, C, L, D>
where
    S: EventStore,
    C: CheckpointStore,
    L: LeaseStore,
    D: DeadLetterStore,
{
    /// Stops every worker gracefully and waits for them; returns the first error a worker
    /// stopped with.
    pub async fn shutdown(mut self) -> Result<(), ProjectionError> {
        self.shutdown.trigger();
        let mut first = None;
        while let Some(joined) = self.tasks.join_next().await {
            match joined {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first.get_or_insert(e);
                }
                Err(join) => {
                    tracing::error!(error = %join, "projection worker panicked or was aborted");
                }
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// The state of every partition.
    pub fn status(&self) -> Vec<PartitionStatus> {
        self.shared.snapshot()
    }

    /// Checks every partition: one behind the head whose position has not moved for
    /// `stalled_after` is stalled; one stopped by its failure policy is reported too.
    pub fn health(&self, stalled_after: Duration) -> Health {
        self.shared.health(stalled_after)
    }

    /// Waits until every partition of `name` in this runner has saved a checkpoint at or
    /// after `position` (read-your-writes for a read model). Fails when a partition stops
    /// first. A partition held by another process does not move here: bound the wait with a
    /// timeout when several processes share the projection.
    pub async fn wait_for(&self, name: &str, position: u64) -> Result<(), ProjectionError> {
        if !self.projections.contains_key(name) {
            return Err(ProjectionError::UnknownProjection {
                name: name.to_owned(),
            });
        }
        self.shared
            .wait_for(name, position)
            .await
            .map_err(|partition| ProjectionError::NotRunning {
                name: name.to_owned(),
                partition,
            })
    }

    /// The parked events of `name`, by position.
    pub async fn parked(&self, name: &str) -> Result<Vec<ParkedEvent>, ProjectionError> {
        Ok(self.dead_letters.list(name).await?)
    }

    /// Asks for the parked events of `name` (of one stream, or all) to be handled again, in
    /// order, by the workers holding their partitions (in any process). An event that fails
    /// again stays parked, with the events of its stream behind it. Returns how many were
    /// marked.
    pub async fn replay_parked(
        &self,
        name: &str,
        stream: Option<&StreamId>,
    ) -> Result<usize, ProjectionError> {
        let marked = self.dead_letters.request_replay(name, stream).await?;
        if let Some(running) = self.projections.get(name) {
            for control in &running.controls {
                let _ = control.send(Control::ReplayParked);
            }
        }
        Ok(marked)
    }

    /// Rebuilds `name`: pauses its partitions, clears its parked events, calls
    /// [`Projection::reset`], resets its checkpoints to 0 and replays every event, while
    /// appends continue. `progress` is called after each batch, and the progress is logged as
    /// `tracing` events; returns once every partition has reached the head position seen at
    /// the start, and the projection carries on live.
    ///
    /// Every partition must be held by this runner (else [`ProjectionError::NotOwned`], and
    /// nothing is changed).
    pub async fn rebuild<F>(&self, name: &str, mut progress: F) -> Result<u64, ProjectionError>
    where
        F: FnMut(&RebuildProgress) + Send,
    {
        let running =
            self.projections
                .get(name)
                .ok_or_else(|| ProjectionError::UnknownProjection {
                    name: name.to_owned(),
                })?;
        // Resumes the paused partitions if this stops early (an error, or the caller dropping
        // the future), so that no partition stays paused.
        let mut guard = ResumeGuard {
            controls: &running.controls,
            paused: 0,
            from: None,
        };
        let mut leases = Vec::new();
        for (partition, control) in (0u32..).zip(&running.controls) {
            let (reply, replied) = oneshot::channel();
            let paused = if control.send(Control::Pause(reply)).is_ok() {
                replied.await.ok()
            } else {
                None
            };
            match paused {
                Some(Some(lease)) => {
                    leases.push(lease);
                    guard.paused += 1;
                }
                other => {
                    return Err(if other.is_some() {
                        ProjectionError::NotOwned {
                            name: name.to_owned(),
                            partition,
                        }
                    } else {
                        ProjectionError::NotRunning {
                            name: name.to_owned(),
                            partition,
                        }
                    });
                }
            }
        }
        let target = self.store.head_position().await?;
        self.dead_letters.clear(name).await?;
        running
            .projection
            .reset()
            .await
            .map_err(|source| ProjectionError::Reset {
                name: name.to_owned(),
                source,
            })?;
        // The read model is empty now: from here on, partitions resume from the start.
        guard.from = Some(0);
        for lease in &leases {
            self.checkpoints.save(lease, 0).await?;
        }
        tracing::info!(projection = name, target, "rebuild started");
        let (tx, mut rx) = mpsc::unbounded_channel();
        guard.paused = 0;
        resume(&running.controls, Some(0), Some(&tx));
        drop(tx);
        let mut positions = vec![0u64; running.controls.len()];
        loop {
            let position = positions.iter().copied().min().unwrap_or(target);
            let report = RebuildProgress {
                name: name.to_owned(),
                position: position.min(target),
                target,
            };
            tracing::info!(
                projection = name,
                position = report.position,
                target,
                "rebuild progress"
            );
            progress(&report);
            if position >= target {
                break;
            }
            let Some((partition, position)) = rx.recv().await else {
                return Err(ProjectionError::NotRunning {
                    name: name.to_owned(),
                    partition: 0,
                });
            };
            if let Some(slot) = usize::try_from(partition)
                .ok()
                .and_then(|p| positions.get_mut(p))
            {
                *slot = position;
            }
        }
        tracing::info!(projection = name, target, "rebuild done");
        Ok(target)
    }

    /// The lease store, for inspection.
    pub fn leases(&self) -> &L {
        &self.leases
    }

    /// The checkpoint store, for inspection.
    pub fn checkpoints(&self) -> &C {
        &self.checkpoints
    }
}

/// See [`RunningProjections::rebuild`].
struct ResumeGuard<'a> {
    controls: &'a [mpsc::UnboundedSender<Control>],
    /// How many partitions (the first ones) are paused and not yet resumed.
    paused: usize,
    /// Where they resume: where they were, or from the start once the read model was reset.
    from: Option<u64>,
}

impl Drop for ResumeGuard<'_> {
    fn drop(&mut self) {
        if self.paused > 0 {
            resume(&self.controls[..self.paused], self.from, None);
        }
    }
}

fn resume(
    controls: &[mpsc::UnboundedSender<Control>],
    from: Option<u64>,
    progress: Option<&mpsc::UnboundedSender<(u32, u64)>>,
) {
    for control in controls {
        let _ = control.send(Control::Resume {
            from,
            progress: progress.cloned(),
        });
    }
}

/// Whether a handler's error is (or wraps) a lost lease.
fn is_fenced(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.downcast_ref::<CoordinationError>()
            .is_some_and(CoordinationError::is_fenced)
        {
            return true;
        }
        current = e.source();
    }
    false
}

enum Control {
    /// Pause at the next batch boundary; reply with the lease, or `None` when not holding it.
    Pause(oneshot::Sender<Option<Lease>>),
    /// Resume a paused worker, from a position (or where it was), reporting progress.
    Resume {
        from: Option<u64>,
        progress: Option<mpsc::UnboundedSender<(u32, u64)>>,
    },
    /// Look for replay requests now.
    ReplayParked,
}

/// Why a worker left its lease loop.
enum Exit {
    Shutdown,
    LeaseLost,
    /// The members changed and another worker should hold the partition.
    Handoff,
}

/// A failure inside the lease loop.
enum Failure {
    /// Retried after a pause (store unavailable, and so on).
    Transient(ProjectionError),
    /// Ends the worker (failure policy `Stop`).
    Fatal(ProjectionError),
}

impl<E: Into<ProjectionError>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Transient(e.into())
    }
}

/// What became of one event.
enum Delivery {
    Handled,
    Parked,
    Interrupted(Exit),
}

/// The outcome of trying a handler per the failure policy.
enum Attempt {
    Handled,
    Failed(BoxError, u32),
    Interrupted(Exit),
}

struct Worker<S, C, L, D> {
    store: S,
    checkpoints: C,
    leases: L,
    dead_letters: D,
    projection: Arc<dyn ErasedProjection>,
    name: String,
    partition: u32,
    options: ProjectionOptions,
    subscription: SubscriptionOptions,
    runner: Arc<RunnerOptions>,
    shutdown: Shutdown,
    control: mpsc::UnboundedReceiver<Control>,
    shared: Arc<Shared>,
    assignment: Assignment,
    renew_at: Instant,
    progress: Option<mpsc::UnboundedSender<(u32, u64)>>,
    /// Whether batches are still offered to the projection (until it declines one).
    batches: bool,
}

impl<S, C, L, D> Worker<S, C, L, D>
where
    S: EventStore,
    C: CheckpointStore,
    L: LeaseStore,
    D: DeadLetterStore,
{
    async fn run(mut self) -> Result<(), ProjectionError> {
        let span = tracing::info_span!(
            "projection",
            projection = %self.name,
            partition = self.partition,
            worker = %self.runner.worker_id,
        );
        async move {
            loop {
                self.set_state(WorkerState::WaitingForLease);
                let Some(lease) = self.acquire().await else {
                    self.set_state(WorkerState::Finished);
                    return Ok(());
                };
                tracing::info!(fence = lease.fence, "lease acquired");
                let outcome = self.run_with_lease(&lease).await;
                match outcome {
                    Ok(Exit::Shutdown) => {
                        self.release(&lease).await;
                        self.set_state(WorkerState::Finished);
                        return Ok(());
                    }
                    Ok(Exit::LeaseLost) => {
                        tracing::warn!(fence = lease.fence, "lease lost");
                    }
                    Ok(Exit::Handoff) => {
                        tracing::info!(fence = lease.fence, "handing the partition over");
                        self.release(&lease).await;
                    }
                    Err(Failure::Transient(error)) => {
                        tracing::warn!(%error, "projection partition interrupted; retrying");
                        let pause = self.runner.lease_retry.min(self.options.poll_interval);
                        tokio::select! {
                            () = self.shutdown.triggered() => {}
                            () = tokio::time::sleep(pause) => {}
                        }
                    }
                    Err(Failure::Fatal(error)) => {
                        tracing::error!(%error, "projection partition stopped");
                        self.release(&lease).await;
                        let message = error.to_string();
                        self.update(|c| {
                            c.state = WorkerState::Stopped;
                            c.error = Some(message);
                        });
                        return Err(error);
                    }
                }
            }
        }
        .instrument(span)
        .await
    }

    fn update(&self, f: impl FnOnce(&mut StatusCell)) {
        self.shared.update(&self.name, self.partition, f);
    }

    fn set_state(&self, state: WorkerState) {
        self.update(|c| c.state = state);
    }

    async fn release(&self, lease: &Lease) {
        if let Err(error) = self.leases.release(lease).await {
            tracing::warn!(%error, "could not release the lease; it will expire");
        }
    }

    /// Takes the lease, waiting while someone else holds it; `None` on shutdown.
    async fn acquire(&mut self) -> Option<Lease> {
        loop {
            if self.shutdown.is_triggered() {
                return None;
            }
            if !self.assignment.owns(self.partition) {
                tokio::select! {
                    () = self.shutdown.triggered() => return None,
                    () = self.assignment.changed() => {}
                    () = tokio::time::sleep(self.runner.lease_retry) => {}
                    control = self.control.recv() => match control {
                        Some(Control::Pause(reply)) => {
                            let _ = reply.send(None);
                        }
                        Some(_) => {}
                        None => return None,
                    },
                }
                continue;
            }
            match self
                .leases
                .acquire(
                    &self.name,
                    self.partition,
                    &self.runner.worker_id,
                    self.runner.lease_ttl,
                )
                .await
            {
                Ok(Some(lease)) => {
                    self.renew_at = Instant::now() + self.runner.lease_ttl / 3;
                    return Some(lease);
                }
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, "could not try the lease"),
            }
            let retry = tokio::time::sleep(self.runner.lease_retry);
            tokio::pin!(retry);
            loop {
                tokio::select! {
                    () = self.shutdown.triggered() => return None,
                    () = &mut retry => break,
                    control = self.control.recv() => match control {
                        Some(Control::Pause(reply)) => {
                            let _ = reply.send(None);
                        }
                        Some(_) => {}
                        None => return None,
                    },
                }
            }
        }
    }

    /// Renews the lease when a third of its time has passed; `false` when it was lost.
    async fn renew_if_due(&mut self, lease: &Lease) -> Result<bool, Failure> {
        if Instant::now() < self.renew_at {
            return Ok(true);
        }
        let held = self.leases.renew(lease, self.runner.lease_ttl).await?;
        self.renew_at = Instant::now() + self.runner.lease_ttl / 3;
        Ok(held)
    }

    async fn run_with_lease(&mut self, lease: &Lease) -> Result<Exit, Failure> {
        let mut position = match self.checkpoints.claim(lease).await {
            Ok(position) => position,
            Err(e) if e.is_fenced() => return Ok(Exit::LeaseLost),
            Err(e) => return Err(e.into()),
        };
        let mut saved = position;
        let mut blocked = self.load_blocked().await?;
        let mut subscription =
            Subscription::new(self.store.clone(), position, self.subscription.clone());
        self.update(|c| {
            c.state = WorkerState::Running;
            c.checkpoint = position;
            c.position = position;
            c.error = None;
        });
        let mut replay_check = Instant::now();
        loop {
            if !self.renew_if_due(lease).await? {
                return Ok(Exit::LeaseLost);
            }
            if Instant::now() >= replay_check {
                if let Some(exit) = self.replay_requested(lease, &mut blocked).await? {
                    return Ok(exit);
                }
                replay_check = Instant::now() + self.options.poll_interval;
            }
            let next = tokio::select! {
                biased;
                () = self.shutdown.triggered() => return Ok(Exit::Shutdown),
                control = self.control.recv() => Step::Control(control),
                () = self.assignment.lost(self.partition) => return Ok(Exit::Handoff),
                () = tokio::time::sleep_until(self.renew_at) => continue,
                batch = subscription.next(&self.shutdown) => Step::Batch(batch),
            };
            let batch = match next {
                Step::Control(None) => return Ok(Exit::Shutdown),
                Step::Control(Some(Control::ReplayParked)) => {
                    replay_check = Instant::now();
                    continue;
                }
                Step::Control(Some(Control::Resume { .. })) => continue,
                Step::Control(Some(Control::Pause(reply))) => {
                    let _ = reply.send(Some(lease.clone()));
                    match self.paused(lease).await? {
                        Paused::Resume(from) => {
                            if let Some(from) = from {
                                position = from;
                                saved = from;
                                blocked.clear();
                                subscription.seek(from);
                            }
                            self.update(|c| {
                                c.state = WorkerState::Running;
                                c.checkpoint = saved;
                                c.position = position;
                            });
                            self.report_progress(position);
                            continue;
                        }
                        Paused::Exit(exit) => return Ok(exit),
                    }
                }
                Step::Batch(batch) => match batch? {
                    Some(batch) => batch,
                    None => return Ok(Exit::Shutdown),
                },
            };
            let head = batch.head;
            self.update(|c| c.head = c.head.max(head));
            let span = tracing::debug_span!("batch", events = batch.events.len(), head);
            let interrupted = self
                .handle_batch(lease, &batch.events, &mut position, &mut blocked)
                .instrument(span)
                .await?;
            if interrupted.is_none() {
                position = batch.scanned_to;
            }
            if matches!(interrupted, Some(Exit::LeaseLost)) {
                return Ok(Exit::LeaseLost);
            }
            if position != saved {
                match self.checkpoints.save(lease, position).await {
                    Ok(()) => saved = position,
                    Err(e) if e.is_fenced() => return Ok(Exit::LeaseLost),
                    Err(e) => return Err(e.into()),
                }
            }
            self.update(|c| {
                c.checkpoint = saved;
                c.position = position;
            });
            self.report_progress(position);
            if let Some(exit) = interrupted {
                return Ok(exit);
            }
        }
    }

    fn report_progress(&mut self, position: u64) {
        if let Some(progress) = &self.progress {
            if progress.send((self.partition, position)).is_err() {
                self.progress = None;
            }
        }
    }

    /// Handles the events of a batch that belong to this partition; `Some` when shutdown or
    /// a lost lease interrupted it (then `position` is the last event done).
    async fn handle_batch(
        &mut self,
        lease: &Lease,
        events: &[RecordedEvent],
        position: &mut u64,
        blocked: &mut HashMap<StreamId, u64>,
    ) -> Result<Option<Exit>, Failure> {
        let partitions = self.options.partitions;
        if self.batches {
            let mine: Vec<&RecordedEvent> = events
                .iter()
                .filter(|e| partition_of(e.stream_id.as_str(), partitions) == self.partition)
                .collect();
            if mine.len() > 1 && !mine.iter().any(|e| blocked.contains_key(&e.stream_id)) {
                if self.shutdown.is_triggered() {
                    return Ok(Some(Exit::Shutdown));
                }
                if !self.renew_if_due(lease).await? {
                    return Ok(Some(Exit::LeaseLost));
                }
                let context = HandleContext::new(lease.clone(), 1);
                match self.projection.handle_batch(&mine, &context).await {
                    Ok(true) => {
                        if let Some(last) = events.last() {
                            *position = last.position;
                            let p = last.position;
                            self.update(|c| c.position = p);
                        }
                        return Ok(None);
                    }
                    Ok(false) => self.batches = false,
                    Err(error) if is_fenced(&*error) => {
                        tracing::warn!(%error, "the batch handler found the lease taken over");
                        return Ok(Some(Exit::LeaseLost));
                    }
                    Err(error) => tracing::warn!(
                        events = mine.len(),
                        %error,
                        "batch handler failed; handling its events one by one"
                    ),
                }
            }
        }
        for event in events {
            if self.shutdown.is_triggered() {
                return Ok(Some(Exit::Shutdown));
            }
            if partition_of(event.stream_id.as_str(), partitions) == self.partition {
                if !self.renew_if_due(lease).await? {
                    return Ok(Some(Exit::LeaseLost));
                }
                match self.deliver(lease, event, blocked).await? {
                    Delivery::Handled | Delivery::Parked => {}
                    Delivery::Interrupted(exit) => return Ok(Some(exit)),
                }
            }
            *position = event.position;
            let p = event.position;
            self.update(|c| c.position = p);
        }
        Ok(None)
    }

    /// Tries the handler per the failure policy, renewing the lease between attempts.
    async fn attempt(&mut self, event: &RecordedEvent, lease: &Lease) -> Result<Attempt, Failure> {
        let policy = self.options.failure;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let context = HandleContext::new(lease.clone(), attempt);
            match self.projection.handle(event, &context).await {
                Ok(()) => return Ok(Attempt::Handled),
                Err(error) if is_fenced(&*error) => {
                    tracing::warn!(
                        position = event.position,
                        %error,
                        "the handler found the lease taken over"
                    );
                    return Ok(Attempt::Interrupted(Exit::LeaseLost));
                }
                Err(error) => {
                    tracing::warn!(
                        position = event.position,
                        stream = %event.stream_id,
                        event_type = %event.event_type,
                        attempt,
                        %error,
                        "projection handler failed"
                    );
                    if attempt >= policy.max_attempts {
                        return Ok(Attempt::Failed(error, attempt));
                    }
                    tokio::select! {
                        () = self.shutdown.triggered() => {
                            return Ok(Attempt::Interrupted(Exit::Shutdown));
                        }
                        () = tokio::time::sleep(policy.delay(attempt)) => {}
                    }
                    if !self.renew_if_due(lease).await? {
                        return Ok(Attempt::Interrupted(Exit::LeaseLost));
                    }
                }
            }
        }
    }

    async fn deliver(
        &mut self,
        lease: &Lease,
        event: &RecordedEvent,
        blocked: &mut HashMap<StreamId, u64>,
    ) -> Result<Delivery, Failure> {
        if let Some(&behind) = blocked.get(&event.stream_id) {
            tracing::info!(
                position = event.position,
                stream = %event.stream_id,
                behind,
                "parking an event behind a parked event of its stream"
            );
            self.park(event, ParkReason::Waiting { behind }).await?;
            return Ok(Delivery::Parked);
        }
        match self.attempt(event, lease).await? {
            Attempt::Interrupted(exit) => Ok(Delivery::Interrupted(exit)),
            Attempt::Handled => Ok(Delivery::Handled),
            Attempt::Failed(error, attempts) => match self.options.failure.on_exhausted {
                OnExhausted::Park => {
                    tracing::error!(
                        position = event.position,
                        stream = %event.stream_id,
                        attempts,
                        %error,
                        "parking an event whose handler keeps failing"
                    );
                    self.park(
                        event,
                        ParkReason::Failed {
                            error: error.to_string(),
                            attempts,
                        },
                    )
                    .await?;
                    blocked.insert(event.stream_id.clone(), event.position);
                    Ok(Delivery::Parked)
                }
                OnExhausted::Stop => Err(Failure::Fatal(ProjectionError::HandlerFailed {
                    name: self.name.clone(),
                    position: event.position,
                    stream: event.stream_id.clone(),
                    attempts,
                    source: error,
                })),
            },
        }
    }

    async fn park(&self, event: &RecordedEvent, reason: ParkReason) -> Result<(), Failure> {
        let parked = ParkedEvent::new(
            self.name.clone(),
            self.partition,
            event.position,
            event.event_id,
            event.stream_id.clone(),
            event.event_type.clone(),
            reason,
        );
        self.dead_letters.park(&parked).await?;
        Ok(())
    }

    /// The streams of this partition with parked events, each with its first parked position.
    async fn load_blocked(&self) -> Result<HashMap<StreamId, u64>, Failure> {
        let mut blocked = HashMap::new();
        for parked in self
            .dead_letters
            .list_partition(&self.name, self.partition)
            .await?
        {
            blocked.entry(parked.stream_id).or_insert(parked.position);
        }
        Ok(blocked)
    }

    /// Replays the parked events of streams with a replay request, each stream in order;
    /// `Some` when shutdown or a lost lease interrupted it.
    async fn replay_requested(
        &mut self,
        lease: &Lease,
        blocked: &mut HashMap<StreamId, u64>,
    ) -> Result<Option<Exit>, Failure> {
        let parked = self
            .dead_letters
            .list_partition(&self.name, self.partition)
            .await?;
        let streams: BTreeSet<StreamId> = parked
            .iter()
            .filter(|p| p.replay_requested)
            .map(|p| p.stream_id.clone())
            .collect();
        for stream in streams {
            let mut entries: Vec<&ParkedEvent> =
                parked.iter().filter(|p| p.stream_id == stream).collect();
            entries.sort_by_key(|p| p.position);
            tracing::info!(stream = %stream, events = entries.len(), "replaying parked events");
            let mut failed_at = None;
            for entry in entries {
                if let Some(behind) = failed_at {
                    let mut waiting = entry.clone();
                    waiting.reason = ParkReason::Waiting { behind };
                    waiting.replay_requested = false;
                    self.dead_letters.park(&waiting).await?;
                    continue;
                }
                let Some(event) = self.store.event_by_id(entry.event_id).await? else {
                    tracing::error!(
                        position = entry.position,
                        event_id = %entry.event_id,
                        "a parked event is no longer in the store; dropping the entry"
                    );
                    self.dead_letters.remove(&self.name, entry.position).await?;
                    continue;
                };
                match self.attempt(&event, lease).await? {
                    Attempt::Interrupted(exit) => return Ok(Some(exit)),
                    Attempt::Handled => {
                        self.dead_letters.remove(&self.name, entry.position).await?;
                    }
                    Attempt::Failed(error, attempts) => {
                        let earlier = match &entry.reason {
                            ParkReason::Failed { attempts, .. } => *attempts,
                            ParkReason::Waiting { .. } => 0,
                        };
                        let mut again = entry.clone();
                        again.reason = ParkReason::Failed {
                            error: error.to_string(),
                            attempts: earlier.saturating_add(attempts),
                        };
                        again.replay_requested = false;
                        again.parked_at = Utc::now();
                        self.dead_letters.park(&again).await?;
                        failed_at = Some(entry.position);
                    }
                }
            }
            match failed_at {
                Some(position) => {
                    blocked.insert(stream, position);
                }
                None => {
                    tracing::info!(stream = %stream, "parked events replayed");
                    blocked.remove(&stream);
                }
            }
        }
        Ok(None)
    }

    /// Waits while paused by a rebuild, keeping the lease.
    async fn paused(&mut self, lease: &Lease) -> Result<Paused, Failure> {
        self.set_state(WorkerState::Paused);
        loop {
            tokio::select! {
                () = self.shutdown.triggered() => return Ok(Paused::Exit(Exit::Shutdown)),
                () = tokio::time::sleep_until(self.renew_at) => {
                    if !self.renew_if_due(lease).await? {
                        return Ok(Paused::Exit(Exit::LeaseLost));
                    }
                }
                control = self.control.recv() => match control {
                    None => return Ok(Paused::Exit(Exit::Shutdown)),
                    Some(Control::Pause(reply)) => {
                        let _ = reply.send(Some(lease.clone()));
                    }
                    Some(Control::ReplayParked) => {}
                    Some(Control::Resume { from, progress }) => {
                        self.progress = progress;
                        return Ok(Paused::Resume(from));
                    }
                },
            }
        }
    }
}

enum Step {
    Control(Option<Control>),
    Batch(Result<Option<crate::subscription::Batch>, StoreError>),
}

enum Paused {
    Resume(Option<u64>),
    Exit(Exit),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fenced() -> CoordinationError {
        CoordinationError::Fenced {
            name: "p".into(),
            partition: 0,
            fence: 1,
            current: 2,
        }
    }

    #[derive(Debug, thiserror::Error)]
    #[error("the transaction failed")]
    struct Wrapped(#[source] CoordinationError);

    #[test]
    fn lost_leases_are_recognised_in_handler_errors() {
        let direct: BoxError = Box::new(fenced());
        assert!(is_fenced(&*direct));
        let wrapped: BoxError = Box::new(Wrapped(fenced()));
        assert!(is_fenced(&*wrapped));
        let other: BoxError = "boom".into();
        assert!(!is_fenced(&*other));
        let backend: BoxError = Box::new(CoordinationError::Backend("down".into()));
        assert!(!is_fenced(&*backend));
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let policy = FailurePolicy::stop_after(0)
            .backoff(Duration::from_millis(10), Duration::from_millis(70));
        assert_eq!(policy.max_attempts, 1);
        let delays: Vec<_> = (1..=5).map(|a| policy.delay(a).as_millis()).collect();
        assert_eq!(delays, [10, 20, 40, 70, 70]);
        assert_eq!(policy.delay(u32::MAX), Duration::from_millis(70));
    }
}
