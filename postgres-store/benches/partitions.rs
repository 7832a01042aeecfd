//! Catch-up of 1,000,000 events split into 1, 2 and 4 partitions, each partition read by its
//! own process, beside raw SQL on the same schema in the same run.
//!
//! `cargo bench -p factum-postgres --features testing --bench partitions` (uses
//! `DATABASE_URL`, or a throwaway cluster; `BENCH_EVENTS` changes the number of events).
//!
//! The events are spread round-robin over 10,000 streams, so every partition's events lie
//! all over the table. For each number of partitions N, N processes (this binary, started
//! again) connect, then start reading together, each from position 0 to the end:
//!
//! - **partition-aware**: factum's reader (`Subscription`, as the projection runners read)
//!   with `ReadAll::partition`: only the partition's events come from the store, through the
//!   partition indexes (`PgStore::create_partition_index`).
//! - **whole log**: the same reader without the partition, keeping the partition's events
//!   and skipping the others, as every partition read before partition-aware reads.
//! - **raw SQL**: a hand-written loop of `SELECT … WHERE <partition> AND position > $1
//!   ORDER BY position LIMIT 1000` on the same schema and indexes, decoding the rows.
//!
//! Each process reports the rows it read and its seconds; the wall time of a run is the
//! slowest process's. The read volume per worker is the rows read and the stored bytes of
//! those rows (`pg_column_size`), and the heap tuples the server fetched for the whole run
//! (`pg_stat_user_tables`). No handler work and no checkpoint writes: this measures reading.

#![allow(missing_docs, clippy::unwrap_used, reason = "benchmark program")]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use factum::store::StreamPartition;
use factum::subscription::{Subscription, SubscriptionOptions};
use factum::{EventStore, Metadata};
use factum_postgres::testing::{TestDatabase, fresh_store};
use factum_postgres::{PgConfig, PgStore};
use tokio_postgres::types::Json;
use uuid::Uuid;

mod common;

use common::{describe_server, median, sql};

const STREAMS: i64 = 10_000;
const BATCH: usize = 1_000;
const COUNTS: [u32; 3] = [1, 2, 4];

/// How a worker process reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Mode {
    Aware,
    Whole,
    Raw,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Self::Aware => "aware",
            Self::Whole => "whole",
            Self::Raw => "raw",
        }
    }

    fn parse(name: &str) -> Self {
        match name {
            "aware" => Self::Aware,
            "whole" => Self::Whole,
            "raw" => Self::Raw,
            other => panic!("unknown mode {other}"),
        }
    }
}

/// The SQL test of partition `index` of `count`, as the store writes it (the predicate of
/// the partition's index); `true` for one partition.
fn predicate(index: u32, count: u32) -> String {
    if count == 1 {
        return "true".to_owned();
    }
    let n = u128::from(count);
    let wrapped = n + (1u128 << 64) % n;
    format!(
        "((stream_hash % {n} + CASE WHEN stream_hash < 0 THEN {wrapped} ELSE {n} END) % {n}) = {index}"
    )
}

fn main() {
    if let Ok(mode) = std::env::var("FACTUM_BENCH_WORKER") {
        common::block_on(worker(Mode::parse(&mode)));
        return;
    }
    common::block_on(run());
}

// --- a worker process ----------------------------------------------------------------------

#[allow(
    dead_code,
    reason = "decoded as a hand-written reader would, then dropped"
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

