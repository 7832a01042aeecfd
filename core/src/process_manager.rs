//! Process managers (sagas): events routed to instances by a correlation key, handlers that
//! decide commands, an outbox of commands with deterministic ids, compensation and durable
//! timeouts.
//!
//! A [`ProcessManager`] routes each event to an instance ([`Route`]): a start creates the
//! instance (a strict start refuses one that exists), a continue reaches an existing one, a
//! stop finishes it. Its handlers change the instance's state and return [`Effects`]:
//! commands to dispatch, timeouts to schedule or cancel, completion.
//!
//! # No duplicated effects
//!
//! Processing an event stores, in one [`ProcessStore::save`], the instance's new state, the
//! event's position (so a redelivered event is recognised and not applied twice) and the
//! commands it caused (an outbox). Each command gets an id derived from the process, the
//! instance, the causing event and the command's index ([`process_command_id`]), so dispatching
//! it again after a crash hits the repository's command-id idempotency and appends nothing
//! new. Commands leave the outbox once dispatched; a worker that takes over a partition first
//! dispatches what the outbox still holds.
//!
//! # Compensation and timeouts
//!
//! A command rejected by its aggregate ([`DispatchError::Rejected`]) is given to
//! [`ProcessManager::on_rejected`], whose effects (compensating commands) go through the same
//! outbox. Timeouts are stored with the instance, as wall-clock deadlines read from a [`Clock`];
//! a worker fires the due ones, so a deadline that passes while no process runs fires after the
//! restart.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument;
use uuid::Uuid;

use crate::coordination::{
    Assignment, CheckpointStore, CoordinationError, Lease, LeaseStore, MemoryCheckpointStore,
    MemoryLeaseStore, membership, partition_of,
};
use crate::error::{BoxError, StoreError};
use crate::event::{Payload, RecordedEvent};
use crate::metadata::Metadata;
use crate::projection::{FailurePolicy, Health, PartitionStatus, RunnerOptions, WorkerState};
use crate::runtime::status::Shared;
use crate::store::EventStore;
use crate::subscription::{Shutdown, Subscription, SubscriptionOptions};

/// Namespace of the command ids derived by process managers.
const COMMAND_ID_NAMESPACE: Uuid = Uuid::from_u128(0x3b1c_9d0e_77a4_4f52_8e6b_5a0d_c2f1_9e34);

/// The id of the `index`-th command that process `process`, instance `key`, dispatches because
/// of the message `cause` (an event id, a rejected command's id, or a timeout's id). The same
/// inputs always give the same id, so a redelivered event re-dispatches the same command and
/// the repository's command-id idempotency keeps it from applying twice.
pub fn process_command_id(process: &str, key: &str, cause: Uuid, index: u32) -> Uuid {
    let mut name = Vec::with_capacity(process.len() + key.len() + 22);
    name.extend_from_slice(process.as_bytes());
    name.push(0);
    name.extend_from_slice(key.as_bytes());
    name.push(0);
    name.extend_from_slice(cause.as_bytes());
    name.extend_from_slice(&index.to_be_bytes());
    Uuid::new_v5(&COMMAND_ID_NAMESPACE, &name)
}

/// Where an event goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// Starts the instance with this key, or continues it when it exists.
    Start(String),
    /// Starts the instance with this key; refused (and logged) when it exists already.
    StartStrict(String),
    /// Continues the existing instance with this key; ignored when there is none.
    Continue(String),
    /// Handles the event in the existing instance with this key, then completes it.
    Stop(String),
    /// Not for this process manager.
    Ignore,
}

impl Route {
    /// The correlation key, unless ignored.
    pub fn key(&self) -> Option<&str> {
        match self {
            Route::Start(k) | Route::StartStrict(k) | Route::Continue(k) | Route::Stop(k) => {
                Some(k)
            }
            Route::Ignore => None,
        }
    }
}

/// What a handler decided: commands, timeouts, completion.
#[derive(Clone, Debug, PartialEq)]
#[must_use]
pub struct Effects<C> {
    /// Commands to dispatch, in order.
    pub commands: Vec<C>,
    /// Timeouts to schedule (replacing one of the same name).
    pub schedule: Vec<(String, DateTime<Utc>)>,
    /// Names of timeouts to cancel.
    pub cancel: Vec<String>,
    /// Whether the instance is finished.
    pub complete: bool,
}

impl<C> Default for Effects<C> {
    fn default() -> Self {
        Self::none()
    }
}

impl<C> Effects<C> {
    /// Nothing.
    pub fn none() -> Self {
        Self {
            commands: Vec::new(),
            schedule: Vec::new(),
            cancel: Vec::new(),
            complete: false,
        }
    }

    /// Adds a command.
    pub fn command(mut self, command: C) -> Self {
        self.commands.push(command);
        self
    }

    /// Schedules the timeout `name` at `at` (replacing an earlier one of that name).
    pub fn schedule(mut self, name: impl Into<String>, at: DateTime<Utc>) -> Self {
        self.schedule.push((name.into(), at));
        self
    }

    /// Cancels the timeout `name`.
    pub fn cancel(mut self, name: impl Into<String>) -> Self {
        self.cancel.push(name.into());
        self
    }

    /// Completes the instance: later events for its key are ignored, its timeouts dropped.
    pub fn complete(mut self) -> Self {
        self.complete = true;
        self
    }
}

impl<C> From<Vec<C>> for Effects<C> {
    fn from(commands: Vec<C>) -> Self {
        Self {
            commands,
            ..Self::none()
        }
    }
}

