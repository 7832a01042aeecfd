//! Behaviour cases for the projection runtime, generic over the event store and the
//! checkpoint, lease and dead-letter stores. Each takes fresh, empty stores and panics on a
//! violation.
//!
//! The cases wait with bounded timeouts and never assert on how long something took, so they
//! run in real time (a database) and in tokio's paused time (the in-memory stores) alike.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use uuid::Uuid;

use super::cases::event;
use super::faults::{DeadLetterOp, FaultyDeadLetters};
use crate::coordination::{
    CheckpointStore, Coordination, CoordinationError, DeadLetterStore, Lease, LeaseStore,
    MemoryCheckpointStore, MemoryDeadLetterStore, MemoryLeaseStore, ParkReason, SplitCoordination,
};
use crate::error::BoxError;
use crate::event::RecordedEvent;
use crate::memory::MemoryStore;
use crate::process_manager::MemoryProcessStore;
use crate::projection::{
    FailurePolicy, HandleContext, HealthProblem, Projection, ProjectionError, ProjectionOptions,
    ProjectionRunner, RebuildProgress, RunnerOptions, RunningProjections, WorkerState,
};
use crate::store::EventStore;
use crate::stream::{ExpectedVersion, StreamId};

/// The stores a projection runtime needs.
#[derive(Clone, Debug)]
pub struct RuntimeStores<S, C, L, D> {
    /// The event store.
    pub events: S,
    /// Checkpoints.
    pub checkpoints: C,
    /// Leases.
    pub leases: L,
    /// Parked events.
    pub dead_letters: D,
}

/// The in-memory runtime stores.
pub type MemoryRuntimeStores =
    RuntimeStores<MemoryStore, MemoryCheckpointStore, MemoryLeaseStore, MemoryDeadLetterStore>;

impl MemoryRuntimeStores {
    /// Fresh in-memory stores.
    pub fn memory() -> Self {
        Self {
            events: MemoryStore::new(),
            checkpoints: MemoryCheckpointStore::new(),
            leases: MemoryLeaseStore::new(),
            dead_letters: MemoryDeadLetterStore::new(),
        }
    }
}

/// The coordination backend a case's runner gets from its [`RuntimeStores`].
pub type TestCoordination<C, L, D> = SplitCoordination<C, L, D, MemoryProcessStore>;

/// The lease time to live the cases use.
pub const TEST_LEASE_TTL: Duration = Duration::from_secs(2);

impl<S, C, L, D> RuntimeStores<S, C, L, D>
where
    S: EventStore,
    C: CheckpointStore,
    L: LeaseStore,
    D: DeadLetterStore,
{
    /// A runner over these stores with worker id `worker`, short leases and quick retries.
    pub fn runner(&self, worker: &str) -> ProjectionRunner<S, TestCoordination<C, L, D>> {
        ProjectionRunner::new(self.events.clone())
            .coordination(SplitCoordination {
                checkpoints: self.checkpoints.clone(),
                leases: self.leases.clone(),
                dead_letters: self.dead_letters.clone(),
                processes: MemoryProcessStore::new(),
            })
            .options(
                RunnerOptions::new()
                    .worker_id(worker)
                    .lease_ttl(TEST_LEASE_TTL)
                    .lease_retry(Duration::from_millis(200)),
            )
    }
}

/// What a [`RecordingProjection`] has seen.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recording {
    /// The events applied to the read model (each once: the read model is idempotent), by
    /// event id, with their positions.
    pub applied: BTreeMap<Uuid, u64>,
    /// The stream versions applied, per stream, in the order they were first applied.
    pub per_stream: BTreeMap<String, Vec<u64>>,
    /// How many times the handler succeeded, redeliveries included.
    pub deliveries: u64,
    /// How many times the read model was reset.
    pub resets: u64,
    /// The stream of each applied event, by position.
    pub streams: BTreeMap<u64, String>,
}

#[derive(Debug, Default)]
struct Behaviour {
    failing: HashSet<Uuid>,
    hang_at_delivery: Option<u64>,
    hang_on: HashSet<Uuid>,
}

/// A projection for tests: an idempotent read model of the events of type `Tested`, with
/// switches to make chosen events fail or hang.
#[derive(Debug)]
pub struct RecordingProjection {
    name: String,
    recording: Mutex<Recording>,
    behaviour: Mutex<Behaviour>,
    hung: watch::Sender<bool>,
}

impl RecordingProjection {
    /// A projection named `name`.
    pub fn new(name: &str) -> Arc<Self> {
        Arc::new(Self {
            name: name.to_owned(),
            recording: Mutex::default(),
            behaviour: Mutex::default(),
            hung: watch::channel(false).0,
        })
    }

    /// A copy of what it has seen.
    pub fn recording(&self) -> Recording {
        lock(&self.recording).clone()
    }

    /// Makes the handler fail on this event until [`heal`](Self::heal).
    pub fn fail_on(&self, event_id: Uuid) {
        lock(&self.behaviour).failing.insert(event_id);
    }

    /// Lets the handler succeed on this event again.
    pub fn heal(&self, event_id: Uuid) {
        lock(&self.behaviour).failing.remove(&event_id);
    }

    /// Makes the handler apply its `n`-th delivery and then never return, as a process that
    /// dies before saving its checkpoint.
    pub fn hang_at_delivery(&self, n: u64) {
        lock(&self.behaviour).hang_at_delivery = Some(n);
    }

    /// Makes the handler never return on this event (before applying it).
    pub fn hang_on(&self, event_id: Uuid) {
        lock(&self.behaviour).hang_on.insert(event_id);
    }

