//! Failover: a store built from a multi-host URL keeps working while its synchronous standby
//! is promoted and its primary stopped, losing no acknowledged append and repeating none; a
//! transactional projection and a process manager resume on the new primary from their
//! checkpoints.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use common::{event, stream};
use factum::process::{ProcessManagerRunner, ProcessOptions};
use factum::projection::{FailurePolicy, ProjectionOptions, ProjectionRunner, RunnerOptions};
use factum::store::{NewEvent, Payload, ReadAll};
use factum::testing::Counter;
use factum::testing::process_managers::{CounterDispatcher, FLOW, FlowProcess};
use factum::{
    BoxError, EventStore, ExpectedVersion, Metadata, RecordedEvent, Repository, StoreError,
    StreamId,
};
use factum_postgres::testing::replication::{ReplicatedPair, Replication};
use factum_postgres::{
    PgConfig, PgCoordination, PgProjection, PgStore, PgTransaction, Transactional,
};
use uuid::Uuid;

/// How long a step waits for a condition before failing.
const PATIENCE: Duration = Duration::from_secs(90);

/// Appends before the failover, and after it.
const APPENDS_EACH_SIDE: usize = 30;

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An acknowledged append.
#[derive(Clone, Debug)]
struct Ack {
    writer: usize,
    event_id: Uuid,
    position: u64,
    /// Whether the append started after the promotion was complete.
    after_failover: bool,
}

#[derive(Default)]
struct Log {
    acks: Mutex<Vec<Ack>>,
    /// Appends that failed and were tried again with the same event.
    failures: Mutex<Vec<String>>,
    promoted: AtomicBool,
    stop: AtomicBool,
    count: AtomicUsize,
}

/// The flows the process manager follows, each a counter of the same id.
const FLOWS: u64 = 3;

/// The `i`-th event of writer `n`: a plain order event, or for the flow writer a step of
/// flow `f{i % FLOWS}` that increments its counter by 1.
fn nth_event(n: usize, flow: bool, i: u64) -> (StreamId, NewEvent) {
    if !flow {
        return (stream(&format!("w{n}-{}", i % 4)), event(i));
    }
    let stream = StreamId::new("flow", &format!("f{}", i % FLOWS)).expect("flow stream");
    let event_type = if i < FLOWS {
        "FlowStarted"
    } else {
        "FlowContinued"
    };
    let new = NewEvent {
        event_id: Uuid::now_v7(),
        event_type: event_type.into(),
        schema_version: 1,
        payload: Payload::encode(&serde_json::json!({ "n": 1 })).expect("payload"),
        metadata: Metadata::new(),
    };
    (stream, new)
}

