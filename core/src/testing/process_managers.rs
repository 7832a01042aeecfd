//! Behaviour cases for process managers, generic over the event store and the process,
//! checkpoint and lease stores, and a conformance case for [`ProcessStore`]s. Each takes
//! fresh, empty stores and panics on a violation.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use uuid::Uuid;

use super::cases::event;
use super::counter::{Counter, Increment};
use super::projections::{TEST_LEASE_TTL, eventually};
use crate::coordination::{
    CheckpointStore, CoordinationError, LeaseStore, MemoryCheckpointStore, MemoryLeaseStore,
};
use crate::error::BoxError;
use crate::event::{Payload, RecordedEvent};
use crate::memory::MemoryStore;
use crate::metadata::Metadata;
use crate::process_manager::{
    CommandDispatcher, Deadline, DispatchError, Effects, InstanceStatus, ManualClock,
    MemoryProcessStore, ProcessInstance, ProcessManager, ProcessManagerRunner, ProcessOptions,
    ProcessStore, Route, RunningProcessManagers, process_command_id,
};
use crate::projection::RunnerOptions;
use crate::repository::Repository;
use crate::store::{EventStore, StreamRead};
use crate::stream::{ExpectedVersion, StreamId};

/// The stores a process-manager runtime needs.
#[derive(Clone, Debug)]
pub struct ProcessRuntimeStores<S, P, C, L> {
    /// The event store (also holding the target aggregates).
    pub events: S,
    /// Process instances.
    pub processes: P,
    /// Checkpoints.
    pub checkpoints: C,
    /// Leases.
    pub leases: L,
}

/// The in-memory process-manager stores.
pub type MemoryProcessRuntimeStores =
    ProcessRuntimeStores<MemoryStore, MemoryProcessStore, MemoryCheckpointStore, MemoryLeaseStore>;

impl MemoryProcessRuntimeStores {
    /// Fresh in-memory stores.
    pub fn memory() -> Self {
        Self {
            events: MemoryStore::new(),
            processes: MemoryProcessStore::new(),
            checkpoints: MemoryCheckpointStore::new(),
            leases: MemoryLeaseStore::new(),
        }
    }
}

/// The commands of [`FlowProcess`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FlowCommand {
    /// Increment the [`Counter`] `counter` by `by` (0 is rejected by validation).
    Increment {
        /// The counter's id.
        counter: String,
        /// How much.
        by: u64,
    },
}

/// The state of a [`FlowProcess`] instance.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowState {
    /// Events handled.
    pub steps: u64,
    /// Commands rejected.
    pub rejections: u64,
}

/// A process manager for tests, keyed by the id of `flow-{key}` streams: `FlowStarted`
/// (strict start) increments counter `{key}` by the event's `n` and schedules `expire` an
/// hour after the event; `FlowContinued` increments it by `n`; `FlowFinished` stops the
/// instance. A rejected increment is compensated by incrementing `{key}-compensation`; the
/// `expire` timeout increments `{key}-expired`.
#[derive(Debug, Default)]
pub struct FlowProcess;

/// The name of [`FlowProcess`].
pub const FLOW: &str = "flow";

fn n_of(event: &RecordedEvent) -> Result<u64, BoxError> {
    let value: serde_json::Value = event.payload.decode()?;
    value["n"].as_u64().ok_or_else(|| "missing `n`".into())
}

impl ProcessManager for FlowProcess {
    type State = FlowState;
    type Command = FlowCommand;

    fn name(&self) -> &str {
        FLOW
    }

    fn event_types(&self) -> Vec<String> {
        ["FlowStarted", "FlowContinued", "FlowFinished"]
            .map(String::from)
            .to_vec()
    }

    fn route(&self, event: &RecordedEvent) -> Result<Route, BoxError> {
        if event.stream_id.category() != "flow" {
            return Ok(Route::Ignore);
        }
        let key = event.stream_id.id().to_owned();
        Ok(match event.event_type.as_str() {
            "FlowStarted" => Route::StartStrict(key),
            "FlowContinued" => Route::Continue(key),
            "FlowFinished" => Route::Stop(key),
            _ => Route::Ignore,
        })
    }