    /// Waits until a handler hangs.
    pub async fn hung(&self) {
        let mut rx = self.hung.subscribe();
        let _ = rx.wait_for(|h| *h).await;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Projection for RecordingProjection {
    fn name(&self) -> &str {
        &self.name
    }

    fn event_types(&self) -> Vec<String> {
        vec!["Tested".to_owned()]
    }

    async fn handle(&self, event: &RecordedEvent) -> Result<(), BoxError> {
        let (fail, hang_before) = {
            let b = lock(&self.behaviour);
            (
                b.failing.contains(&event.event_id),
                b.hang_on.contains(&event.event_id),
            )
        };
        if hang_before {
            self.hung.send_replace(true);
            std::future::pending::<()>().await;
        }
        if fail {
            return Err(format!("poisoned event at position {}", event.position).into());
        }
        let hang_after = {
            let mut r = lock(&self.recording);
            r.deliveries += 1;
            if r.applied.insert(event.event_id, event.position).is_none() {
                r.streams
                    .insert(event.position, event.stream_id.to_string());
                r.per_stream
                    .entry(event.stream_id.to_string())
                    .or_default()
                    .push(event.stream_version);
            }
            lock(&self.behaviour).hang_at_delivery == Some(r.deliveries)
        };
        if hang_after {
            self.hung.send_replace(true);
            std::future::pending::<()>().await;
        }
        Ok(())
    }

    async fn reset(&self) -> Result<(), BoxError> {
        let mut r = lock(&self.recording);
        r.applied.clear();
        r.per_stream.clear();
        r.streams.clear();
        r.resets += 1;
        Ok(())
    }
}

/// How long a case waits for an outcome before failing.
const PATIENCE: Duration = Duration::from_secs(120);

/// Waits until `check` returns true, failing the case after a generous bound.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let waited = tokio::time::timeout(PATIENCE, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "timed out waiting for {what}");
}

async fn wait_for<S, K>(running: &RunningProjections<S, K>, name: &str, position: u64)
where
    S: EventStore,
    K: Coordination,
{
    tokio::time::timeout(PATIENCE, running.wait_for(name, position))
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for `{name}` to reach {position}"))
        .unwrap_or_else(|e| panic!("`{name}` stopped before reaching {position}: {e}"));
}

/// Appends one `Tested` event to `stream`; returns its id and position.
pub async fn append_tested<S: EventStore>(store: &S, stream: &str, n: u64) -> (Uuid, u64) {
    append_typed(store, stream, "Tested", n).await
}

/// Appends one `Tested` event for each number in `numbers`, event `n` to stream
/// `order-{i % streams}` where `i` counts from 0; returns the position of the last one.
async fn append_spread<S: EventStore>(
    store: &S,
    streams: u64,
    numbers: std::ops::Range<u64>,
) -> u64 {
    let mut head = 0;
    for (i, n) in numbers.enumerate() {
        let stream = format!("order-{}", i as u64 % streams);
        head = append_tested(store, &stream, n).await.1;
    }
    head
}

async fn append_typed<S: EventStore>(
    store: &S,
    stream: &str,
    event_type: &str,
    n: u64,
) -> (Uuid, u64) {
    let e = event(event_type, n);
    let id = e.event_id;
    let r = store
        .append(
            &StreamId::parse(stream).expect("stream"),
            ExpectedVersion::Any,
            &[e],
        )
        .await
        .expect("append");
    (id, r.last_position)
}

fn quick_options() -> ProjectionOptions {
    ProjectionOptions::new()
        .batch_size(4)
        .poll_interval(Duration::from_millis(50))
        .failure(
            FailurePolicy::park_after(3)
                .backoff(Duration::from_millis(10), Duration::from_millis(40)),
        )
}

#[track_caller]
fn assert_ordered(recording: &Recording) {
    for (stream, versions) in &recording.per_stream {
        assert!(
            versions.windows(2).all(|w| w[0] < w[1]),
            "events of `{stream}` applied out of order: {versions:?}"
        );
    }
}

/// Every matching event is delivered, in order per stream, unrelated types never; a restart
/// resumes from the saved checkpoint without redelivering.
pub async fn projection_delivers_and_resumes<S, C, L, D>(stores: RuntimeStores<S, C, L, D>)
where
    S: EventStore,
    C: CheckpointStore,
    L: LeaseStore,
    D: DeadLetterStore,
{
    let mut head = 0;
    for i in 0..25u64 {
        head = append_tested(&stores.events, &format!("order-{}", i % 3), i)
            .await
            .1;
        if i % 5 == 0 {
            head = append_typed(&stores.events, "order-x", "Other", i).await.1;
        }
    }
    let projection = RecordingProjection::new("resumes");
    let running = stores
        .runner("a")
        .register(Arc::clone(&projection), quick_options())
        .start();
    wait_for(&running, "resumes", head).await;
    let seen = projection.recording();
    assert_eq!(seen.applied.len(), 25, "every `Tested` event, nothing else");
    assert_eq!(seen.deliveries, 25, "no redelivery without a crash");
    assert_ordered(&seen);
    assert_eq!(seen.per_stream["order-0"], (1..=9).collect::<Vec<u64>>());
    running.shutdown().await.expect("clean shutdown");
    assert!(
        stores
            .leases
            .holder("resumes", 0)
            .await
            .expect("holder")
            .is_none(),
        "a clean shutdown releases the lease"
    );
    assert_eq!(
        stores.checkpoints.load("resumes", 0).await.expect("load"),
        head
    );

    head = append_spread(&stores.events, 3, 100..110).await;
    let running = stores
        .runner("b")
        .register(Arc::clone(&projection), quick_options())
        .start();
    wait_for(&running, "resumes", head).await;
    let seen = projection.recording();
    assert_eq!(seen.applied.len(), 35);
    assert_eq!(
        seen.deliveries, 35,
        "the restart resumed from the checkpoint"
    );
    assert_ordered(&seen);
    let status = running.status();
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].lag_events, 0);
    assert_eq!(status[0].checkpoint, head);
    running.shutdown().await.expect("clean shutdown");
}

