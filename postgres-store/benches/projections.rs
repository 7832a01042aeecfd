//! Projection catch-up over 1,000,000 events, beside raw-SQL baselines on the same schema, in
//! the same run.
//!
//! `cargo bench -p factum-postgres --bench projections` (uses `DATABASE_URL`, or a throwaway
//! cluster; `BENCH_EVENTS` changes the number of events).
//!
//! - **Transactional**: a `Transactional<PgProjection>` counting events per stream with an
//!   upsert, one transaction per batch of 1,000 events with the checkpoint in it. Raw: a loop
//!   of `SELECT … WHERE position > $1 ORDER BY position LIMIT 1000`, then the same upserts and
//!   a checkpoint upsert in one transaction per batch.
//!   The handler only implements `PgProjection::handle`, which runs its SQL text (the table
//!   named plainly) through the `PgTransaction`, prepared once per batch. Over the first
//!   30,000 events, it is measured again beside the same read model overriding `handle_batch`
//!   to prepare the statement itself, and calling `tokio_postgres::Transaction::execute` with
//!   the text, which prepares it on every call.
//! - **No-op**: a projection whose handler does nothing; raw: the same loop of reads, with a
//!   checkpoint saved after each batch.
//! - **Per-event transactions** (what the transactional case cost before batch
//!   transactions), over the first 6,000 events: `per_event_transactions()` against a raw
//!   loop committing the upsert and the checkpoint once per event.
//!
//! Short cases alternate factum and raw runs three times and report the medians and the
//! median of the per-pair ratios; the 1,000,000-event transactional case runs once per side.

#![allow(missing_docs, clippy::unwrap_used, reason = "benchmark program")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use factum::projection::{ProjectionOptions, ProjectionRunner, RunnerOptions};
use factum::store::{NewEvent, Payload};
use factum::{
    BoxError, EventStore, ExpectedVersion, Metadata, Projection, RecordedEvent, StreamId,
};
mod common;

use common::{describe_server, median, sql};
use factum_postgres::testing::{TestDatabase, fresh_store_with};
use factum_postgres::{
    PgConfig, PgCoordination, PgProjection, PgStore, PgTransaction, Transactional,
};
use tokio_postgres::types::Json;
use uuid::Uuid;

const EVENTS_PER_APPEND: u64 = 1_000;
const BATCH: usize = 1_000;
const PER_EVENT_EVENTS: u64 = 6_000;
const SIMPLE_EVENTS: u64 = 30_000;
const SUBSET_ROUNDS: usize = 3;
const NOOP_ROUNDS: usize = 3;

fn upsert_sql(store: &PgStore, table: &str) -> String {
    sql(include_str!("sql/count_upsert.sql"), store).replace("__COUNTS__", table)
}