/// A process manager: routes events to instances and decides commands.
///
/// Handlers are plain functions of the instance's state and the event, like an aggregate's;
/// the runtime stores the state, dispatches the commands and fires the timeouts.
///
/// ```
/// use factum::{BoxError, Effects, ProcessManager, RecordedEvent, Route};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Serialize, Deserialize)]
/// enum Command {
///     Reserve { order_id: String },
///     Cancel { order_id: String },
/// }
///
/// #[derive(Default, Serialize, Deserialize)]
/// struct Fulfillment {
///     reserved: bool,
/// }
///
/// struct OrderFulfillment;
///
/// impl ProcessManager for OrderFulfillment {
///     type State = Fulfillment;
///     type Command = Command;
///
///     fn name(&self) -> &str {
///         "order_fulfillment"
///     }
///
///     fn event_types(&self) -> Vec<String> {
///         vec!["OrderPlaced".into(), "OrderShipped".into()]
///     }
///
///     fn route(&self, event: &RecordedEvent) -> Result<Route, BoxError> {
///         let order_id = event.stream_id.id().to_owned();
///         Ok(match event.event_type.as_str() {
///             "OrderPlaced" => Route::StartStrict(order_id),
///             "OrderShipped" => Route::Stop(order_id),
///             _ => Route::Ignore,
///         })
///     }
///
///     fn handle(
///         &self,
///         state: &mut Fulfillment,
///         event: &RecordedEvent,
///     ) -> Result<Effects<Command>, BoxError> {
///         let order_id = event.stream_id.id().to_owned();
///         Ok(match event.event_type.as_str() {
///             "OrderPlaced" => {
///                 state.reserved = true;
///                 Effects::none()
///                     .command(Command::Reserve { order_id })
///                     .schedule("payment", event.recorded_at + chrono::Duration::days(1))
///             }
///             _ => Effects::none(),
///         })
///     }
///
///     fn on_timeout(
///         &self,
///         key: &str,
///         _state: &mut Fulfillment,
///         _name: &str,
///     ) -> Result<Effects<Command>, BoxError> {
///         Ok(Effects::none()
///             .command(Command::Cancel { order_id: key.to_owned() })
///             .complete())
///     }
/// }
/// ```
pub trait ProcessManager: Send + Sync + 'static {
    /// An instance's state, stored as JSON between events.
    type State: Serialize + DeserializeOwned + Default + Send + Sync;
    /// The commands it dispatches, stored in the outbox as JSON until dispatched.
    type Command: Serialize + DeserializeOwned + Send + Sync + 'static;

    /// The name: the key of its instances, checkpoints and leases. Unique among the
    /// projections and process managers sharing those stores.
    fn name(&self) -> &str;

    /// The stored event types it handles; other events are never read. Empty: every event.
    fn event_types(&self) -> Vec<String>;

    /// Where `event` goes.
    ///
    /// An error (typically an event that does not decode, so its key cannot be read) stops
    /// the process manager at this event, as a handler error does: every partition reads the
    /// event and none can tell whether it owns it, so every partition stops there, its
    /// checkpoint before the event, and resumes from it when restarted after a fix. Nothing
    /// is skipped.
    fn route(&self, event: &RecordedEvent) -> Result<Route, BoxError>;

    /// Handles `event` in an instance. An error stops the partition at this event.
    fn handle(
        &self,
        state: &mut Self::State,
        event: &RecordedEvent,
    ) -> Result<Effects<Self::Command>, BoxError>;

    /// A dispatched command was rejected: returns compensating effects. By default, none.
    fn on_rejected(
        &self,
        state: &mut Self::State,
        command: &Self::Command,
        error: &str,
    ) -> Result<Effects<Self::Command>, BoxError> {
        let _ = (state, command, error);
        Ok(Effects::none())
    }

    /// The timeout `name` of instance `key` fired. By default, nothing happens.
    fn on_timeout(
        &self,
        key: &str,
        state: &mut Self::State,
        name: &str,
    ) -> Result<Effects<Self::Command>, BoxError> {
        let _ = (key, state, name);
        Ok(Effects::none())
    }
}

/// Why a command was not dispatched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DispatchError {
    /// The target refused it (a domain rule, an invalid command): retrying will not help;
    /// the process manager compensates.
    #[error("command rejected: {0}")]
    Rejected(String),
    /// It could not be dispatched now (store unavailable, conflicts): it is retried.
    #[error("command dispatch failed: {0}")]
    Failed(#[source] BoxError),
}

impl<E: std::error::Error + Send + Sync + 'static> From<crate::Error<E>> for DispatchError {
    /// A rejection or an invalid command is [`DispatchError::Rejected`]; anything else is
    /// [`DispatchError::Failed`].
    fn from(error: crate::Error<E>) -> Self {
        match error {
            crate::Error::Rejected(_) | crate::Error::InvalidCommand { .. } => {
                DispatchError::Rejected(error.to_string())
            }
            other => DispatchError::Failed(Box::new(other)),
        }
    }
}

/// Sends a process manager's commands to where they are executed, usually a
/// [`Repository::execute`](crate::Repository::execute) with the given metadata (whose
/// `command_id` makes the execution idempotent).
pub trait CommandDispatcher<C>: Send + Sync + 'static {
    /// Dispatches `command` with `metadata` (command id, correlation, causation).
    fn dispatch(
        &self,
        command: &C,
        metadata: &Metadata,
    ) -> impl Future<Output = Result<(), DispatchError>> + Send;
}