/// Appends one event at a time until told to stop, each failed append tried again with the
/// same event until it succeeds; records every acknowledgement.
async fn writer(store: PgStore, n: usize, flow: bool, log: Arc<Log>) {
    let mut i = 0u64;
    while !log.stop.load(Ordering::SeqCst) {
        let (order, new) = nth_event(n, flow, i);
        let new = vec![new];
        let after_failover = log.promoted.load(Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let result = loop {
            match store.append(&order, ExpectedVersion::Any, &new).await {
                Ok(result) => break result,
                Err(error) => {
                    assert!(
                        matches!(error, StoreError::Backend(_)),
                        "an append failed with {error:?}"
                    );
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "no append succeeded for {PATIENCE:?}: {error}"
                    );
                    lock(&log.failures).push(error.to_string());
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        lock(&log.acks).push(Ack {
            writer: n,
            event_id: new[0].event_id,
            position: result.last_position,
            after_failover,
        });
        log.count.fetch_add(1, Ordering::SeqCst);
        i += 1;
    }
}

/// A read model of every event delivered: one row per delivery, in delivery order.
struct Seen;

impl PgProjection for Seen {
    fn name(&self) -> &str {
        "seen"
    }

    async fn handle(&self, tx: &PgTransaction<'_>, event: &RecordedEvent) -> Result<(), BoxError> {
        let position = i64::try_from(event.position)?;
        tx.execute(
            "INSERT INTO seen (event_id, position) VALUES ($1, $2)",
            &[&event.event_id, &position],
        )
        .await?;
        Ok(())
    }
}

async fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "waited for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_and_a_projection_survive_a_failover() {
    let pair = ReplicatedPair::start(Replication::Synchronous)
        .await
        .expect("replicated pair");
    let schema = format!("failover_{}", Uuid::new_v4().simple());
    let config = PgConfig::default()
        .schema(&schema)
        .expect("schema")
        .pool_size(4);
    // ANCHOR: failover
    // `host=127.0.0.1,127.0.0.1 port=<primary>,<standby> ... target_session_attrs=read-write`
    let store = PgStore::connect_with(&pair.failover_url(), config)
        .await
        .expect("store on both hosts");
    // ANCHOR_END: failover
    store.migrate().await.expect("migrate");
    store
        .pool()
        .get()
        .await
        .expect("connection")
        .batch_execute(&format!(
            "CREATE TABLE \"{schema}\".seen (
                 delivery bigserial PRIMARY KEY,
                 event_id uuid NOT NULL,
                 position bigint NOT NULL)"
        ))
        .await
        .expect("read model table");

    let projections = ProjectionRunner::new(store.clone())
        .coordination(PgCoordination::new(&store))
        .options(
            RunnerOptions::new()
                .worker_id("failover")
                .lease_ttl(Duration::from_secs(2))
                .lease_retry(Duration::from_millis(100)),
        )
        .register(
            Transactional::new(&store, Seen),
            ProjectionOptions::new()
                .batch_size(10)
                .poll_interval(Duration::from_millis(50))
                .failure(
                    FailurePolicy::park_after(u32::MAX)
                        .backoff(Duration::from_millis(20), Duration::from_millis(500)),
                ),
        )
        .start();

    let reader = store
        .standby(&pair.standby_url())
        .await
        .expect("standby handle");
    assert!(!reader.standby_lag().await.expect("lag").promoted);

    let calls = Arc::new(Mutex::new(Vec::new()));
    let processes = ProcessManagerRunner::new(store.clone())
        .coordination(PgCoordination::new(&store))
        .options(
            RunnerOptions::new()
                .worker_id("failover")
                .lease_ttl(Duration::from_secs(2))
                .lease_retry(Duration::from_millis(100)),
        )
        .register_with(
            FlowProcess,
            CounterDispatcher::new(store.clone(), Arc::clone(&calls)),
            ProcessOptions::new()
                .poll_interval(Duration::from_millis(50))
                .dispatch_retry(
                    FailurePolicy::park_after(u32::MAX)
                        .backoff(Duration::from_millis(20), Duration::from_millis(500)),
                ),
        )
        .start();

    let log = Arc::new(Log::default());
    let writers: Vec<_> = (0..3)
        .map(|n| tokio::spawn(writer(store.clone(), n, n == 2, Arc::clone(&log))))
        .collect();
    wait_until("appends before the failover", || {
        log.count.load(Ordering::SeqCst) >= APPENDS_EACH_SIDE
    })
    .await;

    // The primary goes away mid-append, then its synchronous standby takes over.
    let before: Vec<Ack> = lock(&log.acks).clone();
    pair.stop_primary().await.expect("stop the primary");
    pair.promote_standby().await.expect("promote the standby");
    log.promoted.store(true, Ordering::SeqCst);
    let at_promotion = log.count.load(Ordering::SeqCst);
    wait_until("appends after the failover", || {
        lock(&log.acks).iter().filter(|a| a.after_failover).count() >= APPENDS_EACH_SIDE
    })
    .await;
    log.stop.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.await.expect("writer");
    }
    assert!(log.count.load(Ordering::SeqCst) > at_promotion);

    let acks = lock(&log.acks).clone();
    let head = acks.iter().map(|a| a.position).max().expect("acks");
    tokio::time::timeout(PATIENCE, processes.wait_for(FLOW, head))
        .await
        .expect("the process manager caught up on the new primary")
        .expect("running");
    processes.shutdown().await.expect("shutdown");
    // With the counters' events, appended by the process manager.
    let head = store.head_position().await.expect("head");
    tokio::time::timeout(PATIENCE, projections.wait_for("seen", head))
        .await
        .expect("the projection caught up on the new primary")
        .expect("running");
    projections.shutdown().await.expect("shutdown");

    // Each flow event incremented its counter once: none skipped, none applied twice.
    let counters = Repository::<Counter, _>::new(store.clone());
    let flow_events = acks.iter().filter(|a| a.writer == 2).count() as u64;
    let mut incremented = 0;
    for f in 0..FLOWS {
        let counter = counters.load(&format!("f{f}")).await.expect("counter");
        assert_eq!(counter.state.value, counter.version, "f{f}");
        incremented += counter.state.value;
    }
    assert_eq!(
        incremented, flow_events,
        "counter increments and flow events"
    );

    // Every acknowledged append is stored, once; nothing else is (besides the counters'
    // events, appended by the process manager).
    let stored = store
        .read_all(&ReadAll::after(0).limit(100_000))
        .await
        .expect("read all");
    let stored_ids: Vec<Uuid> = stored
        .iter()
        .filter(|e| e.stream_id.category() != "counter")
        .map(|e| e.event_id)
        .collect();
    let distinct: HashSet<Uuid> = stored_ids.iter().copied().collect();
    assert_eq!(distinct.len(), stored_ids.len(), "an event stored twice");
    let acked: HashSet<Uuid> = acks.iter().map(|a| a.event_id).collect();
    assert_eq!(acked.len(), acks.len());
    assert_eq!(
        distinct, acked,
        "the events table and the acknowledged appends"
    );
    let by_id: HashMap<Uuid, u64> = stored.iter().map(|e| (e.event_id, e.position)).collect();
    for ack in &acks {
        assert_eq!(by_id[&ack.event_id], ack.position, "{ack:?}");
    }

    // The standby handle reads the promoted server, which reports no lag.
    assert!(reader.standby_lag().await.expect("lag").promoted);
    assert_eq!(
        reader
            .read_all(&ReadAll::after(0).limit(100_000))
            .await
            .expect("read all on the promoted standby"),
        stored
    );

    // Positions after the failover are above every earlier one.
    let last_before = before.iter().map(|a| a.position).max().expect("before");
    let first_after = acks
        .iter()
        .filter(|a| a.after_failover)
        .map(|a| a.position)
        .min()
        .expect("after");
    assert!(
        first_after > last_before,
        "position {first_after} after the failover, {last_before} before"
    );

    // Each writer's appends, one after the other, have increasing positions throughout.
    for n in 0..3 {
        let positions: Vec<u64> = acks
            .iter()
            .filter(|a| a.writer == n)
            .map(|a| a.position)
            .collect();
        assert!(
            positions.is_sorted_by(|a, b| a < b),
            "writer {n}: {positions:?}"
        );
    }

    // The read model holds every event once, delivered in global order.
    let client = store.pool().get().await.expect("connection");
    let rows = client
        .query(
            &format!("SELECT event_id, position FROM \"{schema}\".seen ORDER BY delivery"),
            &[],
        )
        .await
        .expect("read model");
    let delivered: Vec<(Uuid, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let expected: Vec<(Uuid, i64)> = stored
        .iter()
        .map(|e| (e.event_id, i64::try_from(e.position).expect("position")))
        .collect();
    assert_eq!(delivered, expected, "the read model and the events table");
    // Dropping the pair stops both servers and removes their directories.
    drop(client);
    drop((store, reader));
    let directories: Vec<std::path::PathBuf> =
        pair.directories().iter().map(|d| d.to_path_buf()).collect();
    assert!(directories.iter().all(|d| d.is_dir()));
    drop(pair);
    for directory in &directories {
        assert!(!directory.exists(), "{} left behind", directory.display());
    }

    let failures = lock(&log.failures).len();
    assert!(
        failures > 0,
        "no append was in flight or attempted during the failover"
    );
    println!(
        "{} appends, {} before the failover, {failures} failed and retried, {} dispatches",
        acks.len(),
        before.len(),
        lock(&calls).len()
    );
}
