//! Benchmarks: factum-postgres beside a raw-SQL baseline on the same schema, in the same run.
//!
//! `cargo bench -p factum-postgres` (uses `DATABASE_URL`, or a throwaway cluster).

#![allow(missing_docs, clippy::unwrap_used, reason = "benchmark program")]

use std::time::{Duration, Instant};

use factum::store::{DecodeError, Decoded, NewEvent, Payload, ReadAll, Snapshot};
use factum::{
    Aggregate, CommandSet, Event, EventSet, EventStore, ExpectedVersion, Metadata, Repository,
    SnapshotPolicy, StreamId,
};
mod common;

use common::{
    baseline_store, describe_server, median, print_header, rate, report, sql, throughput,
    wanted_cases,
};
use factum_postgres::testing::{TestDatabase, fresh_store_with};
use factum_postgres::{PgConfig, PgStore};
use serde::{Deserialize, Serialize};
use tokio_postgres::types::Json;
use uuid::Uuid;

/// How long each timed append run lasts.
const RUN: Duration = Duration::from_millis(700);
/// Timed runs per case and side, alternating sides; the medians are reported (the machine
/// is shared, so each factum run is paired with a baseline run next to it in time).
const ROUNDS: usize = 7;
const AGGREGATE_EVENTS: u64 = 10_000;
const SNAPSHOT_AT: u64 = 9_900;
const READ_ALL_EVENTS: u64 = 105_000;

// --- The aggregate -------------------------------------------------------------------

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Incremented {
    by: u64,
}

impl Event for Incremented {
    const NAME: &'static str = "Incremented";
    const VERSION: u32 = 1;
}

#[derive(Clone, Debug)]
enum CounterEvent {
    Incremented(Incremented),
}

impl EventSet for CounterEvent {
    const EVENT_TYPES: &'static [&'static str] = &[Incremented::NAME];

    fn event_type(&self) -> &'static str {
        Incremented::NAME
    }

    fn schema_version(&self) -> u32 {
        Incremented::VERSION
    }

    fn encode(&self) -> Result<Payload, serde_json::Error> {
        match self {
            CounterEvent::Incremented(e) => Payload::encode(e),
        }
    }

    fn decode(
        event_type: &str,
        schema_version: u32,
        payload: &Payload,
    ) -> Result<Decoded<Self>, DecodeError> {
        match event_type {
            Incremented::NAME => {
                Ok(Incremented::decode_stored(schema_version, payload)?
                    .map(CounterEvent::Incremented))
            }
            _ => Err(DecodeError::UnknownType {
                event_type: event_type.to_owned(),
            }),
        }
    }
}

#[derive(Clone, Debug)]
struct Increment;

impl CommandSet for Increment {
    fn command_name(&self) -> &'static str {
        "Increment"
    }

    fn command_version(&self) -> u32 {
        1
    }
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Counter {
    value: u64,
}

impl Aggregate for Counter {
    const CATEGORY: &'static str = "counter";
    type Event = CounterEvent;
    type Command = Increment;
    type Error = Never;

    fn handle(&self, _: Increment) -> Result<Vec<CounterEvent>, Never> {
        Ok(vec![CounterEvent::Incremented(Incremented { by: 1 })])
    }

    fn apply(&mut self, event: &CounterEvent) {
        match event {
            CounterEvent::Incremented(e) => self.value += e.by,
        }
    }
}

/// The same counter, with snapshots.
#[derive(Debug, Default, Serialize, Deserialize)]
struct SnapCounter {
    value: u64,
}

impl Aggregate for SnapCounter {
    const CATEGORY: &'static str = "counter";
    const SNAPSHOT: SnapshotPolicy = SnapshotPolicy::Every(1000);
    type Event = CounterEvent;
    type Command = Increment;
    type Error = Never;

    fn handle(&self, _: Increment) -> Result<Vec<CounterEvent>, Never> {
        Ok(vec![CounterEvent::Incremented(Incremented { by: 1 })])
    }