/// The source of wall-clock time for timeouts.
pub trait Clock: Send + Sync + 'static {
    /// Now.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock moved by hand, for tests. Cloning shares the time.
#[derive(Clone, Debug)]
pub struct ManualClock {
    now: Arc<Mutex<DateTime<Utc>>>,
}

impl ManualClock {
    /// A clock showing `start`.
    pub fn new(start: DateTime<Utc>) -> Self {
        Self {
            now: Arc::new(Mutex::new(start)),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = chrono::Duration::from_std(by).unwrap_or(chrono::Duration::MAX);
        let mut now = self
            .now
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *now = now.checked_add_signed(by).unwrap_or(*now);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self
            .now
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Whether an instance still takes events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum InstanceStatus {
    /// It takes events.
    Active,
    /// It finished: later events for its key are ignored.
    Completed,
}

/// A command in an instance's outbox.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PendingCommand {
    /// Its deterministic id (also in `metadata.command_id`).
    pub command_id: Uuid,
    /// The command, as JSON.
    pub command: Payload,
    /// Command id, correlation and causation for the dispatch.
    pub metadata: Metadata,
}

/// A scheduled timeout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Deadline {
    /// Its name in the instance.
    pub name: String,
    /// When it fires.
    pub due_at: DateTime<Utc>,
    /// Its id: the cause of the commands it leads to.
    pub id: Uuid,
}

/// One stored instance of a process manager.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ProcessInstance {
    /// The correlation key.
    pub key: String,
    /// The state, as JSON.
    pub state: Payload,
    /// Whether it still takes events.
    pub status: InstanceStatus,
    /// The position of the last event applied to it (a redelivered event at or below it is
    /// not applied again).
    pub last_position: u64,
    /// The correlation id of the flow: the starting event's, or its id when it had none.
    pub correlation_id: Option<Uuid>,
    /// Commands decided but not yet dispatched.
    pub pending: Vec<PendingCommand>,
    /// Scheduled timeouts.
    pub deadlines: Vec<Deadline>,
    /// Incremented by every save; a save must give the revision it loaded.
    pub revision: u64,
}

impl ProcessInstance {
    /// A new instance (revision 0: not stored yet).
    pub fn new(key: impl Into<String>, state: Payload) -> Self {
        Self {
            key: key.into(),
            state,
            status: InstanceStatus::Active,
            last_position: 0,
            correlation_id: None,
            pending: Vec::new(),
            deadlines: Vec::new(),
            revision: 0,
        }
    }
}