/// A crash between handling events and saving the checkpoint redelivers the events of the
/// unfinished batch; an idempotent read model still counts every event once.
pub async fn projection_crash_mid_batch<S, C, L, D>(stores: RuntimeStores<S, C, L, D>)
where
    S: EventStore,
    C: CheckpointStore,
    L: LeaseStore,
    D: DeadLetterStore,
{
    let mut positions = Vec::new();
    for i in 0..20u64 {
        let (_, position) = append_tested(&stores.events, &format!("order-{}", i % 4), i).await;
        positions.push(position);
    }
    let head = positions[19];
    let projection = RecordingProjection::new("crashes");
    projection.hang_at_delivery(15);
    let options = quick_options().batch_size(10);
    let running = stores
        .runner("a")
        .register(Arc::clone(&projection), options.clone())
        .start();
    tokio::time::timeout(PATIENCE, projection.hung())
        .await
        .expect("the handler reaches the crash point");
    drop(running); // the process dies: no checkpoint save, no lease release
    assert_eq!(
        stores.checkpoints.load("crashes", 0).await.expect("load"),
        positions[9],
        "only the first batch was checkpointed"
    );
    assert_eq!(projection.recording().deliveries, 15);

    lock(&projection.behaviour).hang_at_delivery = None;
    let running = stores
        .runner("b")
        .register(Arc::clone(&projection), options)
        .start();
    wait_for(&running, "crashes", head).await;
    let seen = projection.recording();
    assert_eq!(
        seen.applied.len(),
        20,
        "the read model equals the event count"
    );
    assert_eq!(
        seen.deliveries, 25,
        "events 11 to 15 were delivered again: at-least-once"
    );
    assert_ordered(&seen);
    running.shutdown().await.expect("clean shutdown");
}

/// A [`RecordingProjection`] that saves the checkpoint itself after each event, with the
/// lease's fence, as a transactional projection does in its transaction.
#[derive(Debug)]
pub struct CheckpointingProjection<C> {
    inner: Arc<RecordingProjection>,
    checkpoints: C,
}

impl<C: CheckpointStore> CheckpointingProjection<C> {
    /// Wraps `inner`, saving checkpoints to `checkpoints`.
    pub fn new(inner: Arc<RecordingProjection>, checkpoints: C) -> Self {
        Self { inner, checkpoints }
    }
}

impl<C: CheckpointStore> Projection for CheckpointingProjection<C> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn event_types(&self) -> Vec<String> {
        self.inner.event_types()
    }

    async fn handle(&self, event: &RecordedEvent) -> Result<(), BoxError> {
        self.inner.handle(event).await
    }

    async fn handle_in(
        &self,
        event: &RecordedEvent,
        context: &HandleContext,
    ) -> Result<(), BoxError> {
        let crash_here = {
            let b = lock(&self.inner.behaviour);
            let next = lock(&self.inner.recording).deliveries + 1;
            b.hang_at_delivery == Some(next)
        };
        if crash_here {
            // Apply and checkpoint together, then die before the runner's own save.
            lock(&self.inner.behaviour).hang_at_delivery = None;
            self.inner.handle(event).await?;
            self.checkpoints
                .save(&context.lease, event.position)
                .await?;
            self.inner.hung.send_replace(true);
            std::future::pending::<()>().await;
        }
        self.inner.handle(event).await?;
        self.checkpoints
            .save(&context.lease, event.position)
            .await?;
        Ok(())
    }
}

/// A projection that saves its checkpoint with its read model (through
/// [`Projection::handle_in`]) is effectively-once: a crash mid-batch repeats nothing.
pub async fn projection_checkpoint_with_read_model<S, C, L, D>(stores: RuntimeStores<S, C, L, D>)
where
    S: EventStore,
    C: CheckpointStore,
    L: LeaseStore,
    D: DeadLetterStore,
{
    let head = append_spread(&stores.events, 4, 0..20).await;
    let recording = RecordingProjection::new("atomic");
    recording.hang_at_delivery(15);
    let options = quick_options().batch_size(10);
    let running = stores
        .runner("a")
        .register(
            CheckpointingProjection::new(Arc::clone(&recording), stores.checkpoints.clone()),
            options.clone(),
        )
        .start();
    tokio::time::timeout(PATIENCE, recording.hung())
        .await
        .expect("the handler reaches the crash point");
    drop(running);
    assert_eq!(recording.recording().deliveries, 15);

    let running = stores
        .runner("b")
        .register(
            CheckpointingProjection::new(Arc::clone(&recording), stores.checkpoints.clone()),
            options,
        )
        .start();
    wait_for(&running, "atomic", head).await;
    let seen = recording.recording();
    assert_eq!(seen.applied.len(), 20);
    assert_eq!(seen.deliveries, 20, "nothing was delivered twice");
    assert_ordered(&seen);
    running.shutdown().await.expect("clean shutdown");
}