    fn apply(&mut self, event: &CounterEvent) {
        match event {
            CounterEvent::Incremented(e) => self.value += e.by,
        }
    }

    fn encode_state(&self) -> Option<Result<Payload, serde_json::Error>> {
        Some(Payload::encode(self))
    }

    fn decode_state(state: &Payload) -> Option<Result<Self, serde_json::Error>> {
        Some(state.decode())
    }
}

// --- Helpers ---------------------------------------------------------------------------

fn new_event(by: u64) -> NewEvent {
    event_with(Metadata::new().actor("bench"), by)
}

fn event_with(metadata: Metadata, by: u64) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: Incremented::NAME.into(),
        schema_version: 1,
        payload: Payload::encode(&Incremented { by }).unwrap(),
        metadata,
    }
}

/// Which appends a case measures.
#[derive(Clone, Copy, PartialEq)]
enum Appends {
    /// Events without a command id (direct appends, commands executed without one).
    Plain,
    /// Events of a command with a caller-given command id, which the store claims in its
    /// command log; the baseline also inserts the command-log row.
    Keyed,
}

impl Appends {
    /// The metadata of one append's events, and its command id.
    fn metadata(self) -> (Metadata, Option<Uuid>) {
        let metadata = Metadata::new().actor("bench");
        match self {
            Appends::Plain => (metadata, None),
            Appends::Keyed => {
                let command_id = Uuid::now_v7();
                (metadata.command_id(command_id), Some(command_id))
            }
        }
    }

    /// One append's `n` events.
    fn events(self, n: u64) -> Vec<NewEvent> {
        let (metadata, _) = self.metadata();
        (0..n).map(|by| event_with(metadata.clone(), by)).collect()
    }

    fn label(self) -> &'static str {
        match self {
            Appends::Plain => "",
            Appends::Keyed => " + command id",
        }
    }

    /// The raw-SQL baseline of this kind: `plain`, or `claimed` (which also inserts the
    /// command-log row).
    fn baseline(self, plain: &'static str, claimed: &'static str) -> &'static str {
        match self {
            Appends::Plain => plain,
            Appends::Keyed => claimed,
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Appends::Plain => "p",
            Appends::Keyed => "k",
        }
    }
}

/// The baseline's metadata text and command id for one append: the same text every time for
/// plain appends, a fresh command id serialized into it for keyed ones.
fn raw_metadata(appends: Appends, plain: String) -> (String, Option<Uuid>) {
    match appends {
        Appends::Plain => (plain, None),
        Appends::Keyed => {
            let (metadata, command_id) = appends.metadata();
            (serde_json::to_string(&metadata).unwrap(), command_id)
        }
    }
}

// --- Cases -----------------------------------------------------------------------------

async fn append_one(store: &PgStore, base: &PgStore, appends: Appends, tasks: u64) {
    let (factum_runs, raw_runs) = append_one_runs(store, base, appends, tasks, "", ROUNDS).await;
    report(
        &format!("append 1 event/command{}, {tasks} tasks", appends.label()),
        "appends/s",
        &factum_runs,
        &raw_runs,
        Some(0.7),
    );
}