/// Where process instances live: state, outbox and deadlines, saved together.
pub trait ProcessStore: Clone + Send + Sync + 'static {
    /// The instance `key` of process `name`.
    fn load(
        &self,
        name: &str,
        key: &str,
    ) -> impl Future<Output = Result<Option<ProcessInstance>, CoordinationError>> + Send;

    /// Saves `instance` if the stored revision equals `instance.revision` (0: not stored);
    /// returns the new revision. Otherwise [`CoordinationError::InstanceConflict`].
    fn save(
        &self,
        name: &str,
        instance: &ProcessInstance,
    ) -> impl Future<Output = Result<u64, CoordinationError>> + Send;

    /// Active instances of `name` with deadlines due at `now`: `(key, deadline)`, earliest
    /// first, at most `limit`.
    fn due(
        &self,
        name: &str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<(String, Deadline)>, CoordinationError>> + Send;

    /// Keys of the instances of `name` with commands in their outbox.
    fn with_pending(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Vec<String>, CoordinationError>> + Send;
}

/// Process instances held in memory. Cloning shares them.
#[derive(Clone, Debug, Default)]
pub struct MemoryProcessStore {
    inner: Arc<Mutex<HashMap<(String, String), ProcessInstance>>>,
}

impl MemoryProcessStore {
    /// No instances.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), ProcessInstance>> {
        // Each critical section is a lookup or a single insert.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl ProcessStore for MemoryProcessStore {
    async fn load(
        &self,
        name: &str,
        key: &str,
    ) -> Result<Option<ProcessInstance>, CoordinationError> {
        Ok(self.lock().get(&(name.to_owned(), key.to_owned())).cloned())
    }

    async fn save(&self, name: &str, instance: &ProcessInstance) -> Result<u64, CoordinationError> {
        let mut all = self.lock();
        let id = (name.to_owned(), instance.key.clone());
        let actual = all.get(&id).map_or(0, |i| i.revision);
        if actual != instance.revision {
            return Err(CoordinationError::InstanceConflict {
                name: name.to_owned(),
                key: instance.key.clone(),
                expected: instance.revision,
                actual,
            });
        }
        let mut stored = instance.clone();
        stored.revision = actual + 1;
        all.insert(id, stored);
        Ok(actual + 1)
    }

    async fn due(
        &self,
        name: &str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(String, Deadline)>, CoordinationError> {
        let all = self.lock();
        let mut due: Vec<(String, Deadline)> = all
            .iter()
            .filter(|((n, _), i)| n == name && i.status == InstanceStatus::Active)
            .flat_map(|((_, key), i)| {
                i.deadlines
                    .iter()
                    .filter(|d| d.due_at <= now)
                    .map(|d| (key.clone(), d.clone()))
            })
            .collect();
        due.sort_by(|a, b| (a.1.due_at, &a.0).cmp(&(b.1.due_at, &b.0)));
        due.truncate(limit);
        Ok(due)
    }

    async fn with_pending(&self, name: &str) -> Result<Vec<String>, CoordinationError> {
        let mut keys: Vec<String> = self
            .lock()
            .iter()
            .filter(|((n, _), i)| n == name && !i.pending.is_empty())
            .map(|((_, key), _)| key.clone())
            .collect();
        keys.sort();
        Ok(keys)
    }
}

/// How one process manager runs.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProcessOptions {
    /// Number of partitions, by hash of the correlation key (at least 1).
    pub partitions: u32,
    /// Most events per read.
    pub batch_size: usize,
    /// How often a caught-up partition polls the store, and looks for due timeouts.
    pub poll_interval: Duration,
    /// Retries of a dispatch that failed (not rejected); after the last one the partition
    /// stops (the command stays in the outbox for the next start).
    pub dispatch_retry: FailurePolicy,
}

impl Default for ProcessOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl ProcessOptions {
    /// One partition, default batch size, 500 ms polls, 5 dispatch attempts.
    pub fn new() -> Self {
        let sub = SubscriptionOptions::new();
        Self {
            partitions: 1,
            batch_size: sub.batch_size,
            poll_interval: sub.poll_interval,
            dispatch_retry: FailurePolicy::stop_after(5),
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

    /// Sets the dispatch retries.
    #[must_use]
    pub fn dispatch_retry(mut self, policy: FailurePolicy) -> Self {
        self.dispatch_retry = policy;
        self
    }
}

/// What the process-manager runtime reports.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessError {
    /// The event store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The process, checkpoint or lease store failed.
    #[error(transparent)]
    Coordination(#[from] CoordinationError),
    /// A handler failed.
    #[error(
        "process `{name}` instance `{key}` failed on the event at position {position}: {source}"
    )]
    Handler {
        /// The process manager.
        name: String,
        /// The instance.
        key: String,
        /// The event's position (0 for a timeout or a rejection).
        position: u64,
        /// What the handler reported.
        source: BoxError,
    },
    /// The event could not be routed (see [`ProcessManager::route`]).
    #[error(
        "process `{name}` cannot route the `{event_type}` event at position {position} of stream `{stream}`: {source}"
    )]
    Route {
        /// The process manager.
        name: String,
        /// The event's position.
        position: u64,
        /// The event's stream.
        stream: String,
        /// The event's stored type.
        event_type: String,
        /// What `route` reported.
        source: BoxError,
    },
    /// A command could not be dispatched after every retry.
    #[error(
        "process `{name}` instance `{key}` could not dispatch command {command_id} after {attempts} attempts: {source}"
    )]
    Dispatch {
        /// The process manager.
        name: String,
        /// The instance.
        key: String,
        /// The command's id.
        command_id: Uuid,
        /// How many attempts were made.
        attempts: u32,
        /// The last error.
        source: BoxError,
    },
    /// A state or command does not encode or decode.
    #[error("process `{name}` instance `{key}`: cannot encode or decode {what}: {source}")]
    Json {
        /// The process manager.
        name: String,
        /// The instance.
        key: String,
        /// The state or a command.
        what: &'static str,
        /// What serde reported.
        source: serde_json::Error,
    },
    /// No process manager of this name is registered.
    #[error("no process manager named `{name}` is registered")]
    Unknown {
        /// The name asked for.
        name: String,
    },
    /// A partition's worker has stopped.
    #[error("process `{name}` partition {partition} is not running")]
    NotRunning {
        /// The process manager.
        name: String,
        /// The partition.
        partition: u32,
    },
}

type WorkerFuture = BoxFuture<'static, Result<(), ProcessError>>;
type Starter = Box<dyn FnOnce(&Shutdown, &Arc<Shared>) -> Vec<WorkerFuture> + Send>;

/// Registers process managers and starts them together.
pub struct ProcessManagerRunner<S, P, C = MemoryCheckpointStore, L = MemoryLeaseStore> {
    store: S,
    processes: P,
    checkpoints: C,
    leases: L,
    options: Arc<RunnerOptions>,
    clock: Arc<dyn Clock>,
    starters: Vec<(String, Starter)>,
}