/// Two workers on one projection: one is active, the other takes over when the active one
/// dies and its lease expires.
pub async fn projection_one_active_worker_and_failover<S, C, L, D>(
    stores: RuntimeStores<S, C, L, D>,
) where
    S: EventStore,
    C: CheckpointStore,
    L: LeaseStore,
    D: DeadLetterStore,
{
    let mut head = append_spread(&stores.events, 3, 0..12).await;
    let first = RecordingProjection::new("failover");
    let second = RecordingProjection::new("failover");
    let a = stores
        .runner("a")
        .register(Arc::clone(&first), quick_options())
        .start();
    wait_for(&a, "failover", head).await;
    let b = stores
        .runner("b")
        .register(Arc::clone(&second), quick_options())
        .start();
    head = append_spread(&stores.events, 3, 50..56).await;
    wait_for(&a, "failover", head).await;
    let holder = stores.leases.holder("failover", 0).await.expect("holder");
    assert_eq!(holder.map(|l| l.holder), Some("a".to_owned()));
    assert_eq!(first.recording().applied.len(), 18);
    assert_eq!(
        second.recording().deliveries,
        0,
        "the standby handles nothing while the active worker holds the lease"
    );
    assert!(
        b.status()
            .iter()
            .all(|p| p.state == WorkerState::WaitingForLease)
    );

    drop(a); // the active process dies without releasing its lease
    head = append_spread(&stores.events, 3, 80..86).await;
    wait_for(&b, "failover", head).await;
    let holder = stores.leases.holder("failover", 0).await.expect("holder");
    assert_eq!(holder.map(|l| l.holder), Some("b".to_owned()));
    let taken_over = second.recording();
    assert_eq!(
        taken_over.applied.len(),
        6,
        "the standby resumed from the dead worker's checkpoint"
    );
    assert_ordered(&taken_over);
    b.shutdown().await.expect("clean shutdown");
}

/// A partitioned projection: every event handled once, each stream by one partition, in
/// order, with a checkpoint per partition.
pub async fn projection_partitions<S, C, L, D>(stores: RuntimeStores<S, C, L, D>)
where
    S: EventStore,
    C: CheckpointStore,
    L: LeaseStore,
    D: DeadLetterStore,
{
    let head = append_spread(&stores.events, 10, 0..60).await;
    let projection = RecordingProjection::new("partitioned");
    let counted = CountedReads::new(stores.events.clone());
    let running = RuntimeStores {
        events: counted.clone(),
        checkpoints: stores.checkpoints.clone(),
        leases: stores.leases.clone(),
        dead_letters: stores.dead_letters.clone(),
    }
    .runner("a")
    .register(Arc::clone(&projection), quick_options().partitions(4))
    .start();
    wait_for(&running, "partitioned", head).await;
    let seen = projection.recording();
    assert_eq!(seen.applied.len(), 60);
    assert_eq!(
        seen.deliveries, 60,
        "each event handled by exactly one partition"
    );
    assert_ordered(&seen);
    assert_eq!(
        counted.events_read(),
        60,
        "the four partitions read the log once in total, each only its own streams"
    );
    assert_eq!(running.status().len(), 4);
    for partition in 0..4 {
        assert_eq!(
            stores
                .checkpoints
                .load("partitioned", partition)
                .await
                .expect("load"),
            head,
            "partition {partition} scanned up to the head"
        );
        let lease = stores
            .leases
            .holder("partitioned", partition)
            .await
            .expect("holder");
        assert_eq!(lease.map(|l| l.holder), Some("a".to_owned()));
    }
    running.shutdown().await.expect("clean shutdown");
}

/// A second worker joining takes over its share of the partitions, handed over after a
/// saved checkpoint: nothing is handled twice, and each stream stays with one worker.
pub async fn projection_partitions_balance_across_workers<S, C, L, D>(
    stores: RuntimeStores<S, C, L, D>,
) where
    S: EventStore,
    C: CheckpointStore,
    L: LeaseStore,
    D: DeadLetterStore,
{
    let mut head = append_spread(&stores.events, 8, 0..40).await;
    let first = RecordingProjection::new("balanced");
    let second = RecordingProjection::new("balanced");
    let options = quick_options().partitions(4);
    let a = stores
        .runner("a")
        .register(Arc::clone(&first), options.clone())
        .start();
    wait_for(&a, "balanced", head).await;
    let b = stores
        .runner("b")
        .register(Arc::clone(&second), options)
        .start();
    eventually("the partitions to be shared", || async {
        let mut held = BTreeMap::new();
        for partition in 0..4 {
            if let Some(lease) = stores
                .leases
                .holder("balanced", partition)
                .await
                .expect("holder")
            {
                *held.entry(lease.holder).or_insert(0) += 1;
            }
        }
        held.get("a") == Some(&2) && held.get("b") == Some(&2)
    })
    .await;
    let before = head;
    head = append_spread(&stores.events, 8, 100..140).await;
    eventually("every event to be handled", || async {
        first.recording().applied.len() + second.recording().applied.len() >= 80
    })
    .await;
    let (x, y) = (first.recording(), second.recording());
    assert_eq!(x.deliveries + y.deliveries, 80, "nothing handled twice");
    assert!(y.deliveries > 0, "the second worker took a share");
    let later = |r: &Recording| -> BTreeSet<String> {
        r.streams
            .range(before + 1..)
            .map(|(_, stream)| stream.clone())
            .collect()
    };
    let (later_x, later_y) = (later(&x), later(&y));
    assert!(!later_y.is_empty());
    assert!(
        later_x.is_disjoint(&later_y),
        "after the handover each stream is handled by one worker: {later_x:?} / {later_y:?}"
    );
    assert_ordered(&x);
    assert_ordered(&y);
    assert!(head > before);
    a.shutdown().await.expect("clean shutdown");
    b.shutdown().await.expect("clean shutdown");
}

