//! Appends over TLS beside plaintext TCP, each beside a raw-SQL baseline on the same schema,
//! all on the same server in the same run: the TLS test cluster, which takes `verify-full`
//! connections from `postgres` and plaintext ones from its `plain_tcp` role.
//!
//! Each case runs twice: with `synchronous_commit` on (the server's default: a commit waits
//! for its WAL flush, which a shared disk can make the larger cost) and off for the
//! benchmark's sessions (what is left is the client, the server's CPU and the transport).
//!
//! `cargo bench -p factum-postgres --features testing --bench tls` (under a minute).

#![allow(missing_docs, clippy::unwrap_used, reason = "benchmark program")]

use std::time::{Duration, Instant};

use factum::store::{NewEvent, Payload};
use factum::{EventStore, ExpectedVersion, Metadata, StreamId};
use factum_postgres::testing::TestDatabase;
use factum_postgres::{PgConfig, PgStore};
use uuid::Uuid;

mod common;

use common::{Side, describe_server, median, sql, throughput};

/// How long each timed run lasts.
const RUN: Duration = Duration::from_millis(500);
/// Rounds per case; a round runs the four sides one after the other, so each ratio compares
/// runs next to each other in time.
const ROUNDS: usize = 5;

/// One transport's stores: factum's schema and the baseline's.
struct Transport {
    factum: PgStore,
    raw: PgStore,
}

impl Transport {
    async fn connect(url: &str, encrypted: bool) -> Self {
        let config = || {
            PgConfig::default()
                .schema(&format!("bench_tls_{}", Uuid::new_v4().simple()))
                .unwrap()
                .pool_size(16)
        };
        let factum = PgStore::connect_with(url, config()).await.unwrap();
        factum.migrate().await.unwrap();
        let raw = PgStore::connect_with(url, config()).await.unwrap();
        raw.migrate().await.unwrap();
        let client = raw.pool().get().await.unwrap();
        client
            .batch_execute(&sql(include_str!("sql/baseline_setup.sql"), &raw))
            .await
            .unwrap();
        let ssl: bool = client
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(ssl, encrypted, "{url}");
        Self { factum, raw }
    }
}

fn event() -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: "Incremented".into(),
        schema_version: 1,
        payload: Payload::encode(&serde_json::json!({ "by": 1 })).unwrap(),
        metadata: Metadata::new().actor("bench"),
    }
}

/// Single-event appends to new streams through the store; appends per second.
async fn factum_run(store: &PgStore, tasks: u64, tag: String) -> f64 {
    let store = store.clone();
    throughput(tasks, RUN, move |task, i| {
        let (store, tag) = (store.clone(), tag.clone());
        async move {
            let stream = StreamId::new("bench", &format!("{tag}-{task}-{i}")).unwrap();
            store
                .append(&stream, ExpectedVersion::NoStream, &[event()])
                .await
                .unwrap();
        }
    })
    .await
}

/// The same rows inserted by one prepared `INSERT` each; inserts per second.
async fn raw_run(store: &PgStore, tasks: u64, tag: String) -> f64 {
    let insert = sql(include_str!("sql/baseline_insert.sql"), store);
    let metadata = serde_json::to_string(&Metadata::new().actor("bench")).unwrap();
    let pool = store.pool().clone();
    throughput(tasks, RUN, move |task, i| {
        let (pool, insert, metadata, tag) =
            (pool.clone(), insert.clone(), metadata.clone(), tag.clone());
        async move {
            let client = pool.get().await.unwrap();
            let statement = client.prepare_cached(&insert).await.unwrap();
            let event = event();
            let stream = format!("bench-{tag}-{task}-{i}");
            client
                .execute(
                    &statement,
                    &[
                        &event.event_id,
                        &stream,
                        &1i64,
                        &event.event_type,
                        &1i32,
                        &event.payload.as_str(),
                        &metadata,
                    ],
                )
                .await
                .unwrap();
        }
    })
    .await
}

/// The runs of one case: (factum, raw) per transport, plain then TLS.
#[derive(Default)]
struct Runs {
    factum: [Side; 2],
    raw: [Side; 2],
}

fn ratio(over: &[f64], under: &[f64]) -> f64 {
    let ratios: Vec<f64> = over.iter().zip(under).map(|(a, b)| a / b).collect();
    median(&ratios)
}

async fn case(transports: &[Transport; 2], tasks: u64, rounds: usize, tag: &str) -> Runs {
    let mut runs = Runs::default();
    for round in 0..rounds {
        for (t, transport) in transports.iter().enumerate() {
            let tag = format!("{tag}{round}-{t}-{tasks}");
            runs.raw[t]
                .measure(raw_run(&transport.raw, tasks, tag.clone()))
                .await;
            runs.factum[t]
                .measure(factum_run(&transport.factum, tasks, tag))
                .await;
        }
    }
    runs
}

fn report(tasks: u64, runs: &Runs) {
    println!();
    println!("append 1 event, {tasks} task(s), appends/s");
    for (side, sides) in [("factum", &runs.factum), ("raw SQL", &runs.raw)] {
        println!(
            "  {side:<10} {:>10.0} {:>10.0} {:>14.3}x",
            median(&sides[0].runs),
            median(&sides[1].runs),
            ratio(&sides[1].runs, &sides[0].runs),
        );
    }
    println!(
        "  {:<10} {:>9.3}x {:>9.3}x",
        "factum/raw",
        ratio(&runs.factum[0].runs, &runs.raw[0].runs),
        ratio(&runs.factum[1].runs, &runs.raw[1].runs),
    );
    for (side, sides) in [("factum", &runs.factum), ("raw SQL", &runs.raw)] {
        let (plain, tls) = (sides[0].cpu_per_op(), sides[1].cpu_per_op());
        println!(
            "  {:<10} {plain:>10.0} {tls:>10.0} {:>14.3}x",
            format!("{side} µs"),
            tls / plain
        );
    }
}

async fn run() {
    let start = Instant::now();
    let db = TestDatabase::tls()
        .await
        .expect("the TLS cluster for the benchmark");
    let mut described = false;
    for (commits, options) in [
        ("synchronous_commit = on", ""),
        (
            "synchronous_commit = off",
            "&options=-c%20synchronous_commit%3Doff",
        ),
    ] {
        let transports = [
            Transport::connect(&format!("{}{options}", db.plain_url()), false).await,
            Transport::connect(&format!("{}{options}", db.url("verify-full")), true).await,
        ];
        if !described {
            describe_server(&transports[1].factum).await;
            println!("plain: sslmode=disable over TCP; TLS: sslmode=verify-full (rustls, ring)");
            println!("µs: this process's CPU time per append (client side)");
            described = true;
            // Untimed: warm the caches, WAL and pools first.
            case(&transports, 8, 1, "w").await;
        }
        println!();
        println!(
            "{commits:<12} {:>10} {:>10} {:>15}",
            "plain", "TLS", "TLS/plain"
        );
        for tasks in [1, 8] {
            let tag = format!("r{}", u8::from(options.is_empty()));
            report(tasks, &case(&transports, tasks, ROUNDS, &tag).await);
        }
    }
    println!();
    println!("ran in {:.0} s", start.elapsed().as_secs_f64());
}

fn main() {
    common::block_on(run());
}