impl<S, P, C, L> std::fmt::Debug for ProcessManagerRunner<S, P, C, L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessManagerRunner")
            .field("options", &self.options)
            .field(
                "process_managers",
                &self.starters.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl<S, P, C, L> ProcessManagerRunner<S, P, C, L>
where
    S: EventStore,
    P: ProcessStore,
    C: CheckpointStore,
    L: LeaseStore,
{
    /// A runner over these stores, with default options and the system clock. Set
    /// [`options`](Self::options) and [`clock`](Self::clock) before registering.
    pub fn new(store: S, processes: P, checkpoints: C, leases: L) -> Self {
        Self {
            store,
            processes,
            checkpoints,
            leases,
            options: Arc::new(RunnerOptions::new()),
            clock: Arc::new(SystemClock),
            starters: Vec::new(),
        }
    }

    /// Sets the worker id and lease timings.
    #[must_use]
    pub fn options(mut self, options: RunnerOptions) -> Self {
        self.options = Arc::new(options);
        self
    }

    /// Sets the clock timeouts are scheduled and fired by.
    #[must_use]
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Adds a process manager whose commands go to `dispatcher`.
    #[must_use]
    pub fn register<M, X>(mut self, manager: M, dispatcher: X, options: ProcessOptions) -> Self
    where
        M: ProcessManager,
        X: CommandDispatcher<M::Command>,
    {
        let name = manager.name().to_owned();
        let manager = Arc::new(manager);
        let dispatcher = Arc::new(dispatcher);
        let subscription = SubscriptionOptions::new()
            .batch_size(options.batch_size)
            .poll_interval(options.poll_interval)
            .event_types(manager.event_types());
        let store = self.store.clone();
        let processes = self.processes.clone();
        let checkpoints = self.checkpoints.clone();
        let leases = self.leases.clone();
        let runner = Arc::clone(&self.options);
        let clock = Arc::clone(&self.clock);
        let worker_name = name.clone();
        let starter: Starter = Box::new(move |shutdown, shared| {
            let (view, members) = tokio::sync::watch::channel(Vec::new());
            let membership = Box::pin(membership(
                leases.clone(),
                worker_name.clone(),
                runner.worker_id.clone(),
                runner.lease_ttl,
                view,
                shutdown.clone(),
            ));
            let assignment = Assignment::new(members, runner.worker_id.clone(), options.partitions);
            let mut futures: Vec<WorkerFuture> = vec![Box::pin(async move {
                membership.await;
                Ok(())
            })];
            futures.extend((0..options.partitions).map(|partition| {
                shared.update(&worker_name, partition, |_| {});
                let worker = PmWorker {
                    store: store.clone(),
                    processes: processes.clone(),
                    checkpoints: checkpoints.clone(),
                    leases: leases.clone(),
                    manager: Arc::clone(&manager),
                    dispatcher: Arc::clone(&dispatcher),
                    name: worker_name.clone(),
                    partition,
                    options: options.clone(),
                    subscription: subscription.clone(),
                    runner: Arc::clone(&runner),
                    clock: Arc::clone(&clock),
                    shutdown: shutdown.clone(),
                    shared: Arc::clone(shared),
                    assignment: assignment.clone(),
                    renew_at: Instant::now(),
                };
                Box::pin(worker.run()) as WorkerFuture
            }));
            futures
        });
        self.starters.retain(|(n, _)| *n != name);
        self.starters.push((name, starter));
        self
    }

    /// Starts a worker for every partition of every registered process manager.
    pub fn start(self) -> RunningProcessManagers {
        let shutdown = Shutdown::new();
        let shared = Arc::new(Shared::default());
        let mut tasks = JoinSet::new();
        let mut names = Vec::new();
        #[cfg(feature = "metrics")]
        tasks.spawn({
            let ticker = Arc::clone(&shared).metrics_ticker(shutdown.clone());
            async move {
                ticker.await;
                Ok(())
            }
        });
        for (name, starter) in self.starters {
            for worker in starter(&shutdown, &shared) {
                tasks.spawn(worker);
            }
            names.push(name);
        }
        RunningProcessManagers {
            shutdown,
            shared,
            tasks,
            names,
        }
    }
}

/// The running process managers of a [`ProcessManagerRunner`].
///
/// [`shutdown`](Self::shutdown) stops them gracefully; dropping the handle aborts them as a
/// crash would.
#[derive(Debug)]
pub struct RunningProcessManagers {
    shutdown: Shutdown,
    shared: Arc<Shared>,
    tasks: JoinSet<Result<(), ProcessError>>,
    names: Vec<String>,
}

impl RunningProcessManagers {
    /// Stops every worker gracefully and waits for them; returns the first error a worker
    /// stopped with.
    pub async fn shutdown(mut self) -> Result<(), ProcessError> {
        self.shutdown.trigger();
        let mut first = None;
        while let Some(joined) = self.tasks.join_next().await {
            match joined {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first.get_or_insert(e);
                }
                Err(join) => {
                    tracing::error!(error = %join, "process worker panicked or was aborted");
                }
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// The state of every partition.
    pub fn status(&self) -> Vec<PartitionStatus> {
        self.shared.snapshot()
    }

    /// Stalled and stopped partitions, as for projections.
    pub fn health(&self, stalled_after: Duration) -> Health {
        self.shared.health(stalled_after)
    }

    /// Waits until every partition of `name` has saved a checkpoint at or after `position`.
    pub async fn wait_for(&self, name: &str, position: u64) -> Result<(), ProcessError> {
        if !self.names.iter().any(|n| n == name) {
            return Err(ProcessError::Unknown {
                name: name.to_owned(),
            });
        }
        self.shared
            .wait_for(name, position)
            .await
            .map_err(|partition| ProcessError::NotRunning {
                name: name.to_owned(),
                partition,
            })
    }
}

enum Exit {
    Shutdown,
    LeaseLost,
    /// The members changed and another worker should hold the partition.
    Handoff,
}

enum Failure {
    Transient(ProcessError),
    Fatal(ProcessError),
}

impl<E: Into<ProcessError>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Transient(e.into())
    }
}

struct PmWorker<S, P, C, L, M, X> {
    store: S,
    processes: P,
    checkpoints: C,
    leases: L,
    manager: Arc<M>,
    dispatcher: Arc<X>,
    name: String,
    partition: u32,
    options: ProcessOptions,
    subscription: SubscriptionOptions,
    runner: Arc<RunnerOptions>,
    clock: Arc<dyn Clock>,
    shutdown: Shutdown,
    shared: Arc<Shared>,
    assignment: Assignment,
    renew_at: Instant,
}

/// The effects of one decision, with the message that caused them.
struct Decision<C> {
    effects: Effects<C>,
    cause: Uuid,
    metadata: Metadata,
}

impl<S, P, C, L, M, X> PmWorker<S, P, C, L, M, X>
where
    S: EventStore,
    P: ProcessStore,
    C: CheckpointStore,
    L: LeaseStore,
    M: ProcessManager,
    X: CommandDispatcher<M::Command>,
{
    async fn run(mut self) -> Result<(), ProcessError> {
        let span = tracing::info_span!(
            "process_manager",
            process = %self.name,
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
                match self.run_with_lease(&lease).await {
                    Ok(Exit::Shutdown) => {
                        self.release(&lease).await;
                        self.set_state(WorkerState::Finished);
                        return Ok(());
                    }
                    Ok(Exit::LeaseLost) => tracing::warn!(fence = lease.fence, "lease lost"),
                    Ok(Exit::Handoff) => {
                        tracing::info!(fence = lease.fence, "handing the partition over");
                        self.release(&lease).await;
                    }
                    Err(Failure::Transient(error)) => {
                        tracing::warn!(%error, "process partition interrupted; retrying");
                        tokio::select! {
                            () = self.shutdown.triggered() => {}
                            () = tokio::time::sleep(self.options.poll_interval) => {}
                        }
                    }
                    Err(Failure::Fatal(error)) => {
                        tracing::error!(%error, "process partition stopped");
                        self.release(&lease).await;
                        let message = error.to_string();
                        self.shared.update(&self.name, self.partition, |c| {
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

    fn set_state(&self, state: WorkerState) {
        self.shared
            .update(&self.name, self.partition, |c| c.state = state);
    }

    async fn release(&self, lease: &Lease) {
        if let Err(error) = self.leases.release(lease).await {
            tracing::warn!(%error, "could not release the lease; it will expire");
        }
    }

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
            tokio::select! {
                () = self.shutdown.triggered() => return None,
                () = tokio::time::sleep(self.runner.lease_retry) => {}
            }
        }
    }

    async fn renew_if_due(&mut self, lease: &Lease) -> Result<bool, Failure> {
        if Instant::now() < self.renew_at {
            return Ok(true);
        }
        let held = self.leases.renew(lease, self.runner.lease_ttl).await?;
        self.renew_at = Instant::now() + self.runner.lease_ttl / 3;
        Ok(held)
    }

    fn mine(&self, key: &str) -> bool {
        partition_of(key, self.options.partitions) == self.partition
    }

    async fn run_with_lease(&mut self, lease: &Lease) -> Result<Exit, Failure> {
        let mut position = match self.checkpoints.claim(lease).await {
            Ok(position) => position,
            Err(e) if e.is_fenced() => return Ok(Exit::LeaseLost),
            Err(e) => return Err(e.into()),
        };
        let mut saved = position;
        self.shared.update(&self.name, self.partition, |c| {
            c.state = WorkerState::Running;
            c.checkpoint = position;
            c.position = position;
            c.error = None;
        });
        // What a crashed holder decided but did not dispatch.
        for key in self.processes.with_pending(&self.name).await? {
            if self.mine(&key) {
                if let Some(instance) = self.processes.load(&self.name, &key).await? {
                    if let Some(exit) = self.dispatch_pending(lease, instance).await? {
                        return Ok(exit);
                    }
                }
            }
        }
        let mut subscription =
            Subscription::new(self.store.clone(), position, self.subscription.clone());
        let mut timeouts_at = Instant::now();
        loop {
            if !self.renew_if_due(lease).await? {
                return Ok(Exit::LeaseLost);
            }
            if Instant::now() >= timeouts_at {
                if let Some(exit) = self.fire_due(lease).await? {
                    return Ok(exit);
                }
                timeouts_at = Instant::now() + self.options.poll_interval;
            }
            let wake = self.renew_at.min(timeouts_at);
            let batch = tokio::select! {
                biased;
                () = self.shutdown.triggered() => return Ok(Exit::Shutdown),
                () = self.assignment.lost(self.partition) => return Ok(Exit::Handoff),
                () = tokio::time::sleep_until(wake) => continue,
                batch = subscription.next(&self.shutdown) => batch?,
            };
            let Some(batch) = batch else {
                return Ok(Exit::Shutdown);
            };
            let head = batch.head;
            self.shared
                .update(&self.name, self.partition, |c| c.head = c.head.max(head));
            let mut interrupted = None;
            for event in &batch.events {
                if self.shutdown.is_triggered() {
                    interrupted = Some(Exit::Shutdown);
                    break;
                }
                if !self.renew_if_due(lease).await? {
                    interrupted = Some(Exit::LeaseLost);
                    break;
                }
                if let Some(exit) = self.process(lease, event).await? {
                    interrupted = Some(exit);
                    break;
                }
                position = event.position;
                let p = position;
                self.shared
                    .update(&self.name, self.partition, |c| c.position = p);
            }
            if matches!(interrupted, Some(Exit::LeaseLost)) {
                return Ok(Exit::LeaseLost);
            }
            if interrupted.is_none() {
                position = batch.scanned_to;
            }
            if position != saved {
                match self.checkpoints.save(lease, position).await {
                    Ok(()) => saved = position,
                    Err(e) if e.is_fenced() => return Ok(Exit::LeaseLost),
                    Err(e) => return Err(e.into()),
                }
            }
            self.shared.update(&self.name, self.partition, |c| {
                c.checkpoint = saved;
                c.position = position;
            });
            if let Some(exit) = interrupted {
                return Ok(exit);
            }
        }
    }

    fn json_error(&self, key: &str, what: &'static str, source: serde_json::Error) -> Failure {
        Failure::Fatal(ProcessError::Json {
            name: self.name.clone(),
            key: key.to_owned(),
            what,
            source,
        })
    }

    fn decode_state(&self, instance: &ProcessInstance) -> Result<M::State, Failure> {
        instance
            .state
            .decode()
            .map_err(|e| self.json_error(&instance.key, "state", e))
    }

    /// Routes and handles one event, then dispatches what it decided.
    async fn process(
        &mut self,
        lease: &Lease,
        event: &RecordedEvent,
    ) -> Result<Option<Exit>, Failure> {
        let route = self.manager.route(event).map_err(|source| {
            Failure::Fatal(ProcessError::Route {
                name: self.name.clone(),
                position: event.position,
                stream: event.stream_id.to_string(),
                event_type: event.event_type.clone(),
                source,
            })
        })?;
        let Some(key) = route.key() else {
            return Ok(None);
        };
        if !self.mine(key) {
            return Ok(None);
        }
        let stored = self.processes.load(&self.name, key).await?;
        if let Some(instance) = &stored {
            if instance.last_position >= event.position {
                // Redelivered: already applied; finish what it decided.
                return self.dispatch_pending(lease, instance.clone()).await;
            }
        }
        let mut instance = match (&route, stored) {
            (Route::Start(_) | Route::StartStrict(_), None) => {
                let state = Payload::encode(&M::State::default())
                    .map_err(|e| self.json_error(key, "state", e))?;
                let mut instance = ProcessInstance::new(key, state);
                instance.correlation_id =
                    Some(event.metadata.correlation_id.unwrap_or(event.event_id));
                instance
            }
            (Route::StartStrict(_), Some(_)) => {
                tracing::warn!(
                    key,
                    position = event.position,
                    event_type = %event.event_type,
                    "strict start refused: the instance exists"
                );
                return Ok(None);
            }
            (Route::Continue(_) | Route::Stop(_) | Route::Ignore, None) => {
                tracing::debug!(key, position = event.position, "no instance for the event");
                return Ok(None);
            }
            (_, Some(instance)) if instance.status == InstanceStatus::Completed => {
                tracing::debug!(key, position = event.position, "the instance is completed");
                return Ok(None);
            }
            (_, Some(instance)) => instance,
        };
        let mut state = self.decode_state(&instance)?;
        let mut effects = self.manager.handle(&mut state, event).map_err(|source| {
            Failure::Fatal(ProcessError::Handler {
                name: self.name.clone(),
                key: key.to_owned(),
                position: event.position,
                source,
            })
        })?;
        if matches!(route, Route::Stop(_)) {
            effects.complete = true;
        }
        let decision = Decision {
            effects,
            cause: event.event_id,
            metadata: event.metadata.caused_by(event.event_id),
        };
        instance.last_position = event.position;
        self.apply(&mut instance, &state, decision)?;
        instance.revision = self.processes.save(&self.name, &instance).await?;
        self.dispatch_pending(lease, instance).await
    }

    /// Writes a decision into the instance: state, outbox, deadlines, status.
    fn apply(
        &self,
        instance: &mut ProcessInstance,
        state: &M::State,
        decision: Decision<M::Command>,
    ) -> Result<(), Failure> {
        let key = instance.key.clone();
        instance.state = Payload::encode(state).map_err(|e| self.json_error(&key, "state", e))?;
        for (index, command) in (0u32..).zip(&decision.effects.commands) {
            let command_id = process_command_id(&self.name, &key, decision.cause, index);
            let mut metadata = decision.metadata.clone();
            metadata.command_id = Some(command_id);
            metadata
                .extra
                .insert("process_manager".to_owned(), self.name.clone().into());
            instance.pending.push(PendingCommand {
                command_id,
                command: Payload::encode(command)
                    .map_err(|e| self.json_error(&key, "command", e))?,
                metadata,
            });
        }
        for name in &decision.effects.cancel {
            instance.deadlines.retain(|d| d.name != *name);
        }
        for (name, due_at) in &decision.effects.schedule {
            instance.deadlines.retain(|d| d.name != *name);
            let mut id_name = Vec::new();
            id_name.extend_from_slice(name.as_bytes());
            id_name.push(0);
            id_name.extend_from_slice(due_at.to_rfc3339().as_bytes());
            let id = process_command_id(
                &self.name,
                &key,
                Uuid::new_v5(&decision.cause, &id_name),
                u32::MAX,
            );
            instance.deadlines.push(Deadline {
                name: name.clone(),
                due_at: *due_at,
                id,
            });
        }
        if decision.effects.complete {
            instance.status = InstanceStatus::Completed;
            instance.deadlines.clear();
        }
        Ok(())
    }

    /// Dispatches the outbox in order, saving after each command; rejected commands lead to
    /// compensation through the same outbox.
    async fn dispatch_pending(
        &mut self,
        lease: &Lease,
        mut instance: ProcessInstance,
    ) -> Result<Option<Exit>, Failure> {
        while let Some(pending) = instance.pending.first().cloned() {
            let command: M::Command = pending
                .command
                .decode()
                .map_err(|e| self.json_error(&instance.key, "command", e))?;
            let policy = self.options.dispatch_retry;
            let mut attempt = 0u32;
            let rejected = loop {
                attempt += 1;
                match self.dispatcher.dispatch(&command, &pending.metadata).await {
                    Ok(()) => break None,
                    Err(DispatchError::Rejected(reason)) => break Some(reason),
                    Err(DispatchError::Failed(error)) => {
                        tracing::warn!(
                            key = %instance.key,
                            command_id = %pending.command_id,
                            attempt,
                            %error,
                            "command dispatch failed"
                        );
                        if attempt >= policy.max_attempts {
                            return Err(Failure::Fatal(ProcessError::Dispatch {
                                name: self.name.clone(),
                                key: instance.key.clone(),
                                command_id: pending.command_id,
                                attempts: attempt,
                                source: error,
                            }));
                        }
                        tokio::select! {
                            () = self.shutdown.triggered() => return Ok(Some(Exit::Shutdown)),
                            () = tokio::time::sleep(policy.delay(attempt)) => {}
                        }
                        if !self.renew_if_due(lease).await? {
                            return Ok(Some(Exit::LeaseLost));
                        }
                    }
                }
            };
            instance.pending.remove(0);
            if let Some(reason) = rejected {
                tracing::info!(
                    key = %instance.key,
                    command_id = %pending.command_id,
                    %reason,
                    "command rejected; compensating"
                );
                let mut state = self.decode_state(&instance)?;
                let effects = self
                    .manager
                    .on_rejected(&mut state, &command, &reason)
                    .map_err(|source| {
                        Failure::Fatal(ProcessError::Handler {
                            name: self.name.clone(),
                            key: instance.key.clone(),
                            position: 0,
                            source,
                        })
                    })?;
                let decision = Decision {
                    effects,
                    cause: pending.command_id,
                    metadata: pending.metadata.caused_by(pending.command_id),
                };
                // Compensation goes before the commands still waiting.
                let waiting = std::mem::take(&mut instance.pending);
                self.apply(&mut instance, &state, decision)?;
                instance.pending.extend(waiting);
            }
            instance.revision = self.processes.save(&self.name, &instance).await?;
        }
        Ok(None)
    }

    /// Fires the due timeouts of this partition's instances.
    async fn fire_due(&mut self, lease: &Lease) -> Result<Option<Exit>, Failure> {
        let now = self.clock.now();
        let due = self.processes.due(&self.name, now, 100).await?;
        for (key, deadline) in due {
            if !self.mine(&key) {
                continue;
            }
            let Some(mut instance) = self.processes.load(&self.name, &key).await? else {
                continue;
            };
            if instance.status != InstanceStatus::Active
                || !instance.deadlines.iter().any(|d| d.id == deadline.id)
            {
                continue;
            }
            instance.deadlines.retain(|d| d.id != deadline.id);
            tracing::info!(key = %key, timeout = %deadline.name, "timeout fired");
            let mut state = self.decode_state(&instance)?;
            let effects = self
                .manager
                .on_timeout(&key, &mut state, &deadline.name)
                .map_err(|source| {
                    Failure::Fatal(ProcessError::Handler {
                        name: self.name.clone(),
                        key: key.clone(),
                        position: 0,
                        source,
                    })
                })?;
            let mut metadata = Metadata::new();
            metadata.correlation_id = instance.correlation_id;
            let metadata = metadata.caused_by(deadline.id);
            let decision = Decision {
                effects,
                cause: deadline.id,
                metadata,
            };
            self.apply(&mut instance, &state, decision)?;
            instance.revision = self.processes.save(&self.name, &instance).await?;
            if let Some(exit) = self.dispatch_pending(lease, instance).await? {
                return Ok(Some(exit));
            }
        }
        Ok(None)
    }
}

/// A dispatcher from a closure returning a future, for quick wiring and tests.
///
/// ```
/// use factum::{dispatch_fn, DispatchError, Metadata};
/// let dispatcher = dispatch_fn(|command: &String, _meta: &Metadata| {
///     let command = command.clone();
///     async move { if command.is_empty() { Err(DispatchError::Rejected("empty".into())) } else { Ok(()) } }
/// });
/// # let _ = dispatcher;
/// ```
pub fn dispatch_fn<C, F, Fut>(f: F) -> DispatchFn<F>
where
    F: Fn(&C, &Metadata) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), DispatchError>> + Send,
{
    DispatchFn(f)
}

/// See [`dispatch_fn`].
#[derive(Clone, Copy)]
pub struct DispatchFn<F>(F);

impl<F> std::fmt::Debug for DispatchFn<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DispatchFn")
    }
}

impl<C, F, Fut> CommandDispatcher<C> for DispatchFn<F>
where
    C: Sync,
    F: Fn(&C, &Metadata) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), DispatchError>> + Send,
{
    fn dispatch(
        &self,
        command: &C,
        metadata: &Metadata,
    ) -> impl Future<Output = Result<(), DispatchError>> + Send {
        (self.0)(command, metadata)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_ids_are_deterministic_and_distinct() {
        let cause = Uuid::now_v7();
        let a = process_command_id("p", "k", cause, 0);
        assert_eq!(a, process_command_id("p", "k", cause, 0));
        assert_ne!(a, process_command_id("p", "k", cause, 1));
        assert_ne!(a, process_command_id("p", "k2", cause, 0));
        assert_ne!(a, process_command_id("q", "k", cause, 0));
        assert_ne!(a, process_command_id("p", "k", Uuid::now_v7(), 0));
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(
            process_command_id("ab", "c", cause, 0),
            process_command_id("a", "bc", cause, 0)
        );
    }

    #[test]
    fn manual_clock_moves_forward() {
        let start = Utc::now();
        let clock = ManualClock::new(start);
        clock.advance(Duration::from_secs(3600));
        assert_eq!(clock.now() - start, chrono::Duration::hours(1));
    }
}
