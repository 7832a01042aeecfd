//! Benchmarks of a multi-tenant store (`PgConfig::multi_tenant`): appends and stream reads
//! through a tenant's handle, beside raw SQL on the same schema bound the same way (`BEGIN`,
//! `set_config('factum.tenant', …, true)`, the statement, `COMMIT`, pipelined), and a
//! single-tenant store beside raw SQL on its own schema, in the same run. Both schemas
//! belong to a role that is not a superuser, so row-level security applies.
//!
//! `cargo bench -p factum-postgres --features testing --bench tenants`

#![allow(missing_docs, clippy::unwrap_used, reason = "benchmark program")]

use std::time::Duration;

use deadpool_postgres::Object;
use factum::store::{NewEvent, Payload, StreamRead};
use factum::tenant::TenantId;
use factum::{EventStore, ExpectedVersion, Metadata, StreamId};
use factum_postgres::testing::{self, TestDatabase};
use factum_postgres::{PgConfig, PgConnectOptions, PgStore};
use uuid::Uuid;

mod common;

use common::{describe_server, print_header, rate, report, sql, throughput};

/// How long each timed append run lasts.
const RUN: Duration = Duration::from_millis(700);
/// Timed runs per case and side, alternating sides; the medians are reported.
const ROUNDS: usize = 5;
/// Events of the stream the read cases read.
const STREAM_EVENTS: u64 = 1_000;

fn new_event(n: u64) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: "Incremented".into(),
        schema_version: 1,
        payload: Payload::encode(&serde_json::json!({ "by": n })).unwrap(),
        metadata: Metadata::new(),
    }
}

/// Runs `statement` bound to `tenant` as the store does: four requests, one round trip.
async fn bound<T>(
    client: &Object,
    tenant: Option<&str>,
    statement: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> T {
    let Some(tenant) = tenant else {
        return statement.await.unwrap();
    };
    // Prepared first: an unprepared statement would be sent only after its preparation's
    // reply, behind the `COMMIT`.
    let bind = client
        .prepare_cached("SELECT set_config('factum.tenant', $1, true)")
        .await
        .unwrap();
    let (begun, set, value, committed) = futures_util::future::join4(
        client.batch_execute("BEGIN"),
        client.execute(&bind, &[&tenant]),
        statement,
        client.batch_execute("COMMIT"),
    )
    .await;
    begun.unwrap();
    set.unwrap();
    committed.unwrap();
    value.unwrap()
}

/// Appends of one event to a new stream per command: `store` beside the raw insert on its
/// schema (bound to `tenant`, when given).
async fn append_one(label: &str, store: &PgStore, raw: &PgStore, tenant: Option<&'static str>) {
    let insert = sql(include_str!("sql/baseline_insert.sql"), raw);
    let metadata = match tenant {
        Some(tenant) => serde_json::to_string(&Metadata::new().tenant(tenant)).unwrap(),
        None => "{}".to_owned(),
    };
    for tasks in [1, 8] {
        let (mut factum_runs, mut raw_runs) = (Vec::new(), Vec::new());
        for r in 0..ROUNDS {
            let (pool, insert, metadata) = (raw.pool().clone(), insert.clone(), metadata.clone());
            raw_runs.push(
                throughput(tasks, RUN, move |task, i| {
                    let (pool, insert, metadata) = (pool.clone(), insert.clone(), metadata.clone());
                    async move {
                        let client = pool.get().await.unwrap();
                        let statement = client.prepare_cached(&insert).await.unwrap();
                        let event = new_event(i);
                        let stream = format!("bench-raw{r}-{tasks}-{task}-{i}");
                        let payload = event.payload.as_str();
                        bound(
                            &client,
                            tenant,
                            client.execute(
                                &statement,
                                &[
                                    &event.event_id,
                                    &stream,
                                    &1i64,
                                    &event.event_type,
                                    &1i32,
                                    &payload,
                                    &metadata,
                                ],
                            ),
                        )
                        .await;
                    }
                })
                .await,
            );
            let store = store.clone();
            factum_runs.push(
                throughput(tasks, RUN, move |task, i| {
                    let store = store.clone();
                    async move {
                        let stream =
                            StreamId::new("bench", &format!("f{r}-{tasks}-{task}-{i}")).unwrap();
                        store
                            .append(&stream, ExpectedVersion::NoStream, &[new_event(i)])
                            .await
                            .unwrap();
                    }
                })
                .await,
            );
        }
        report(
            &format!("append 1 event, {label}, {tasks} tasks"),
            "appends/s",
            &factum_runs,
            &raw_runs,
            None,
        );
    }
}

/// Reads of a whole stream of [`STREAM_EVENTS`] events: `store` beside the raw `SELECT` on
/// its schema (bound to `tenant`, when given).
async fn read_stream(label: &str, store: &PgStore, tenant: Option<&str>) {
    let stream = StreamId::new("read", "1").unwrap();
    let events: Vec<NewEvent> = (0..STREAM_EVENTS).map(new_event).collect();
    store
        .append(&stream, ExpectedVersion::NoStream, &events)
        .await
        .unwrap();
    let select = sql(
        "SELECT position, event_id, stream_version, event_type, schema_version, payload, \
         metadata, recorded_at FROM __SCHEMA__.events WHERE stream_id = $1 \
         ORDER BY stream_version",
        store,
    );
    let client = store.pool().get().await.unwrap();
    let statement = client.prepare(&select).await.unwrap();
    let (mut factum_runs, mut raw_runs) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        raw_runs.push(
            rate(20, || async {
                let rows = bound(
                    &client,
                    tenant,
                    client.query(&statement, &[&stream.as_str()]),
                )
                .await;
                assert_eq!(rows.len() as u64, STREAM_EVENTS);
            })
            .await,
        );
        factum_runs.push(
            rate(20, || async {
                let read = store
                    .read_stream(&stream, &StreamRead::all())
                    .await
                    .unwrap();
                assert_eq!(read.len() as u64, STREAM_EVENTS);
            })
            .await,
        );
    }
    report(
        &format!("read a {STREAM_EVENTS}-event stream, {label}"),
        "reads/s",
        &factum_runs,
        &raw_runs,
        None,
    );
}