/// A poison event is parked after its retries; other streams flow; later events of its
/// stream wait behind it, across a restart; after a fix, a replay handles them in order and
/// unblocks the stream.
pub async fn projection_poison_event_parked_and_replayed<S, C, L, D>(
    stores: RuntimeStores<S, C, L, D>,
) where
    S: EventStore,
    C: CheckpointStore,
    L: LeaseStore,
    D: DeadLetterStore,
{
    let projection = RecordingProjection::new("poison");
    let store = &stores.events;
    append_tested(store, "order-a", 1).await;
    append_tested(store, "order-b", 1).await;
    let (poison, poison_position) = append_tested(store, "order-a", 2).await;
    append_tested(store, "order-b", 2).await;
    append_tested(store, "order-a", 3).await;
    let (_, head) = append_tested(store, "order-b", 3).await;
    projection.fail_on(poison);

    let running = stores
        .runner("a")
        .register(Arc::clone(&projection), quick_options())
        .start();
    wait_for(&running, "poison", head).await;
    let seen = projection.recording();
    assert_eq!(seen.per_stream["order-b"], [1, 2, 3], "other streams flow");
    assert_eq!(seen.per_stream["order-a"], [1], "the poisoned stream waits");
    let parked = running.parked("poison").await.expect("parked");
    assert_eq!(parked.len(), 2);
    assert_eq!(parked[0].event_id, poison);
    assert!(matches!(
        &parked[0].reason,
        ParkReason::Failed { attempts: 3, error } if error.contains("poisoned")
    ));
    assert_eq!(
        parked[1].reason,
        ParkReason::Waiting {
            behind: poison_position
        }
    );
    assert!(
        running.health(Duration::from_secs(1)).is_healthy(),
        "parked events do not stall the projection"
    );
    running.shutdown().await.expect("clean shutdown");

    // The block survives a restart.
    append_tested(store, "order-a", 4).await;
    let (_, head) = append_tested(store, "order-b", 4).await;
    let running = stores
        .runner("a")
        .register(Arc::clone(&projection), quick_options())
        .start();
    wait_for(&running, "poison", head).await;
    assert_eq!(running.parked("poison").await.expect("parked").len(), 3);
    assert_eq!(projection.recording().per_stream["order-a"], [1]);

    // Replaying before the fix parks it again, still blocking its stream.
    assert_eq!(
        running.replay_parked("poison", None).await.expect("replay"),
        3
    );
    eventually("the failed replay", || async {
        let parked = running.parked("poison").await.expect("parked");
        parked.iter().all(|p| !p.replay_requested)
            && matches!(parked[0].reason, ParkReason::Failed { attempts: 6, .. })
    })
    .await;
    assert_eq!(projection.recording().per_stream["order-a"], [1]);

    projection.heal(poison);
    let stream_a = StreamId::parse("order-a").expect("stream");
    running
        .replay_parked("poison", Some(&stream_a))
        .await
        .expect("replay");
    eventually("the replay", || async {
        running.parked("poison").await.expect("parked").is_empty()
    })
    .await;
    assert_eq!(projection.recording().per_stream["order-a"], [1, 2, 3, 4]);
    let (_, head) = append_tested(store, "order-a", 5).await;
    wait_for(&running, "poison", head).await;
    assert_eq!(
        projection.recording().per_stream["order-a"],
        [1, 2, 3, 4, 5],
        "the stream is unblocked"
    );
    running.shutdown().await.expect("clean shutdown");
}

/// With the `Stop` policy a failing event stops its partition, which the health check
/// reports; after a fix, a restart resumes from that event.
pub async fn projection_stop_policy<S, C, L, D>(stores: RuntimeStores<S, C, L, D>)
where
    S: EventStore,
    C: CheckpointStore,
    L: LeaseStore,
    D: DeadLetterStore,
{
    let projection = RecordingProjection::new("stops");
    append_tested(&stores.events, "order-a", 1).await;
    let (poison, poison_position) = append_tested(&stores.events, "order-b", 1).await;
    let (_, head) = append_tested(&stores.events, "order-a", 2).await;
    projection.fail_on(poison);
    let options = quick_options().failure(
        FailurePolicy::stop_after(2).backoff(Duration::from_millis(10), Duration::from_millis(10)),
    );
    let running = stores
        .runner("a")
        .register(Arc::clone(&projection), options.clone())
        .start();
    eventually("the partition to stop", || async {
        running
            .status()
            .iter()
            .any(|p| p.state == WorkerState::Stopped)
    })
    .await;
    let health = running.health(Duration::from_secs(60));
    assert!(matches!(
        &health.problems[..],
        [HealthProblem::Stopped { name, .. }] if name == "stops"
    ));
    match running.shutdown().await {
        Err(ProjectionError::HandlerFailed {
            position, attempts, ..
        }) => {
            assert_eq!((position, attempts), (poison_position, 2));
        }
        other => panic!("expected HandlerFailed, got {other:?}"),
    }
    assert!(
        stores.checkpoints.load("stops", 0).await.expect("load") < poison_position,
        "the checkpoint stays before the failed event"
    );
    assert!(
        stores
            .dead_letters
            .list("stops")
            .await
            .expect("list")
            .is_empty()
    );

    projection.heal(poison);
    let running = stores
        .runner("a")
        .register(Arc::clone(&projection), options)
        .start();
    wait_for(&running, "stops", head).await;
    let seen = projection.recording();
    assert_eq!(seen.applied.len(), 3);
    assert!(seen.applied.contains_key(&poison));
    running.shutdown().await.expect("clean shutdown");
}

/// A handler that never returns makes the partition stalled in the health check, with its
/// lag visible in the status.
pub async fn projection_stall_detected<S, C, L, D>(stores: RuntimeStores<S, C, L, D>)
where
    S: EventStore,
    C: CheckpointStore,
    L: LeaseStore,
    D: DeadLetterStore,
{
    let projection = RecordingProjection::new("stalls");
    let (_, first) = append_tested(&stores.events, "order-a", 1).await;
    let running = stores
        .runner("a")
        .register(Arc::clone(&projection), quick_options())
        .start();
    wait_for(&running, "stalls", first).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        running.health(Duration::from_secs(1)).is_healthy(),
        "a caught-up, idle projection is healthy"
    );
    // Both in one append, the handler told to hang before either is readable.
    let stuck = event("Tested", 2);
    projection.hang_on(stuck.event_id);
    let head = stores
        .events
        .append(
            &StreamId::parse("order-a").expect("stream"),
            ExpectedVersion::Any,
            &[stuck, event("Tested", 3)],
        )
        .await
        .expect("append")
        .last_position;
    tokio::time::timeout(PATIENCE, projection.hung())
        .await
        .expect("the handler hangs");
    let stalled_after = Duration::from_secs(2);
    eventually("the partition to be reported stalled", || async {
        !running.health(stalled_after).is_healthy()
    })
    .await;
    let health = running.health(stalled_after);
    assert!(
        matches!(
            &health.problems[..],
            [HealthProblem::Stalled { name, position, head, for_, .. }]
                if name == "stalls" && *position == first && *head > first
                    && *for_ >= stalled_after
        ),
        "{health:?}"
    );
    let status = &health.partitions[0];
    assert_eq!(status.head, head);
    assert_eq!(status.lag_events, head - first);
    drop(running);
}

