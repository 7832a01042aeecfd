//! A 100,000-event catch-up (read all from position 0 and decode every event) with personal
//! fields encrypted by `Shredding` and `PgKeyStore`, beside the same events without, and
//! beside raw SQL reading each schema, in one run.
//!
//! `cargo bench -p factum-postgres --features testing --bench personal`; `BENCH_EVENTS`
//! changes the number of events, `BENCH_SUBJECTS` the number of subjects (1,000 by default:
//! every batch of 1,000 events names 1,000 subjects, one key lookup for them all).

mod common;

use std::time::Instant;

use common::{describe_server, median, print_header, report, sql};
use factum::personal::{
    MasterKey, Personal, PersonalData, PersonalField, PersonalSchema, Shredding,
};
use factum::store::{NewEvent, ReadAll};
use factum::{Event, EventStore, ExpectedVersion, Metadata, StreamId};
use factum_postgres::testing::fresh_store_with;
use factum_postgres::{PgConfig, PgKeyStore, PgStore};
use serde::{Deserialize, Serialize};

const ROUNDS: usize = 5;
const BATCH: usize = 1000;

/// The event with personal fields, as the shredding store decodes it.
#[derive(Serialize, Deserialize)]
struct CustomerRegistered {
    customer_id: String,
    name: Personal<String>,
    address: Personal<String>,
    tier: String,
}

impl Event for CustomerRegistered {
    const NAME: &'static str = "CustomerRegistered";
    const VERSION: u32 = 1;
}

impl PersonalData for CustomerRegistered {
    const PERSONAL: &'static [PersonalField] = &[
        PersonalField::new("name", "customer_id"),
        PersonalField::new("address", "customer_id"),
    ];
}

/// The same event without personal fields: what the plain store decodes.
#[derive(Deserialize)]
#[allow(dead_code, reason = "decoded to measure decoding, not read")]
struct PlainRegistered {
    customer_id: String,
    name: String,
    address: String,
    tier: String,
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Appends `events` events, `BATCH` per append, each naming one of `subjects` subjects.
async fn seed<S: EventStore>(store: &S, events: u64, subjects: u64) {
    let mut n = 0;
    let mut stream = 0;
    while n < events {
        let batch: Vec<NewEvent> = (n..(n + BATCH as u64).min(events))
            .map(|i| {
                let event = CustomerRegistered {
                    customer_id: format!("customer-{}", i % subjects),
                    name: Personal::Known(format!("Name Surname {i}")),
                    address: Personal::Known(format!("{i} Long Street, 75001 Paris")),
                    tier: "gold".into(),
                };
                NewEvent::from_event(&event, Metadata::new()).unwrap()
            })
            .collect();
        n += batch.len() as u64;
        let id = StreamId::new("customer", &format!("s{stream}")).unwrap();
        store
            .append(&id, ExpectedVersion::NoStream, &batch)
            .await
            .unwrap();
        stream += 1;
    }
}

/// Reads every event through `store` and decodes it as `T`; events per second.
async fn catch_up<S: EventStore, T: serde::de::DeserializeOwned>(store: &S, events: u64) -> f64 {
    let start = Instant::now();
    let (mut after, mut count) = (0u64, 0u64);
    loop {
        let batch = store
            .read_all(&ReadAll::after(after).limit(BATCH))
            .await
            .unwrap();
        let Some(last) = batch.last() else { break };
        after = last.position;
        for event in &batch {
            let decoded: T = event.payload.decode().unwrap();
            std::hint::black_box(decoded);
        }
        count += batch.len() as u64;
    }
    assert_eq!(count, events);
    count as f64 / start.elapsed().as_secs_f64()
}

/// Reads every event of `store`'s schema with a plain `SELECT` and decodes its payload as
/// `T`; events per second.
async fn raw_catch_up<T: serde::de::DeserializeOwned>(store: &PgStore, events: u64) -> f64 {
    let read_sql = sql(include_str!("sql/baseline_read_all.sql"), store);
    let start = Instant::now();
    let client = store.pool().get().await.unwrap();
    let statement = client.prepare_cached(&read_sql).await.unwrap();
    let (mut after, mut count) = (0i64, 0u64);
    loop {
        let rows = client
            .query(&statement, &[&after, &(BATCH as i64)])
            .await
            .unwrap();
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            after = row.get(0);
            let payload: serde_json::Value = row.get(6);
            let decoded: T = serde_json::from_value(payload).unwrap();
            std::hint::black_box(decoded);
        }
        count += rows.len() as u64;
    }
    assert_eq!(count, events);
    count as f64 / start.elapsed().as_secs_f64()
}

/// What the raw side reads of an encrypted event: the envelopes, not decrypted.
#[derive(Deserialize)]
#[allow(dead_code, reason = "decoded to measure decoding, not read")]
struct Encrypted {
    customer_id: String,
    name: serde_json::Value,
    address: serde_json::Value,
    tier: String,
}

async fn run() {
    let events = env("BENCH_EVENTS", 100_000);
    let subjects = env("BENCH_SUBJECTS", 1000);
    let config = PgConfig::default().pool_size(8);
    let plain = fresh_store_with(config.clone()).await.unwrap();
    let personal_inner = fresh_store_with(config).await.unwrap();
    let keys = PgKeyStore::new(&personal_inner, MasterKey::generate());
    let personal = Shredding::new(
        personal_inner.clone(),
        keys,
        PersonalSchema::new()
            .register::<CustomerRegistered>()
            .unwrap(),
    );
    describe_server(&plain).await;

    let start = Instant::now();
    seed(&plain, events, subjects).await;
    let plain_seed = start.elapsed().as_secs_f64();
    let start = Instant::now();
    seed(&personal, events, subjects).await;
    let personal_seed = start.elapsed().as_secs_f64();
    println!(
        "seeded {events} events ({subjects} subjects): without personal fields {plain_seed:.1} s, with {personal_seed:.1} s"
    );
    for store in [&plain, &personal_inner] {
        let client = store.pool().get().await.unwrap();
        client.batch_execute("CHECKPOINT").await.unwrap();
    }

    let (mut raw_plain, mut fac_plain, mut raw_personal, mut fac_personal) =
        (vec![], vec![], vec![], vec![]);
    for _ in 0..ROUNDS {
        raw_plain.push(raw_catch_up::<PlainRegistered>(&plain, events).await);
        fac_plain.push(catch_up::<_, PlainRegistered>(&plain, events).await);
        raw_personal.push(raw_catch_up::<Encrypted>(&personal_inner, events).await);
        fac_personal.push(catch_up::<_, CustomerRegistered>(&personal, events).await);
    }
    print_header();
    report(
        "catch-up, no personal fields",
        "events/s",
        &fac_plain,
        &raw_plain,
        None,
    );
    report(
        "catch-up, 2 personal fields, decrypted",
        "events/s",
        &fac_personal,
        &raw_personal,
        None,
    );
    report(
        "catch-up, personal vs none (factum/factum)",
        "events/s",
        &fac_personal,
        &fac_plain,
        None,
    );
    report(
        "catch-up, personal factum vs plain raw SQL",
        "events/s",
        &fac_personal,
        &raw_plain,
        None,
    );
    println!(
        "medians: raw plain {:.0}, raw encrypted rows {:.0} events/s",
        median(&raw_plain),
        median(&raw_personal)
    );
}

fn main() {
    common::block_on(run());
}