    fn handle(
        &self,
        state: &mut FlowState,
        event: &RecordedEvent,
    ) -> Result<Effects<FlowCommand>, BoxError> {
        state.steps += 1;
        let counter = event.stream_id.id().to_owned();
        Ok(match event.event_type.as_str() {
            "FlowStarted" => Effects::none()
                .command(FlowCommand::Increment {
                    counter,
                    by: n_of(event)?,
                })
                .schedule("expire", event.recorded_at + chrono::Duration::hours(1)),
            "FlowContinued" => Effects::none().command(FlowCommand::Increment {
                counter,
                by: n_of(event)?,
            }),
            _ => Effects::none().cancel("expire"),
        })
    }

    fn on_rejected(
        &self,
        state: &mut FlowState,
        command: &FlowCommand,
        _error: &crate::Rejection,
    ) -> Result<Effects<FlowCommand>, BoxError> {
        state.rejections += 1;
        let FlowCommand::Increment { counter, .. } = command;
        Ok(Effects::none().command(FlowCommand::Increment {
            counter: format!("{counter}-compensation"),
            by: 1,
        }))
    }

    fn on_timeout(
        &self,
        key: &str,
        _state: &mut FlowState,
        _name: &str,
    ) -> Result<Effects<FlowCommand>, BoxError> {
        Ok(Effects::none().command(FlowCommand::Increment {
            counter: format!("{key}-expired"),
            by: 1,
        }))
    }
}

/// One dispatch seen by a [`CounterDispatcher`].
#[derive(Clone, Debug, PartialEq)]
pub struct DispatchCall {
    /// The command.
    pub command: FlowCommand,
    /// Its metadata.
    pub metadata: Metadata,
    /// Whether the repository reported it as a duplicate of an earlier execution.
    pub duplicate: bool,
    /// Whether it was rejected.
    pub rejected: bool,
}

/// Executes [`FlowCommand`]s on [`Counter`]s through a [`Repository`], recording every call;
/// can be told to hang after its `n`-th call, as a process dying after a dispatch.
#[derive(Debug)]
pub struct CounterDispatcher<S> {
    repository: Repository<Counter, S>,
    calls: Arc<Mutex<Vec<DispatchCall>>>,
    hang_after: Option<usize>,
    hung: watch::Sender<bool>,
}

impl<S: EventStore> CounterDispatcher<S> {
    /// A dispatcher onto counters in `store`, recording into `calls`.
    pub fn new(store: S, calls: Arc<Mutex<Vec<DispatchCall>>>) -> Self {
        Self {
            repository: Repository::new(store),
            calls,
            hang_after: None,
            hung: watch::channel(false).0,
        }
    }

    /// Hangs forever after the `n`-th call has executed.
    #[must_use]
    pub fn hang_after(mut self, n: usize) -> Self {
        self.hang_after = Some(n);
        self
    }

    /// A receiver that turns true when it hangs.
    pub fn hung(&self) -> watch::Receiver<bool> {
        self.hung.subscribe()
    }
}

impl<S: EventStore> CommandDispatcher<FlowCommand> for CounterDispatcher<S> {
    async fn dispatch(
        &self,
        command: &FlowCommand,
        metadata: &Metadata,
    ) -> Result<(), DispatchError> {
        let FlowCommand::Increment { counter, by } = command;
        let result = self
            .repository
            .execute_on(counter, Increment { by: *by }, metadata.clone())
            .await;
        let calls = {
            let mut calls = self
                .calls
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            calls.push(DispatchCall {
                command: command.clone(),
                metadata: metadata.clone(),
                duplicate: result.as_ref().is_ok_and(|r| r.duplicate),
                rejected: result.as_ref().is_err_and(|e| {
                    matches!(
                        e,
                        crate::Error::Rejected(_) | crate::Error::InvalidCommand { .. }
                    )
                }),
            });
            calls.len()
        };
        if self.hang_after == Some(calls) {
            self.hung.send_replace(true);
            std::future::pending::<()>().await;
        }
        result.map(|_| ()).map_err(DispatchError::from)
    }
}