/// A rebuild resets the read model and the checkpoint, replays everything while appends
/// continue, reports progress, and ends equal to the live read model.
pub async fn projection_rebuild_while_appending<S, C, L, D>(stores: RuntimeStores<S, C, L, D>)
where
    S: EventStore,
    C: CheckpointStore,
    L: LeaseStore,
    D: DeadLetterStore,
{
    let head = append_spread(&stores.events, 5, 0..30).await;
    let projection = RecordingProjection::new("rebuilt");
    let running = stores
        .runner("a")
        .register(Arc::clone(&projection), quick_options().partitions(2))
        .start();
    wait_for(&running, "rebuilt", head).await;
    let before = projection.recording();
    assert_eq!(before.applied.len(), 30);

    let writer = {
        let store = stores.events.clone();
        tokio::spawn(async move {
            let mut last = 0;
            for i in 0..20u64 {
                last = append_tested(&store, &format!("order-{}", i % 5), 100 + i)
                    .await
                    .1;
                tokio::task::yield_now().await;
            }
            last
        })
    };
    let mut reports: Vec<RebuildProgress> = Vec::new();
    let target = tokio::time::timeout(
        PATIENCE,
        running.rebuild("rebuilt", |p| reports.push(p.clone())),
    )
    .await
    .expect("the rebuild finishes")
    .expect("rebuild");
    assert!(target >= head);
    assert_eq!(projection.recording().resets, 1);
    assert!(!reports.is_empty());
    assert!(
        reports.windows(2).all(|w| w[0].position <= w[1].position),
        "progress only moves forward"
    );
    let last = reports.last().expect("a report");
    assert_eq!((last.position, last.target), (target, target));

    let head = writer.await.expect("writer");
    wait_for(&running, "rebuilt", head).await;
    let after = projection.recording();
    assert_eq!(after.applied.len(), 50, "the rebuilt model has every event");
    assert_ordered(&after);
    for (id, position) in &before.applied {
        assert_eq!(after.applied.get(id), Some(position));
    }
    running.shutdown().await.expect("clean shutdown");
}

/// Expands to one `#[tokio::test]` per projection case, each on stores returned by the
/// given `async fn() -> RuntimeStores<..>`, on a current-thread runtime. With
/// `, start_paused` after the path, tokio's clock is paused and auto-advances (for stores
/// that keep time on tokio's clock, as the in-memory ones do).
#[macro_export]
macro_rules! projection_runtime_tests {
    ($make:path) => {
        $crate::projection_runtime_tests!(@cases $make; real);
    };
    ($make:path, start_paused) => {
        $crate::projection_runtime_tests!(@cases $make; paused);
    };
    (@cases $make:path; $clock:ident) => {
        $crate::projection_runtime_tests!(@each $make; $clock;
            projection_delivers_and_resumes,
            projection_crash_mid_batch,
            projection_checkpoint_with_read_model,
            projection_one_active_worker_and_failover,
            projection_partitions,
            projection_partitions_balance_across_workers,
            projection_poison_event_parked_and_replayed,
            projection_stop_policy,
            projection_stall_detected,
            projection_rebuild_while_appending,
            projection_rebuild_fails_at_every_step,
            projection_failing_dead_letter_store,
        );
    };
    (@each $make:path; real; $($case:ident),* $(,)?) => {
        $(
            #[$crate::__private::tokio::test(crate = "::factum::__private::tokio")]
            async fn $case() {
                $crate::testing::projections::$case($make().await).await;
            }
        )*
    };
    (@each $make:path; paused; $($case:ident),* $(,)?) => {
        $(
            #[$crate::__private::tokio::test(start_paused = true, crate = "::factum::__private::tokio")]
            async fn $case() {
                $crate::testing::projections::$case($make().await).await;
            }
        )*
    };
}

/// A step of a rebuild at which [`projection_rebuild_fails_at_every_step`] injects a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RebuildStep {
    /// Saving checkpoint 0 for this partition.
    Checkpoint(u32),
    /// Clearing the parked events.
    DeadLetters,
    /// Emptying the read model.
    Reset,
    /// Right after the read model was emptied, before the partitions resume.
    AfterReset,
}

/// The step armed to fail, once.
#[derive(Clone, Debug, Default)]
struct Faults(Arc<Mutex<Option<RebuildStep>>>);

impl Faults {
    fn arm(&self, step: RebuildStep) {
        *lock(&self.0) = Some(step);
    }

    /// An injected error if `step` is armed (then disarmed).
    fn fail_at(&self, step: RebuildStep) -> Result<(), String> {
        let mut armed = lock(&self.0);
        if *armed == Some(step) {
            *armed = None;
            return Err(format!("failure injected at {step:?}"));
        }
        Ok(())
    }
}

/// A checkpoint store whose save of checkpoint 0 fails at the armed step.
#[derive(Clone, Debug)]
struct FaultyCheckpoints<C> {
    inner: C,
    faults: Faults,
}

impl<C: CheckpointStore> CheckpointStore for FaultyCheckpoints<C> {
    async fn load(&self, name: &str, partition: u32) -> Result<u64, CoordinationError> {
        self.inner.load(name, partition).await
    }