/// Connects, says `ready`, waits for a line on stdin, reads its partition to the end, and
/// prints the rows read, the rows of its partition and the seconds it took.
async fn worker(mode: Mode) {
    let var = |name: &str| std::env::var(name).unwrap();
    let url = var("FACTUM_BENCH_URL");
    let schema = var("FACTUM_BENCH_SCHEMA");
    let index: u32 = var("FACTUM_BENCH_INDEX").parse().unwrap();
    let count: u32 = var("FACTUM_BENCH_COUNT").parse().unwrap();
    let until: u64 = var("FACTUM_BENCH_UNTIL").parse().unwrap();
    let store = PgStore::connect_with(&url, PgConfig::default().schema(&schema).unwrap())
        .await
        .unwrap();
    let partition = StreamPartition::new(index, count).unwrap();
    let raw_sql = sql(include_str!("sql/raw_read_partition.sql"), &store)
        .replace("__PARTITION__", &predicate(index, count));
    // Connect and prepare before the start, so that the run times reading only.
    let client = store.pool().get().await.unwrap();
    let statement = client.prepare_cached(&raw_sql).await.unwrap();
    store.head_position().await.unwrap();
    println!("ready");
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).unwrap();
    let start = Instant::now();
    let (read, mine) = match mode {
        Mode::Aware | Mode::Whole => {
            let mut options = SubscriptionOptions::new().batch_size(BATCH);
            if mode == Mode::Aware && count > 1 {
                options = options.partition(partition);
            }
            let mut subscription = Subscription::new(store.clone(), 0, options);
            let (mut read, mut mine) = (0u64, 0u64);
            loop {
                let batch = subscription.poll().await.unwrap();
                read += batch.events.len() as u64;
                mine += batch
                    .events
                    .iter()
                    .filter(|e| partition.contains(&e.stream_id))
                    .count() as u64;
                if batch.scanned_to >= until {
                    break;
                }
            }
            (read, mine)
        }
        Mode::Raw => {
            let mut after = 0i64;
            let mut read = 0u64;
            let limit = i64::try_from(BATCH).unwrap();
            loop {
                let rows = client.query(&statement, &[&after, &limit]).await.unwrap();
                if rows.is_empty() {
                    break;
                }
                let mut events = Vec::with_capacity(rows.len());
                for row in &rows {
                    let Json(metadata): Json<Metadata> = row.get(7);
                    events.push(RawEvent {
                        position: row.get(0),
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
                read += events.len() as u64;
                after = events.last().map_or(after, |e| e.position);
            }
            (read, read)
        }
    };
    let seconds = start.elapsed().as_secs_f64();
    println!("{read} {mine} {seconds}");
}

// --- the run -------------------------------------------------------------------------------

struct Spawned {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

/// What the processes of one run reported.
struct Run {
    /// The slowest process's seconds.
    wall: f64,
    /// Rows read by each process.
    read: Vec<u64>,
    /// Rows of its partition each process found.
    mine: Vec<u64>,
    /// Heap tuples the server fetched from the events table during the run.
    fetched: i64,
}

async fn tuples_fetched(store: &PgStore) -> i64 {
    let client = store.pool().get().await.unwrap();
    let table = format!("{}.events", store.config().schema.quoted());
    // The workers' backends report their counts as they exit: read until two reads agree.
    let mut last = -1;
    for _ in 0..50 {
        let now: i64 = client
            .query_one(include_str!("sql/tuples_fetched.sql"), &[&table])
            .await
            .unwrap()
            .get(0);
        if now == last {
            break;
        }
        last = now;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    last
}

async fn run_once(store: &PgStore, url: &str, mode: Mode, count: u32, until: u64) -> Run {
    let before = tuples_fetched(store).await;
    let exe = std::env::current_exe().unwrap();
    let mut workers: Vec<Spawned> = (0..count)
        .map(|index| {
            let mut child = Command::new(&exe)
                .env("FACTUM_BENCH_WORKER", mode.name())
                .env("FACTUM_BENCH_URL", url)
                .env("FACTUM_BENCH_SCHEMA", store.config().schema.to_string())
                .env("FACTUM_BENCH_INDEX", index.to_string())
                .env("FACTUM_BENCH_COUNT", count.to_string())
                .env("FACTUM_BENCH_UNTIL", until.to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let stdin = child.stdin.take().unwrap();
            let stdout = BufReader::new(child.stdout.take().unwrap());
            Spawned {
                child,
                stdin,
                stdout,
            }
        })
        .collect();
    let line = |w: &mut Spawned| {
        let mut line = String::new();
        w.stdout.read_line(&mut line).unwrap();
        line.trim().to_owned()
    };
    for w in &mut workers {
        assert_eq!(line(w), "ready");
    }
    for w in &mut workers {
        writeln!(w.stdin, "go").unwrap();
        w.stdin.flush().unwrap();
    }
    let (mut wall, mut read, mut mine) = (0f64, Vec::new(), Vec::new());
    for w in &mut workers {
        let report = line(w);
        let parts: Vec<&str> = report.split_whitespace().collect();
        read.push(parts[0].parse().unwrap());
        mine.push(parts[1].parse().unwrap());
        wall = wall.max(parts[2].parse().unwrap());
        assert!(w.child.wait().unwrap().success());
    }
    let fetched = tuples_fetched(store).await - before;
    Run {
        wall,
        read,
        mine,
        fetched,
    }
}

async fn run() {
    let total: i64 = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let url = TestDatabase::get().await.unwrap();
    let store = fresh_store().await.unwrap();
    describe_server(&store).await;
    let client = store.pool().get().await.unwrap();
    let metadata = serde_json::to_string(&Metadata::new().actor("bench")).unwrap();
    let seeding = Instant::now();
    client
        .execute(
            &sql(include_str!("sql/partitions_seed.sql"), &store),
            &[&total, &STREAMS, &metadata],
        )
        .await
        .unwrap();
    println!(
        "seeded {total} events in {STREAMS} streams in {:.1} s",
        seeding.elapsed().as_secs_f64()
    );
    for count in COUNTS {
        let indexing = Instant::now();
        store.create_partition_index(count).await.unwrap();
        if count > 1 {
            println!(
                "partition indexes of {count}: {:.1} s",
                indexing.elapsed().as_secs_f64()
            );
        }
    }
    client
        .batch_execute(&sql("VACUUM ANALYZE __SCHEMA__.events", &store))
        .await
        .unwrap();
    let until = store.head_position().await.unwrap();
    let events = u64::try_from(total).unwrap();
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    // The rows and stored bytes of each partition, before any run, so that the server's
    // counts of fetched tuples hold only the runs.
    let mut volumes = std::collections::HashMap::new();
    for count in COUNTS {
        for index in 0..count {
            let row = client
                .query_one(
                    &sql(include_str!("sql/partition_volume.sql"), &store)
                        .replace("__PARTITION__", &predicate(index, count)),
                    &[],
                )
                .await
                .unwrap();
            let (rows, bytes): (i64, i64) = (row.get(0), row.get(1));
            volumes.insert((index, count), (rows, bytes));
        }
    }
    client
        .batch_execute("SELECT pg_stat_force_next_flush()")
        .await
        .unwrap();
    let whole_bytes: i64 = volumes[&(0, 1)].1;
    let cases: Vec<(Mode, u32)> = COUNTS
        .iter()
        .flat_map(|&count| {
            [Mode::Aware, Mode::Whole, Mode::Raw]
                .into_iter()
                .filter(move |&mode| !(count == 1 && mode == Mode::Whole))
                .map(move |mode| (mode, count))
        })
        .collect();
    // Rounds alternate the cases; each case reports its median wall time.
    let mut walls: std::collections::HashMap<(Mode, u32), Vec<f64>> =
        std::collections::HashMap::new();
    let mut last: std::collections::HashMap<(Mode, u32), Run> = std::collections::HashMap::new();
    for _ in 0..rounds {
        for &(mode, count) in &cases {
            let run = run_once(&store, &url, mode, count, until).await;
            let handled: u64 = run.mine.iter().sum();
            assert_eq!(handled, events, "{mode:?} {count}: every event once");
            walls.entry((mode, count)).or_default().push(run.wall);
            last.insert((mode, count), run);
        }
    }
    let rate = |mode: Mode, count: u32| events as f64 / median(&walls[&(mode, count)]);
    println!();
    println!("{rounds} rounds; medians of the wall time (the slowest worker of a run)");
    println!(
        "{:<18} {:>3} {:>9} {:>12} {:>8}  {:<36} {:<24} {:>12}",
        "case",
        "N",
        "wall s",
        "events/s",
        "vs N=1",
        "rows read per worker",
        "MB per worker",
        "heap tuples"
    );
    for &(mode, count) in &cases {
        let run = &last[&(mode, count)];
        let base = rate(
            if mode == Mode::Whole {
                Mode::Aware
            } else {
                mode
            },
            1,
        );
        let mb: Vec<String> = (0..count)
            .map(|i| {
                let bytes = if mode == Mode::Whole {
                    whole_bytes
                } else {
                    volumes[&(i, count)].1
                };
                format!("{:.1}", bytes as f64 / 1e6)
            })
            .collect();
        let rows: Vec<String> = run.read.iter().map(u64::to_string).collect();
        println!(
            "{:<18} {:>3} {:>9.2} {:>12.0} {:>8.2}  {:<36} {:<24} {:>12}",
            match mode {
                Mode::Aware => "factum, partition",
                Mode::Whole => "factum, whole log",
                Mode::Raw => "raw SQL",
            },
            count,
            median(&walls[&(mode, count)]),
            rate(mode, count),
            rate(mode, count) / base,
            rows.join("/"),
            mb.join("/"),
            run.fetched
        );
    }
    println!();
    for count in COUNTS {
        let ratios: Vec<f64> = walls[&(Mode::Raw, count)]
            .iter()
            .zip(&walls[&(Mode::Aware, count)])
            .map(|(raw, factum)| raw / factum)
            .collect();
        println!(
            "N={count}: factum partition-aware / raw SQL, events/s: {:.2} (median of the rounds' ratios; rounds {})",
            median(&ratios),
            ratios
                .iter()
                .map(|r| format!("{r:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}