async fn run() {
    let url = TestDatabase::get().await.unwrap();
    let tag = Uuid::new_v4().simple().to_string();
    let (role, multi, single) = (
        format!("bench_{tag}"),
        format!("tenants_{tag}"),
        format!("single_{tag}"),
    );
    PgConnectOptions::parse(&url)
        .unwrap()
        .connect()
        .await
        .unwrap()
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN; CREATE SCHEMA {multi} AUTHORIZATION {role}; \
             CREATE SCHEMA {single} AUTHORIZATION {role};"
        ))
        .await
        .unwrap();
    let role_url = testing::url_as(&url, &role).unwrap();
    let connect = |config: PgConfig| {
        let role_url = role_url.clone();
        async move {
            let store = PgStore::connect_with(&role_url, config).await.unwrap();
            store.migrate().await.unwrap();
            store
                .pool()
                .get()
                .await
                .unwrap()
                .batch_execute(&sql(include_str!("sql/baseline_setup.sql"), &store))
                .await
                .unwrap();
            store
        }
    };
    let config = PgConfig::default().pool_size(16);
    let multi_store = connect(config.clone().schema(&multi).unwrap().multi_tenant(true)).await;
    let single_store = connect(config.schema(&single).unwrap()).await;
    let acme = multi_store.tenant(&TenantId::new("acme").unwrap()).unwrap();

    describe_server(&single_store).await;
    print_header();
    append_one("single-tenant", &single_store, &single_store, None).await;
    append_one("tenant handle", &acme, &multi_store, Some("acme")).await;
    read_stream("tenant handle", &acme, Some("acme")).await;
    read_stream("single-tenant", &single_store, None).await;
}

fn main() {
    common::block_on(run());
}