    async fn claim(&self, lease: &Lease) -> Result<u64, CoordinationError> {
        self.inner.claim(lease).await
    }

    async fn save(&self, lease: &Lease, position: u64) -> Result<(), CoordinationError> {
        if position == 0 {
            self.faults
                .fail_at(RebuildStep::Checkpoint(lease.partition))
                .map_err(|e| CoordinationError::Backend(e.into()))?;
        }
        self.inner.save(lease, position).await
    }
}

/// A [`RecordingProjection`] whose reset fails at the armed step (before or after emptying
/// the read model).
#[derive(Debug)]
struct FaultyReset {
    inner: Arc<RecordingProjection>,
    faults: Faults,
}

impl Projection for FaultyReset {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn event_types(&self) -> Vec<String> {
        self.inner.event_types()
    }

    async fn handle(&self, event: &RecordedEvent) -> Result<(), BoxError> {
        self.inner.handle(event).await
    }

    async fn reset(&self) -> Result<(), BoxError> {
        self.faults.fail_at(RebuildStep::Reset)?;
        self.inner.reset().await?;
        self.faults.fail_at(RebuildStep::AfterReset)?;
        Ok(())
    }
}

/// A failure at any step of a rebuild, followed by a crash, loses nothing: after a restart
/// every event is applied or still parked (never an emptied read model behind an old
/// checkpoint, never parked events cleared behind one), and a second rebuild ends equal to a
/// projection of every event from scratch, each event applied once and in order per stream.
pub async fn projection_rebuild_fails_at_every_step<S, C, L, D>(stores: RuntimeStores<S, C, L, D>)
where
    S: EventStore,
    C: CheckpointStore,
    L: LeaseStore,
    D: DeadLetterStore,
{
    let steps = [
        RebuildStep::Checkpoint(0),
        RebuildStep::Checkpoint(1),
        RebuildStep::DeadLetters,
        RebuildStep::Reset,
        RebuildStep::AfterReset,
    ];
    let options = quick_options().partitions(2);
    for (round, step) in steps.into_iter().enumerate() {
        let name = format!("rebuild_fails_{round}");
        append_spread(&stores.events, 4, 0..12).await;
        let poisoned_stream = format!("order-poisoned{round}");
        let (poison, _) = append_tested(&stores.events, &poisoned_stream, 1).await;
        append_tested(&stores.events, &poisoned_stream, 2).await;
        let head = append_spread(&stores.events, 4, 20..24).await;
        let projection = RecordingProjection::new(&name);
        projection.fail_on(poison);
        let faults = Faults::default();
        let faulty = RuntimeStores {
            events: stores.events.clone(),
            checkpoints: FaultyCheckpoints {
                inner: stores.checkpoints.clone(),
                faults: faults.clone(),
            },
            leases: stores.leases.clone(),
            dead_letters: FaultyDeadLetters::new(stores.dead_letters.clone(), {
                let faults = faults.clone();
                move |op| match op {
                    DeadLetterOp::Clear => faults.fail_at(RebuildStep::DeadLetters),
                    _ => Ok(()),
                }
            }),
        };
        let running = faulty
            .runner(&format!("a{round}"))
            .register(
                FaultyReset {
                    inner: Arc::clone(&projection),
                    faults: faults.clone(),
                },
                options.clone(),
            )
            .start();
        wait_for(&running, &name, head).await;
        let parked_before: BTreeMap<Uuid, ParkReason> = running
            .parked(&name)
            .await
            .expect("parked")
            .into_iter()
            .map(|p| (p.event_id, p.reason))
            .collect();
        assert_eq!(parked_before.len(), 2);
        projection.heal(poison);

        faults.arm(step);
        let failed = tokio::time::timeout(PATIENCE, running.rebuild(&name, |_| {}))
            .await
            .expect("the rebuild ends");
        assert!(
            failed.is_err(),
            "{step:?}: the injected failure is reported"
        );
        drop(running); // the process dies right after the failure

        let running = stores
            .runner(&format!("b{round}"))
            .register(Arc::clone(&projection), options.clone())
            .start();
        wait_for(&running, &name, head).await;
        let parked: BTreeSet<Uuid> = running
            .parked(&name)
            .await
            .expect("parked")
            .into_iter()
            .map(|p| {
                assert_eq!(
                    Some(&p.reason),
                    parked_before.get(&p.event_id),
                    "{step:?}: an event still parked is parked as it was, once"
                );
                p.event_id
            })
            .collect();
        let seen = projection.recording();
        let from_scratch = RecordingProjection::new(&format!("{name}_from_scratch"));
        let reference = stores
            .runner(&format!("c{round}"))
            .register(Arc::clone(&from_scratch), options.clone())
            .start();
        wait_for(&reference, from_scratch.name(), head).await;
        reference.shutdown().await.expect("clean shutdown");
        let every = from_scratch.recording();
        let lost: Vec<&Uuid> = every
            .applied
            .keys()
            .filter(|id| !seen.applied.contains_key(id) && !parked.contains(id))
            .collect();
        assert!(
            lost.is_empty(),
            "{step:?}: events neither applied nor parked after the restart: {lost:?}"
        );
        assert_ordered(&seen);

        let target = tokio::time::timeout(PATIENCE, running.rebuild(&name, |_| {}))
            .await
            .expect("the second rebuild ends")
            .expect("the second rebuild");
        assert!(target >= head);
        let rebuilt = projection.recording();
        assert_eq!(
            rebuilt.applied, every.applied,
            "{step:?}: the rebuilt read model has every event"
        );
        assert_eq!(
            rebuilt.per_stream, every.per_stream,
            "{step:?}: each once, in order per stream"
        );
        assert!(running.parked(&name).await.expect("parked").is_empty());
        running.shutdown().await.expect("clean shutdown");
    }
}