/// Runs of single-event appends, each side `rounds` times: (factum, raw SQL). `tag` keeps
/// the streams apart from other calls'.
async fn append_one_runs(
    store: &PgStore,
    base: &PgStore,
    appends: Appends,
    tasks: u64,
    tag: &str,
    rounds: usize,
) -> (Vec<f64>, Vec<f64>) {
    let insert = sql(
        appends.baseline(
            include_str!("sql/baseline_insert.sql"),
            include_str!("sql/baseline_insert_claimed.sql"),
        ),
        base,
    );
    let prefix = format!("{tag}{}", appends.prefix());
    let plain_metadata = serde_json::to_string(&Appends::Plain.metadata().0).unwrap();
    let mut raw_runs = Vec::new();
    let mut factum_runs = Vec::new();
    for r in 0..rounds {
        let (pool, insert, plain) = (base.pool().clone(), insert.clone(), plain_metadata.clone());
        let raw_prefix = prefix.clone();
        raw_runs.push(
            throughput(tasks, RUN, move |task, i| {
                let (pool, insert, plain) = (pool.clone(), insert.clone(), plain.clone());
                let prefix = raw_prefix.clone();
                async move {
                    let client = pool.get().await.unwrap();
                    let statement = client.prepare_cached(&insert).await.unwrap();
                    let (metadata, command_id) = raw_metadata(appends, plain);
                    let event = new_event(1);
                    let payload = event.payload.as_str();
                    let stream = format!("bench-{prefix}{r}-{tasks}-{task}-{i}");
                    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![
                        &event.event_id,
                        &stream,
                        &1i64,
                        &event.event_type,
                        &1i32,
                        &payload,
                        &metadata,
                    ];
                    if let Some(command_id) = &command_id {
                        params.push(command_id);
                    }
                    client.execute(&statement, &params).await.unwrap();
                }
            })
            .await,
        );
        let (store, factum_prefix) = (store.clone(), prefix.clone());
        factum_runs.push(
            throughput(tasks, RUN, move |task, i| {
                let (store, prefix) = (store.clone(), factum_prefix.clone());
                async move {
                    let stream =
                        StreamId::new("bench", &format!("{prefix}{r}-{tasks}-{task}-{i}")).unwrap();
                    store
                        .append(&stream, ExpectedVersion::NoStream, &appends.events(1))
                        .await
                        .unwrap();
                }
            })
            .await,
        );
    }
    (factum_runs, raw_runs)
}

async fn append_hundred(store: &PgStore, base: &PgStore, appends: Appends) {
    let insert = sql(
        appends.baseline(
            include_str!("sql/baseline_insert_many.sql"),
            include_str!("sql/baseline_insert_many_claimed.sql"),
        ),
        base,
    );
    let prefix = appends.prefix();
    let plain_metadata = serde_json::to_string(&Appends::Plain.metadata().0).unwrap();
    let mut raw_runs = Vec::new();
    let mut factum_runs = Vec::new();
    for r in 0..ROUNDS {
        let (pool, insert, plain) = (base.pool().clone(), insert.clone(), plain_metadata.clone());
        raw_runs.push(
            throughput(1, RUN, move |_, i| {
                let (pool, insert, plain) = (pool.clone(), insert.clone(), plain.clone());
                async move {
                    let client = pool.get().await.unwrap();
                    let statement = client.prepare_cached(&insert).await.unwrap();
                    let (metadata, command_id) = raw_metadata(appends, plain);
                    let events: Vec<NewEvent> = (0..100).map(new_event).collect();
                    let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
                    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
                    let versions: Vec<i32> = vec![1; 100];
                    let payloads: Vec<&str> = events.iter().map(|e| e.payload.as_str()).collect();
                    let metadata: Vec<&str> = vec![metadata.as_str(); 100];
                    let stream = format!("batch-{prefix}{r}-{i}");
                    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                        vec![&stream, &ids, &types, &versions, &payloads, &metadata];
                    if let Some(command_id) = &command_id {
                        params.push(command_id);
                    }
                    client.execute(&statement, &params).await.unwrap();
                }
            })
            .await
                * 100.0,
        );
        let store = store.clone();
        factum_runs.push(
            throughput(1, RUN, move |_, i| {
                let store = store.clone();
                async move {
                    let stream = StreamId::new("batch", &format!("{prefix}{r}-{i}")).unwrap();
                    store
                        .append(&stream, ExpectedVersion::NoStream, &appends.events(100))
                        .await
                        .unwrap();
                }
            })
            .await
                * 100.0,
        );
    }
    report(
        &format!("append 100 events/command{}, 1 task", appends.label()),
        "events/s",
        &factum_runs,
        &raw_runs,
        Some(0.7),
    );
}