impl<S, P, C, L> ProcessRuntimeStores<S, P, C, L>
where
    S: EventStore,
    P: ProcessStore,
    C: CheckpointStore,
    L: LeaseStore,
{
    /// A runner with `FlowProcess` dispatching to `dispatcher`, worker id `worker`.
    pub fn start_flow(
        &self,
        worker: &str,
        dispatcher: CounterDispatcher<S>,
        clock: ManualClock,
    ) -> RunningProcessManagers {
        self.start_flow_with(
            worker,
            dispatcher,
            clock,
            ProcessOptions::new()
                .batch_size(3)
                .poll_interval(Duration::from_millis(50)),
        )
    }

    /// Like [`start_flow`](Self::start_flow), with `options`.
    pub fn start_flow_with(
        &self,
        worker: &str,
        dispatcher: CounterDispatcher<S>,
        clock: ManualClock,
        options: ProcessOptions,
    ) -> RunningProcessManagers {
        ProcessManagerRunner::new(self.events.clone())
            .coordination(crate::coordination::SplitCoordination {
                checkpoints: self.checkpoints.clone(),
                leases: self.leases.clone(),
                dead_letters: crate::coordination::MemoryDeadLetterStore::new(),
                processes: self.processes.clone(),
            })
            .options(
                RunnerOptions::new()
                    .worker_id(worker)
                    .lease_ttl(TEST_LEASE_TTL)
                    .lease_retry(Duration::from_millis(200)),
            )
            .clock(clock)
            .register_with(FlowProcess, dispatcher, options)
            .start()
    }

    /// The value of counter `id`.
    pub async fn counter(&self, id: &str) -> u64 {
        Repository::<Counter, S>::new(self.events.clone())
            .load(id)
            .await
            .expect("load counter")
            .state
            .value
    }
}

/// Appends a flow event; returns its id and position.
async fn flow<S: EventStore>(
    store: &S,
    key: &str,
    event_type: &str,
    n: u64,
    metadata: Metadata,
) -> (Uuid, u64) {
    let mut e = event(event_type, n);
    e.metadata = metadata;
    let id = e.event_id;
    let r = store
        .append(
            &StreamId::new("flow", key).expect("stream"),
            ExpectedVersion::Any,
            &[e],
        )
        .await
        .expect("append");
    (id, r.last_position)
}

const PATIENCE: Duration = Duration::from_secs(120);

async fn wait_for(running: &RunningProcessManagers, position: u64) {
    tokio::time::timeout(PATIENCE, running.wait_for(FLOW, position))
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for `{FLOW}` to reach {position}"))
        .unwrap_or_else(|e| panic!("`{FLOW}` stopped before reaching {position}: {e}"));
}