/// What the dead-letter store of [`projection_failing_dead_letter_store`] answers a park.
const PARK_REFUSED: &str = "the dead-letter store is unavailable";

/// A dead-letter store that keeps failing to park an event makes the partition unhealthy,
/// naming the error, instead of retrying silently; the event is not skipped meanwhile, and
/// once the store recovers it is parked and the partition is healthy again.
pub async fn projection_failing_dead_letter_store<S, C, L, D>(stores: RuntimeStores<S, C, L, D>)
where
    S: EventStore,
    C: CheckpointStore,
    L: LeaseStore,
    D: DeadLetterStore,
{
    let parks_fail = Arc::new(AtomicBool::new(true));
    let dead_letters = FaultyDeadLetters::new(stores.dead_letters.clone(), {
        let parks_fail = Arc::clone(&parks_fail);
        move |op| match op {
            DeadLetterOp::Park if parks_fail.load(Ordering::SeqCst) => Err(PARK_REFUSED.into()),
            _ => Ok(()),
        }
    });
    let stores = RuntimeStores {
        events: stores.events,
        checkpoints: stores.checkpoints,
        leases: stores.leases,
        dead_letters: dead_letters.clone(),
    };
    let projection = RecordingProjection::new("unparkable");
    append_tested(&stores.events, "order-a", 1).await;
    let (poison, poison_position) = append_tested(&stores.events, "order-a", 2).await;
    let (_, head) = append_tested(&stores.events, "order-b", 1).await;
    projection.fail_on(poison);
    let running = stores
        .runner("a")
        .register(Arc::clone(&projection), quick_options())
        .start();
    // A long stall threshold: the failure itself must be reported, not the lack of progress.
    let stalled_after = Duration::from_secs(3600);
    eventually(
        "the failing dead-letter store in the health check",
        || async {
            running
                .health(stalled_after)
                .problems
                .iter()
                .any(|problem| {
                    matches!(
                        problem,
                        HealthProblem::Failing { name, partition: 0, error, failures, .. }
                            if name == "unparkable"
                                && *failures >= 2
                                && error.contains("could not park the event")
                                && error.contains(PARK_REFUSED)
                    )
                })
        },
    )
    .await;
    assert!(dead_letters.refused() >= 2);
    let status = running.status();
    assert!(
        status[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains(PARK_REFUSED)),
        "{status:?}"
    );
    assert!(
        stores
            .checkpoints
            .load("unparkable", 0)
            .await
            .expect("load")
            < poison_position,
        "the event is not skipped while it cannot be parked"
    );
    assert!(!projection.recording().applied.contains_key(&poison));

    parks_fail.store(false, Ordering::SeqCst);
    wait_for(&running, "unparkable", head).await;
    let parked = running.parked("unparkable").await.expect("parked");
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert_eq!(parked[0].event_id, poison);
    eventually("the partition to be healthy again", || async {
        running.health(stalled_after).is_healthy()
    })
    .await;
    assert_eq!(running.status()[0].failures, 0);
    running.shutdown().await.expect("clean shutdown");
}

/// An event store that counts the events its `read_all` returns.
#[derive(Clone, Debug)]
struct CountedReads<S> {
    store: S,
    read: Arc<std::sync::atomic::AtomicUsize>,
}

impl<S> CountedReads<S> {
    fn new(store: S) -> Self {
        Self {
            store,
            read: Arc::default(),
        }
    }

    fn events_read(&self) -> usize {
        self.read.load(Ordering::SeqCst)
    }
}

impl<S: EventStore> EventStore for CountedReads<S> {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[crate::event::NewEvent],
    ) -> Result<crate::store::AppendResult, crate::error::StoreError> {
        self.store.append(stream, expected, events).await
    }
    async fn read_stream(
        &self,
        stream: &StreamId,
        read: &crate::store::StreamRead,
    ) -> Result<Vec<RecordedEvent>, crate::error::StoreError> {
        self.store.read_stream(stream, read).await
    }
    async fn stream_version(&self, stream: &StreamId) -> Result<u64, crate::error::StoreError> {
        self.store.stream_version(stream).await
    }
    async fn read_all(
        &self,
        read: &crate::store::ReadAll,
    ) -> Result<Vec<RecordedEvent>, crate::error::StoreError> {
        let events = self.store.read_all(read).await?;
        self.read.fetch_add(events.len(), Ordering::SeqCst);
        Ok(events)
    }
    async fn head_position(&self) -> Result<u64, crate::error::StoreError> {
        self.store.head_position().await
    }
    async fn event_by_id(
        &self,
        event_id: Uuid,
    ) -> Result<Option<RecordedEvent>, crate::error::StoreError> {
        self.store.event_by_id(event_id).await
    }
    async fn save_snapshot(
        &self,
        snapshot: &crate::store::Snapshot,
    ) -> Result<(), crate::error::StoreError> {
        self.store.save_snapshot(snapshot).await
    }
    async fn load_snapshot(
        &self,
        stream: &StreamId,
        schema_version: u32,
        max_version: Option<u64>,
    ) -> Result<Option<crate::store::Snapshot>, crate::error::StoreError> {
        self.store
            .load_snapshot(stream, schema_version, max_version)
            .await
    }
    async fn record_command(
        &self,
        record: &crate::store::CommandRecord,
    ) -> Result<Option<crate::store::CommandRecord>, crate::error::StoreError> {
        self.store.record_command(record).await
    }
    async fn command_record(
        &self,
        command_id: Uuid,
    ) -> Result<Option<crate::store::CommandRecord>, crate::error::StoreError> {
        self.store.command_record(command_id).await
    }
    fn head_hint(&self) -> Option<watch::Receiver<u64>> {
        self.store.head_hint()
    }
}