async fn seed(store: &PgStore) {
    let big = StreamId::new("counter", "big").unwrap();
    for chunk in 0..AGGREGATE_EVENTS / 100 {
        let events: Vec<NewEvent> = (0..100).map(|_| new_event(1)).collect();
        store
            .append(&big, ExpectedVersion::Exact(chunk * 100), &events)
            .await
            .unwrap();
    }
    let state = Payload::encode(&SnapCounter { value: SNAPSHOT_AT }).unwrap();
    store
        .save_snapshot(&Snapshot {
            stream_id: big,
            version: SNAPSHOT_AT,
            schema_version: SnapCounter::STATE_VERSION,
            state,
            taken_at: chrono::Utc::now(),
        })
        .await
        .unwrap();
    let rest = (READ_ALL_EVENTS - AGGREGATE_EVENTS) / 1000;
    let tasks: Vec<_> = (0..4)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in (t..rest).step_by(4) {
                    let stream = StreamId::new("order", &format!("o{i}")).unwrap();
                    let events: Vec<NewEvent> = (0..1000).map(new_event).collect();
                    store
                        .append(&stream, ExpectedVersion::NoStream, &events)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

async fn load(store: &PgStore) {
    let load_sql = sql(include_str!("sql/baseline_load.sql"), store);
    let snapshot_sql = sql(include_str!("sql/baseline_snapshot.sql"), store);
    let stream = "counter-big";

    let raw_full = |from: i64| {
        let (pool, load_sql) = (store.pool().clone(), load_sql.clone());
        async move {
            let client = pool.get().await.unwrap();
            let statement = client.prepare_cached(&load_sql).await.unwrap();
            let rows = client.query(&statement, &[&stream, &from]).await.unwrap();
            let mut state = Counter::default();
            let mut version = 0i64;
            for row in &rows {
                // What a hand-written loader needs: the version, and the type to decode by.
                version = row.get(0);
                let (event_type, schema_version): (&str, i32) = (row.get(1), row.get(2));
                assert!(event_type == Incremented::NAME && schema_version == 1);
                let Json(event): Json<Incremented> = row.get(3);
                state.apply(&CounterEvent::Incremented(event));
            }
            (state, version)
        }
    };
    let repo = Repository::<Counter, PgStore>::new(store.clone());
    let snap_repo = Repository::<SnapCounter, PgStore>::new(store.clone());
    let (mut raw, mut fac, mut raw_snap, mut fac_snap) = (vec![], vec![], vec![], vec![]);
    for _ in 0..ROUNDS {
        raw.push(
            rate(10, || async {
                let (state, version) = raw_full(0).await;
                assert_eq!(
                    (state.value, version),
                    (AGGREGATE_EVENTS, AGGREGATE_EVENTS as i64)
                );
            })
            .await,
        );
        fac.push(
            rate(10, || async {
                assert_eq!(
                    repo.load("big").await.unwrap().state.value,
                    AGGREGATE_EVENTS
                );
            })
            .await,
        );
        raw_snap.push(
            rate(200, || async {
                let client = store.pool().get().await.unwrap();
                let statement = client.prepare_cached(&snapshot_sql).await.unwrap();
                let row = client
                    .query_one(&statement, &[&stream, &1i32])
                    .await
                    .unwrap();
                let version: i64 = row.get(0);
                let Json(mut state): Json<Counter> = row.get(1);
                drop(client);
                let (tail, _) = raw_full(version).await;
                state.value += tail.value;
                assert_eq!(state.value, AGGREGATE_EVENTS);
            })
            .await,
        );
        fac_snap.push(
            rate(200, || async {
                let loaded = snap_repo.load("big").await.unwrap();
                assert_eq!(loaded.state.value, AGGREGATE_EVENTS);
                assert_eq!(loaded.version, AGGREGATE_EVENTS);
            })
            .await,
        );
    }
    report(
        "load 10,000-event aggregate, no snapshot",
        "loads/s",
        &fac,
        &raw,
        Some(0.8),
    );
    report(
        "load 10,000-event aggregate, snapshot + 100",
        "loads/s",
        &fac_snap,
        &raw_snap,
        Some(0.8),
    );
}

#[allow(dead_code, reason = "decoded to measure decoding, not read")]
struct RawEvent {
    position: i64,
    event_id: Uuid,
    stream_id: String,
    stream_version: i64,
    event_type: String,
    schema_version: i32,
    payload: serde_json::Value,
    metadata: Metadata,
    recorded_at: chrono::DateTime<chrono::Utc>,
}

async fn read_all(store: &PgStore) {
    let read_sql = sql(include_str!("sql/baseline_read_all.sql"), store);
    let (mut raw, mut fac) = (vec![], vec![]);
    for _ in 0..ROUNDS {
        let start = Instant::now();
        let client = store.pool().get().await.unwrap();
        let statement = client.prepare_cached(&read_sql).await.unwrap();
        let (mut after, mut count) = (0i64, 0u64);
        loop {
            let rows = client.query(&statement, &[&after, &1000i64]).await.unwrap();
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                let Json(metadata): Json<Metadata> = row.get(7);
                let event = RawEvent {
                    position: row.get(0),
                    event_id: row.get(1),
                    stream_id: row.get(2),
                    stream_version: row.get(3),
                    event_type: row.get(4),
                    schema_version: row.get(5),
                    payload: row.get(6),
                    metadata,
                    recorded_at: row.get(8),
                };
                after = event.position;
                count += 1;
            }
        }
        drop(client);
        assert!(count >= READ_ALL_EVENTS);
        raw.push(count as f64 / start.elapsed().as_secs_f64());

        let start = Instant::now();
        let (mut after, mut count) = (0u64, 0u64);
        loop {
            let batch = store
                .read_all(&ReadAll::after(after).limit(1000))
                .await
                .unwrap();
            let Some(last) = batch.last() else { break };
            after = last.position;
            count += batch.len() as u64;
        }
        assert!(count >= READ_ALL_EVENTS);
        fac.push(count as f64 / start.elapsed().as_secs_f64());
    }
    report(
        "read all from position 0 (105,000 events)",
        "events/s",
        &fac,
        &raw,
        None,
    );
    let target = if median(&fac) >= 200_000.0 {
        "meets"
    } else {
        "BELOW"
    };
    println!("{:<44} read-all {target} the 200,000 events/s target", "");
}

async fn run() {
    let url = TestDatabase::get()
        .await
        .expect("a database for the benchmarks");
    let config = PgConfig::default().pool_size(40);
    let store = fresh_store_with(config.clone()).await.unwrap();
    let base = baseline_store(config.clone()).await;

    describe_server(&store).await;
    let client = store.pool().get().await.unwrap();
    drop(client);
    let _ = url;
    print_header();
    let wanted = wanted_cases();
    // Untimed: a new cluster first creates WAL segments and connections, which would slow
    // whichever case runs first.
    if wanted("append") || wanted("claim") {
        append_one_runs(&store, &base, Appends::Plain, 8, "w", 2).await;
    }
    let mut cases = Vec::new();
    if wanted("append") {
        cases.push(Appends::Plain);
    }
    if wanted("append") || wanted("claim") {
        cases.push(Appends::Keyed);
    }
    for appends in cases {
        for tasks in [1, 8, 32] {
            append_one(&store, &base, appends, tasks).await;
        }
        append_hundred(&store, &base, appends).await;
    }
    if !wanted("load") && !wanted("read") {
        return;
    }

    let reads = fresh_store_with(config).await.unwrap();
    let start = Instant::now();
    seed(&reads).await;
    println!(
        "{:<44} seeded {} events in {:.1} s",
        "",
        READ_ALL_EVENTS,
        start.elapsed().as_secs_f64()
    );
    if wanted("load") {
        load(&reads).await;
    }
    if wanted("read") {
        read_all(&reads).await;
    }
}

fn main() {
    common::block_on(run());
}