fn calls_of(calls: &Arc<Mutex<Vec<DispatchCall>>>) -> Vec<DispatchCall> {
    calls
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

/// Routing (start, strict start, continue, stop, unknown and completed instances),
/// deterministic command ids, correlation and causation; a redelivery of every event
/// dispatches nothing again.
pub async fn process_routes_and_ignores_redelivery<S, P, C, L>(
    stores: ProcessRuntimeStores<S, P, C, L>,
) where
    S: EventStore,
    P: ProcessStore,
    C: CheckpointStore,
    L: LeaseStore,
{
    let store = &stores.events;
    let flow_id = Uuid::now_v7();
    let (started_a, _) = flow(
        store,
        "a",
        "FlowStarted",
        2,
        Metadata::new().correlation_id(flow_id),
    )
    .await;
    flow(store, "a", "FlowContinued", 3, Metadata::new()).await;
    flow(store, "b", "FlowStarted", 5, Metadata::new()).await;
    flow(store, "a", "FlowFinished", 0, Metadata::new()).await;
    flow(store, "a", "FlowContinued", 7, Metadata::new()).await; // completed: ignored
    flow(store, "c", "FlowContinued", 1, Metadata::new()).await; // no instance: ignored
    let (_, head) = flow(store, "b", "FlowStarted", 9, Metadata::new()).await; // strict: refused

    let calls = Arc::new(Mutex::new(Vec::new()));
    let clock = ManualClock::new(Utc::now());
    let running = stores.start_flow(
        "a",
        CounterDispatcher::new(store.clone(), Arc::clone(&calls)),
        clock.clone(),
    );
    wait_for(&running, head).await;
    assert_eq!(stores.counter("a").await, 5);
    assert_eq!(stores.counter("b").await, 5, "the strict start was refused");
    assert_eq!(stores.counter("c").await, 0);
    let seen = calls_of(&calls);
    assert_eq!(seen.len(), 3);

    let first = &seen[0];
    let command_id = process_command_id(FLOW, "a", started_a, 0);
    assert_eq!(first.metadata.command_id, Some(command_id));
    assert_eq!(first.metadata.causation_id, Some(started_a));
    assert_eq!(first.metadata.correlation_id, Some(flow_id));
    assert_eq!(first.metadata.extra["process_manager"], FLOW);
    let applied = store
        .read_stream(
            &StreamId::new("counter", "a").expect("stream"),
            &StreamRead::all(),
        )
        .await
        .expect("read");
    assert_eq!(applied[0].metadata.causation_id, Some(command_id));
    assert_eq!(
        applied[0].metadata.correlation_id,
        Some(flow_id),
        "correlation flows on"
    );

    let a = stores
        .processes
        .load(FLOW, "a")
        .await
        .expect("load")
        .expect("instance a");
    assert_eq!(a.status, InstanceStatus::Completed);
    assert!(a.deadlines.is_empty() && a.pending.is_empty());
    assert_eq!(a.correlation_id, Some(flow_id));
    let state: FlowState = a.state.decode().expect("state");
    assert_eq!(state.steps, 3);
    let b = stores
        .processes
        .load(FLOW, "b")
        .await
        .expect("load")
        .expect("instance b");
    assert_eq!(b.status, InstanceStatus::Active);
    assert_eq!(b.deadlines.len(), 1);
    assert!(
        stores
            .processes
            .load(FLOW, "c")
            .await
            .expect("load")
            .is_none()
    );
    running.shutdown().await.expect("clean shutdown");

    // Rewind the checkpoint: every event is delivered again.
    let lease = stores
        .leases
        .acquire(FLOW, 0, "rewinder", TEST_LEASE_TTL)
        .await
        .expect("acquire")
        .expect("free");
    stores.checkpoints.claim(&lease).await.expect("claim");
    stores.checkpoints.save(&lease, 0).await.expect("rewind");
    stores.leases.release(&lease).await.expect("release");
    let running = stores.start_flow(
        "a",
        CounterDispatcher::new(store.clone(), Arc::clone(&calls)),
        clock,
    );
    wait_for(&running, head).await;
    assert_eq!(
        calls_of(&calls).len(),
        3,
        "redelivered events dispatch nothing"
    );
    assert_eq!(stores.counter("a").await, 5);
    assert_eq!(stores.counter("b").await, 5);
    running.shutdown().await.expect("clean shutdown");
}

/// A process dies after dispatching a command and before recording it: the next worker
/// dispatches it again with the same id, and the target applies it once.
pub async fn process_crash_after_dispatch<S, P, C, L>(stores: ProcessRuntimeStores<S, P, C, L>)
where
    S: EventStore,
    P: ProcessStore,
    C: CheckpointStore,
    L: LeaseStore,
{
    let store = &stores.events;
    flow(store, "a", "FlowStarted", 2, Metadata::new()).await;
    let (_, head) = flow(store, "a", "FlowContinued", 3, Metadata::new()).await;
    let calls = Arc::new(Mutex::new(Vec::new()));
    let clock = ManualClock::new(Utc::now());
    let dispatcher = CounterDispatcher::new(store.clone(), Arc::clone(&calls)).hang_after(1);
    let mut hung = dispatcher.hung();
    let running = stores.start_flow("a", dispatcher, clock.clone());
    tokio::time::timeout(PATIENCE, hung.wait_for(|h| *h))
        .await
        .expect("the dispatcher reaches the crash point")
        .expect("hung");
    drop(running); // dies after the command was applied, before the outbox was updated
    assert_eq!(stores.counter("a").await, 2);
    let a = stores
        .processes
        .load(FLOW, "a")
        .await
        .expect("load")
        .expect("instance");
    assert_eq!(a.pending.len(), 1, "the command is still in the outbox");

    let running = stores.start_flow(
        "b",
        CounterDispatcher::new(store.clone(), Arc::clone(&calls)),
        clock,
    );
    wait_for(&running, head).await;
    assert_eq!(stores.counter("a").await, 5, "each command applied once");
    let seen = calls_of(&calls);
    assert_eq!(seen.len(), 3);
    assert_eq!(
        seen[0].metadata.command_id, seen[1].metadata.command_id,
        "the command was dispatched again with the same id"
    );
    assert!(!seen[0].duplicate && seen[1].duplicate && !seen[2].duplicate);
    let events = store
        .read_stream(
            &StreamId::new("counter", "a").expect("stream"),
            &StreamRead::all(),
        )
        .await
        .expect("read");
    assert_eq!(events.len(), 2);
    running.shutdown().await.expect("clean shutdown");
}

/// A rejected command is compensated, with a deterministic id caused by the rejected one.
pub async fn process_compensates_rejection<S, P, C, L>(stores: ProcessRuntimeStores<S, P, C, L>)
where
    S: EventStore,
    P: ProcessStore,
    C: CheckpointStore,
    L: LeaseStore,
{
    let store = &stores.events;
    flow(store, "a", "FlowStarted", 2, Metadata::new()).await;
    let (bad, head) = flow(store, "a", "FlowContinued", 0, Metadata::new()).await;
    let calls = Arc::new(Mutex::new(Vec::new()));
    let running = stores.start_flow(
        "a",
        CounterDispatcher::new(store.clone(), Arc::clone(&calls)),
        ManualClock::new(Utc::now()),
    );
    wait_for(&running, head).await;
    assert_eq!(stores.counter("a").await, 2);
    assert_eq!(stores.counter("a-compensation").await, 1);
    let seen = calls_of(&calls);
    assert_eq!(seen.len(), 3);
    assert!(seen[1].rejected);
    let rejected_id = process_command_id(FLOW, "a", bad, 0);
    assert_eq!(seen[1].metadata.command_id, Some(rejected_id));
    assert_eq!(
        seen[2].metadata.command_id,
        Some(process_command_id(FLOW, "a", rejected_id, 0))
    );
    assert_eq!(seen[2].metadata.causation_id, Some(rejected_id));
    let a = stores
        .processes
        .load(FLOW, "a")
        .await
        .expect("load")
        .expect("instance");
    let state: FlowState = a.state.decode().expect("state");
    assert_eq!(state.rejections, 1);
    running.shutdown().await.expect("clean shutdown");
}

/// A timeout that comes due while no process runs fires after the restart; a cancelled one
/// never fires.
pub async fn process_timeout_after_restart<S, P, C, L>(stores: ProcessRuntimeStores<S, P, C, L>)
where
    S: EventStore,
    P: ProcessStore,
    C: CheckpointStore,
    L: LeaseStore,
{
    let store = &stores.events;
    let clock = ManualClock::new(Utc::now());
    flow(store, "a", "FlowStarted", 1, Metadata::new()).await;
    flow(store, "b", "FlowStarted", 1, Metadata::new()).await;
    let (_, head) = flow(store, "b", "FlowFinished", 0, Metadata::new()).await;
    let calls = Arc::new(Mutex::new(Vec::new()));
    let running = stores.start_flow(
        "a",
        CounterDispatcher::new(store.clone(), Arc::clone(&calls)),
        clock.clone(),
    );
    wait_for(&running, head).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(stores.counter("a-expired").await, 0, "not due yet");
    running.shutdown().await.expect("clean shutdown");

    clock.advance(Duration::from_secs(2 * 3600));
    let running = stores.start_flow(
        "b",
        CounterDispatcher::new(store.clone(), Arc::clone(&calls)),
        clock,
    );
    eventually("the timeout to fire", || async {
        stores.counter("a-expired").await == 1
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(stores.counter("a-expired").await, 1, "fired once");
    assert_eq!(
        stores.counter("b-expired").await,
        0,
        "the cancelled timeout never fires"
    );
    let a = stores
        .processes
        .load(FLOW, "a")
        .await
        .expect("load")
        .expect("instance");
    assert!(a.deadlines.is_empty());
    running.shutdown().await.expect("clean shutdown");
}

/// With several partitions (by hash of the key), every instance gets its events and every
/// command is dispatched once.
pub async fn process_partitions<S, P, C, L>(stores: ProcessRuntimeStores<S, P, C, L>)
where
    S: EventStore,
    P: ProcessStore,
    C: CheckpointStore,
    L: LeaseStore,
{
    let store = &stores.events;
    let mut head = 0;
    for i in 0..9u64 {
        flow(
            store,
            &format!("k{i}"),
            "FlowStarted",
            i + 1,
            Metadata::new(),
        )
        .await;
    }
    for i in 0..9u64 {
        head = flow(store, &format!("k{i}"), "FlowContinued", 1, Metadata::new())
            .await
            .1;
    }
    let calls = Arc::new(Mutex::new(Vec::new()));
    let running = stores.start_flow_with(
        "a",
        CounterDispatcher::new(store.clone(), Arc::clone(&calls)),
        ManualClock::new(Utc::now()),
        ProcessOptions::new()
            .partitions(3)
            .batch_size(4)
            .poll_interval(Duration::from_millis(50)),
    );
    wait_for(&running, head).await;
    assert_eq!(running.status().len(), 3);
    for i in 0..9u64 {
        assert_eq!(stores.counter(&format!("k{i}")).await, i + 2);
    }
    let seen = calls_of(&calls);
    assert_eq!(seen.len(), 18, "each command dispatched once");
    assert!(seen.iter().all(|c| !c.duplicate));
    running.shutdown().await.expect("clean shutdown");
}

/// A process store saves with compare-and-set on the revision and answers the due-deadline
/// and outbox queries.
pub async fn process_store_conformance<P: ProcessStore>(processes: P) {
    let state = Payload::encode(&serde_json::json!({"x": 1})).expect("json");
    let mut a = ProcessInstance::new("a", state.clone());
    assert!(processes.load("p", "a").await.expect("load").is_none());
    a.revision = processes.save("p", &a).await.expect("first save");
    assert_eq!(a.revision, 1);
    let stale = ProcessInstance::new("a", state.clone());
    match processes.save("p", &stale).await {
        Err(CoordinationError::InstanceConflict {
            expected: 0,
            actual: 1,
            ..
        }) => {}
        other => panic!("expected an instance conflict, got {other:?}"),
    }
    let now = Utc::now();
    a.deadlines.push(Deadline {
        name: "soon".to_owned(),
        due_at: now - chrono::Duration::minutes(5),
        id: Uuid::now_v7(),
    });
    a.deadlines.push(Deadline {
        name: "later".to_owned(),
        due_at: now + chrono::Duration::hours(1),
        id: Uuid::now_v7(),
    });
    a.pending.push(crate::process_manager::PendingCommand {
        command_id: Uuid::now_v7(),
        command: state.clone(),
        metadata: Metadata::new(),
    });
    a.revision = processes.save("p", &a).await.expect("second save");
    assert_eq!(a.revision, 2);
    assert_eq!(
        processes.load("p", "a").await.expect("load"),
        Some(a.clone())
    );

    let mut done = ProcessInstance::new("done", state.clone());
    done.status = InstanceStatus::Completed;
    done.deadlines.push(Deadline {
        name: "soon".to_owned(),
        due_at: now - chrono::Duration::minutes(10),
        id: Uuid::now_v7(),
    });
    processes.save("p", &done).await.expect("save");
    let mut earlier = ProcessInstance::new("b", state.clone());
    earlier.deadlines.push(Deadline {
        name: "soon".to_owned(),
        due_at: now - chrono::Duration::minutes(7),
        id: Uuid::now_v7(),
    });
    processes.save("p", &earlier).await.expect("save");
    processes
        .save("other", &ProcessInstance::new("a", state))
        .await
        .expect("another process's instance");

    let due = processes.due("p", now, 10).await.expect("due");
    assert_eq!(
        due.iter()
            .map(|(k, d)| (k.as_str(), d.name.as_str()))
            .collect::<Vec<_>>(),
        [("b", "soon"), ("a", "soon")],
        "due deadlines of active instances, earliest first"
    );
    assert_eq!(processes.due("p", now, 1).await.expect("due").len(), 1);
    assert_eq!(processes.with_pending("p").await.expect("pending"), ["a"]);
    assert!(
        processes
            .with_pending("other")
            .await
            .expect("pending")
            .is_empty()
    );
}

/// Expands to one `#[tokio::test]` per process-manager case, each on stores returned by the
/// given `async fn() -> ProcessRuntimeStores<..>`; with `, start_paused`, in paused time.
#[macro_export]
macro_rules! process_manager_tests {
    ($make:path) => {
        $crate::process_manager_tests!(@each $make; real;
            process_routes_and_ignores_redelivery,
            process_crash_after_dispatch,
            process_compensates_rejection,
            process_timeout_after_restart,
            process_partitions,
        );
    };
    ($make:path, start_paused) => {
        $crate::process_manager_tests!(@each $make; paused;
            process_routes_and_ignores_redelivery,
            process_crash_after_dispatch,
            process_compensates_rejection,
            process_timeout_after_restart,
            process_partitions,
        );
    };
    (@each $make:path; real; $($case:ident),* $(,)?) => {
        $(
            #[$crate::__private::tokio::test(crate = "::factum::__private::tokio")]
            async fn $case() {
                $crate::testing::process_managers::$case($make().await).await;
            }
        )*
    };
    (@each $make:path; paused; $($case:ident),* $(,)?) => {
        $(
            #[$crate::__private::tokio::test(start_paused = true, crate = "::factum::__private::tokio")]
            async fn $case() {
                $crate::testing::process_managers::$case($make().await).await;
            }
        )*
    };
}