/// Appends `total` events, 1,000 per append (one stream each), from two tasks.
async fn seed(store: &PgStore, total: u64) {
    let appends = total.div_ceil(EVENTS_PER_APPEND);
    let tasks: Vec<_> = (0..2)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in (t..appends).step_by(2) {
                    let stream = StreamId::new("order", &format!("o{i}")).unwrap();
                    let n = EVENTS_PER_APPEND.min(total - i * EVENTS_PER_APPEND);
                    let events: Vec<NewEvent> = (0..n)
                        .map(|by| NewEvent {
                            event_id: Uuid::now_v7(),
                            event_type: "Incremented".into(),
                            schema_version: 1,
                            payload: Payload::encode(&serde_json::json!({ "by": by })).unwrap(),
                            metadata: Metadata::new().actor("bench"),
                        })
                        .collect();
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

// --- factum's side ---------------------------------------------------------------------

/// factum's upsert, naming its table plainly.
const UPSERT: &str = include_str!("sql/count_upsert_plain.sql");

/// How the counting read model runs its statement.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// SQL text per event through `PgTransaction::execute`, which prepares it once per
    /// transaction.
    Text,
    /// SQL text per event through `tokio_postgres::Transaction::execute`, which prepares it on
    /// every call.
    Unprepared,
    /// `PgProjection::handle_batch` overridden to prepare the statement itself, once per batch.
    BatchOverride,
}

/// A read model counting events per stream, one statement per event.
struct Counts {
    name: String,
    mode: Mode,
}

impl PgProjection for Counts {
    fn name(&self) -> &str {
        &self.name
    }

    fn event_types(&self) -> Vec<String> {
        vec!["Incremented".to_owned()]
    }

    async fn handle(&self, tx: &PgTransaction<'_>, event: &RecordedEvent) -> Result<(), BoxError> {
        let stream = event.stream_id.as_str();
        if self.mode == Mode::Unprepared {
            tx.transaction().execute(UPSERT, &[&stream]).await?;
        } else {
            tx.execute(UPSERT, &[&stream]).await?;
        }
        Ok(())
    }

    async fn handle_batch(
        &self,
        tx: &PgTransaction<'_>,
        events: &[&RecordedEvent],
    ) -> Result<(), BoxError> {
        if self.mode != Mode::BatchOverride {
            for event in events {
                self.handle(tx, event).await?;
            }
            return Ok(());
        }
        let statement = tx.prepare(UPSERT).await?;
        for event in events {
            tx.transaction()
                .execute(&statement, &[&event.stream_id.as_str()])
                .await?;
        }
        Ok(())
    }
}

/// A handler that does nothing (but count).
struct NoOp {
    name: String,
    seen: AtomicU64,
}

impl Projection for NoOp {
    fn name(&self) -> &str {
        &self.name
    }

    fn event_types(&self) -> Vec<String> {
        vec!["Incremented".to_owned()]
    }

    async fn handle(&self, _event: &RecordedEvent) -> Result<(), BoxError> {
        self.seen.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Runs `projection` from position 0 until it has checkpointed `until`; returns the seconds
/// it took.
async fn catch_up<P: Projection>(store: &PgStore, projection: P, until: u64) -> f64 {
    let name = projection.name().to_owned();
    let coordination = PgCoordination::new(store);
    let start = Instant::now();
    let running = ProjectionRunner::new(store.clone())
        .coordination(coordination)
        .options(RunnerOptions::new().worker_id("bench"))
        .register(
            projection,
            ProjectionOptions::new()
                .batch_size(BATCH)
                .poll_interval(Duration::from_millis(20)),
        )
        .start();
    running.wait_for(&name, until).await.unwrap();
    let seconds = start.elapsed().as_secs_f64();
    running.shutdown().await.unwrap();
    seconds
}

// --- raw SQL's side ------------------------------------------------------------------------

#[allow(
    dead_code,
    reason = "decoded as a hand-written projector would, then dropped"
)]
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

#[derive(Clone, Copy, PartialEq, Eq)]
enum Commit {
    /// No read model: save the checkpoint after each batch.
    Nothing,
    /// Upserts and the checkpoint in one transaction per batch.
    PerBatch,
    /// Upsert and checkpoint in one transaction per event.
    PerEvent,
}

/// Reads every event up to `until` in batches and handles them as `commit` says; returns the
/// seconds it took.
async fn raw_catch_up(store: &PgStore, name: &str, until: u64, commit: Commit) -> f64 {
    // On a worker thread of the runtime, as factum's partitions run (not on the thread that
    // blocks on the main future, whose wake-ups cost more).
    let (store, name) = (store.clone(), name.to_owned());
    tokio::spawn(async move { raw_loop(&store, &name, until, commit).await })
        .await
        .unwrap()
}

async fn raw_loop(store: &PgStore, name: &str, until: u64, commit: Commit) -> f64 {
    let read_sql = sql(include_str!("sql/baseline_read_all.sql"), store);
    let upsert = upsert_sql(store, "counts_raw");
    let checkpoint = sql(include_str!("sql/raw_checkpoint_save.sql"), store);
    let until = i64::try_from(until).unwrap();
    let start = Instant::now();
    let mut client = store.pool().get().await.unwrap();
    let read = client.prepare_cached(&read_sql).await.unwrap();
    let mut after = 0i64;
    while after < until {
        let rows = client
            .query(&read, &[&after, &i64::try_from(BATCH).unwrap()])
            .await
            .unwrap();
        if rows.is_empty() {
            break;
        }
        let mut events = Vec::with_capacity(rows.len());
        for row in &rows {
            let position: i64 = row.get(0);
            if position > until {
                break;
            }
            let Json(metadata): Json<Metadata> = row.get(7);
            events.push(RawEvent {
                position,
                event_id: row.get(1),
                stream_id: row.get(2),
                stream_version: row.get(3),
                event_type: row.get(4),
                schema_version: row.get(5),
                payload: row.get(6),
                metadata,
                recorded_at: row.get(8),
            });
        }
        let Some(last) = events.last().map(|e| e.position) else {
            break;
        };
        match commit {
            Commit::Nothing => {
                let save = client.prepare_cached(&checkpoint).await.unwrap();
                client.execute(&save, &[&name, &last]).await.unwrap();
            }
            Commit::PerBatch => {
                let tx = client.transaction().await.unwrap();
                let statement = tx.prepare(&upsert).await.unwrap();
                for event in &events {
                    tx.execute(&statement, &[&event.stream_id]).await.unwrap();
                }
                let save = tx.prepare_cached(&checkpoint).await.unwrap();
                tx.execute(&save, &[&name, &last]).await.unwrap();
                tx.commit().await.unwrap();
            }
            Commit::PerEvent => {
                for event in &events {
                    let tx = client.transaction().await.unwrap();
                    let statement = tx.prepare_cached(&upsert).await.unwrap();
                    tx.execute(&statement, &[&event.stream_id]).await.unwrap();
                    let save = tx.prepare_cached(&checkpoint).await.unwrap();
                    tx.execute(&save, &[&name, &event.position]).await.unwrap();
                    tx.commit().await.unwrap();
                }
            }
        }
        after = last;
    }
    start.elapsed().as_secs_f64()
}

// --- the run -------------------------------------------------------------------------------

async fn counted(store: &PgStore, table: &str) -> u64 {
    let client = store.pool().get().await.unwrap();
    let total: i64 = client
        .query_one(
            &sql(
                &format!("SELECT coalesce(sum(events), 0)::bigint FROM __SCHEMA__.{table}"),
                store,
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    u64::try_from(total).unwrap()
}

/// The position of the `n`-th event.
async fn position_of(store: &PgStore, n: u64) -> u64 {
    let client = store.pool().get().await.unwrap();
    let position: i64 = client
        .query_one(
            &sql(
                "SELECT position FROM __SCHEMA__.events ORDER BY position OFFSET $1 LIMIT 1",
                store,
            ),
            &[&i64::try_from(n - 1).unwrap()],
        )
        .await
        .unwrap()
        .get(0);
    u64::try_from(position).unwrap()
}

/// Writes the dirty buffers out before a long timed run, so that a checkpoint started by an
/// earlier run's WAL (the seeding writes about 1 GB) does not fall into the next one. Needs
/// a superuser or `pg_checkpoint`; skipped without.
async fn settle(store: &PgStore) {
    let client = store.pool().get().await.unwrap();
    if let Err(error) = client.batch_execute("CHECKPOINT").await {
        println!("(no CHECKPOINT between runs: {error})");
    }
}

async fn truncate(store: &PgStore) {
    store
        .pool()
        .get()
        .await
        .unwrap()
        .batch_execute(&sql(
            "TRUNCATE __SCHEMA__.counts_factum, __SCHEMA__.counts_raw, __SCHEMA__.raw_checkpoint",
            store,
        ))
        .await
        .unwrap();
}

fn report(case: &str, events: u64, factum: &[f64], raw: &[f64]) {
    let rate = |seconds: f64| events as f64 / seconds;
    let mut ratios: Vec<f64> = factum
        .iter()
        .zip(raw)
        .map(|(f, r)| rate(*f) / rate(*r))
        .collect();
    ratios.sort_by(f64::total_cmp);
    println!(
        "{case:<48} {:>10.0} {:>10.0} events/s {:>6.3}x  ({} events, {} run(s) each, factum {:.1} s)",
        rate(median(factum)),
        rate(median(raw)),
        median(&ratios),
        events,
        factum.len(),
        median(factum),
    );
}

async fn run() {
    let total: u64 = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let _ = TestDatabase::get()
        .await
        .expect("a database for the benchmarks");
    let store = fresh_store_with(PgConfig::default()).await.unwrap();
    describe_server(&store).await;
    let client = store.pool().get().await.unwrap();
    client
        .batch_execute(&sql(include_str!("sql/projections_setup.sql"), &store))
        .await
        .unwrap();
    drop(client);

    let start = Instant::now();
    seed(&store, total).await;
    let head = store.head_position().await.unwrap();
    let client = store.pool().get().await.unwrap();
    client
        .batch_execute(&sql("VACUUM ANALYZE __SCHEMA__.events", &store))
        .await
        .unwrap();
    drop(client);
    let per_event_until = position_of(&store, PER_EVENT_EVENTS.min(total)).await;
    settle(&store).await;
    println!(
        "seeded {total} events ({} per append) in {:.1} s; batches of {BATCH}",
        EVENTS_PER_APPEND,
        start.elapsed().as_secs_f64()
    );
    println!();
    println!(
        "{:<48} {:>10} {:>10} {:<8} {:>7}",
        "catch-up from position 0", "factum", "raw SQL", "unit", "ratio"
    );

    // No-op handler.
    let (mut factum, mut raw) = (vec![], vec![]);
    for round in 0..NOOP_ROUNDS {
        let noop = Arc::new(NoOp {
            name: format!("noop_{round}"),
            seen: AtomicU64::new(0),
        });
        factum.push(catch_up(&store, Arc::clone(&noop), head).await);
        assert_eq!(noop.seen.load(Ordering::Relaxed), total);
        raw.push(raw_catch_up(&store, &format!("noop_{round}"), head, Commit::Nothing).await);
    }
    report("no-op handler", total, &factum, &raw);

    // Transactional read model, one transaction per batch.
    let counts = |name: &str, mode| Counts {
        name: name.to_owned(),
        mode,
    };
    truncate(&store).await;
    settle(&store).await;
    let r = raw_catch_up(&store, "counts_batched", head, Commit::PerBatch).await;
    assert_eq!(counted(&store, "counts_raw").await, total);
    settle(&store).await;
    let f = catch_up(
        &store,
        Transactional::new(&store, counts("counts_batched", Mode::Text)),
        head,
    )
    .await;
    assert_eq!(counted(&store, "counts_factum").await, total);
    report("transactional upsert, tx per batch", total, &[f], &[r]);

    // The same over fewer events, in alternating rounds: the SQL text per event again, the
    // statement prepared by a `handle_batch` override, and the text prepared on every call;
    // then one transaction per event (before batch transactions).
    let subset = SIMPLE_EVENTS.min(total);
    let until = position_of(&store, subset).await;
    for (mode, case) in [
        (Mode::Text, "transactional upsert, tx per batch, SQL text"),
        (Mode::BatchOverride, "same, handle_batch prepares"),
        (Mode::Unprepared, "same, text prepared per call"),
    ] {
        let (mut factum, mut raw) = (vec![], vec![]);
        for round in 0..SUBSET_ROUNDS {
            truncate(&store).await;
            let name = format!("counts_subset_{}_{round}", mode as u8);
            factum.push(
                catch_up(
                    &store,
                    Transactional::new(&store, counts(&name, mode)),
                    until,
                )
                .await,
            );
            raw.push(raw_catch_up(&store, &name, until, Commit::PerBatch).await);
            assert_eq!(counted(&store, "counts_raw").await, subset);
            assert_eq!(counted(&store, "counts_factum").await, subset);
        }
        report(case, subset, &factum, &raw);
    }

    let subset = PER_EVENT_EVENTS.min(total);
    let (mut factum, mut raw) = (vec![], vec![]);
    for round in 0..SUBSET_ROUNDS {
        truncate(&store).await;
        let name = format!("counts_per_event_{round}");
        factum.push(
            catch_up(
                &store,
                Transactional::new(&store, counts(&name, Mode::Text)).per_event_transactions(),
                per_event_until,
            )
            .await,
        );
        raw.push(raw_catch_up(&store, &name, per_event_until, Commit::PerEvent).await);
        assert_eq!(counted(&store, "counts_raw").await, subset);
    }
    report("transactional upsert, tx per event", subset, &factum, &raw);
}

fn main() {
    common::block_on(run());
}
