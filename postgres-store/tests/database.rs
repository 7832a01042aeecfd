//! Database-level guarantees: append-only, migrations, pool hygiene, corrupt rows, schema
//! names, notifications.

mod common;

use std::time::Duration;

use common::*;
use factum::store::ReadAll;
use factum::{EventStore, ExpectedVersion, StoreError};
use factum_postgres::{MIGRATIONS, PgConfig, PgError, PgStore};

async fn expect_refused(client: &tokio_postgres::Client, sql: &str) {
    let err = client.batch_execute(sql).await.unwrap_err();
    let db = err.as_db_error().expect("a database error");
    assert_eq!(db.code().code(), "FA001", "{sql}: {db}");
    assert!(db.message().contains("append-only"), "{}", db.message());
}

#[tokio::test]
async fn events_cannot_be_updated_deleted_or_truncated() {
    let store = store().await;
    store
        .append(&stream("1"), ExpectedVersion::Any, &events(3))
        .await
        .unwrap();
    let client = raw_client().await;
    let s = schema(&store);
    for session in ["", "SET session_replication_role = replica; "] {
        expect_refused(
            &client,
            &format!("{session}UPDATE {s}.events SET event_type = 'X'"),
        )
        .await;
        expect_refused(
            &client,
            &format!("{session}UPDATE {s}.events SET payload = '{{}}' WHERE false"),
        )
        .await;
        expect_refused(&client, &format!("{session}DELETE FROM {s}.events")).await;
        expect_refused(
            &client,
            &format!("{session}DELETE FROM {s}.events WHERE position < 0"),
        )
        .await;
        expect_refused(&client, &format!("{session}TRUNCATE {s}.events")).await;
        expect_refused(&client, &format!("{session}TRUNCATE {s}.events CASCADE")).await;
        client
            .batch_execute("RESET session_replication_role")
            .await
            .unwrap();
    }
    let role: String = client
        .query_one("SHOW session_replication_role", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(role, "origin");
    assert_eq!(
        store.read_all(&ReadAll::after(0)).await.unwrap().len(),
        3,
        "nothing changed"
    );
}

#[tokio::test]
async fn concurrent_migrations_apply_once() {
    let url = url().await;
    let schema = format!("mig_{}", uuid::Uuid::new_v4().simple());
    let stores: Vec<PgStore> = futures_util::future::join_all((0..6).map(|_| {
        PgStore::connect_with(
            &url,
            PgConfig::default().schema(&schema).unwrap().pool_size(2),
        )
    }))
    .await
    .into_iter()
    .collect::<Result<_, _>>()
    .unwrap();
    let results = futures_util::future::join_all(stores.iter().map(PgStore::migrate)).await;
    for result in results {
        result.unwrap();
    }
    // Again: nothing to do.
    stores[0].migrate().await.unwrap();
    let client = raw_client().await;
    let rows = client
        .query(
            &format!("SELECT version FROM \"{schema}\".schema_migrations ORDER BY version"),
            &[],
        )
        .await
        .unwrap();
    let versions: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    let known: Vec<i32> = MIGRATIONS.iter().map(|m| m.0).collect();
    assert_eq!(versions, known);
    stores[1]
        .append(&stream("m"), ExpectedVersion::NoStream, &events(1))
        .await
        .unwrap();

    // A database migrated by a newer build is refused.
    client
        .batch_execute(&format!(
            "INSERT INTO \"{schema}\".schema_migrations (version, name) VALUES (9999, 'future')"
        ))
        .await
        .unwrap();
    assert!(matches!(
        stores[2].migrate().await,
        Err(PgError::UnknownMigration { version: 9999, .. })
    ));
}

#[tokio::test]
async fn schema_names_are_validated_and_quoted() {
    let url = url().await;
    for bad in [
        "",
        "a-b",
        "x\"; DROP SCHEMA public; --",
        "1x",
        "pg_temp",
        &"s".repeat(64),
    ] {
        assert!(
            matches!(
                PgConfig::default().schema(bad),
                Err(PgError::InvalidSchemaName { .. })
            ),
            "{bad:?}"
        );
    }
    // Mixed case is kept: quoted everywhere.
    let name = format!("Mixed_{}", uuid::Uuid::new_v4().simple());
    let store = PgStore::connect_with(&url, PgConfig::default().schema(&name).unwrap())
        .await
        .unwrap();
    store.migrate().await.unwrap();
    store
        .append(&stream("q"), ExpectedVersion::NoStream, &events(1))
        .await
        .unwrap();
    let client = raw_client().await;
    let exists: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
            &[&name],
        )
        .await
        .unwrap()
        .get(0);
    assert!(exists);
}

#[tokio::test]
async fn pooled_connections_come_back_clean() {
    let store = factum_postgres::testing::fresh_store_with(PgConfig::default().pool_size(4))
        .await
        .unwrap();
    let mut head = store.watch_head();
    for i in 0..20 {
        store
            .append(
                &stream(&format!("p{}", i % 3)),
                ExpectedVersion::Any,
                &events(2),
            )
            .await
            .unwrap();
    }
    // Conflicts and unique violations go through the error paths.
    let e = events(1);
    store
        .append(&stream("p9"), ExpectedVersion::Any, &e)
        .await
        .unwrap();
    store
        .append(&stream("p9"), ExpectedVersion::Any, &e)
        .await
        .unwrap();
    assert!(
        store
            .append(&stream("p9"), ExpectedVersion::NoStream, &events(1))
            .await
            .is_err()
    );
    assert!(
        store
            .append(&stream("other"), ExpectedVersion::Any, &e)
            .await
            .is_err()
    );
    store.read_all(&ReadAll::after(0)).await.unwrap();
    store.head_position().await.unwrap();
    store.migrate().await.unwrap();
    let last = store.head_position().await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), head.wait_for(|&h| h >= last))
        .await
        .expect("the head watcher catches up")
        .unwrap();

    // Hold every pooled connection at once, so that each is inspected.
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(store.pool().get().await.unwrap());
    }
    for client in &clients {
        let row = client
            .query_one(
                "SELECT
                    (SELECT count(*) FROM pg_locks
                      WHERE pid = pg_backend_pid() AND locktype = 'advisory'),
                    (SELECT count(*) FROM pg_listening_channels()),
                    (SELECT count(*) FROM pg_settings WHERE source = 'session'),
                    pg_current_xact_id_if_assigned() IS NULL",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, i64>(0), 0, "advisory locks leaked");
        assert_eq!(row.get::<_, i64>(1), 0, "LISTEN leaked");
        assert_eq!(row.get::<_, i64>(2), 0, "session settings leaked");
        assert!(row.get::<_, bool>(3), "transaction left open");
    }
}

#[tokio::test]
async fn corrupt_rows_are_errors_that_name_the_row() {
    let store = store().await;
    let good = store
        .append(&stream("ok"), ExpectedVersion::Any, &events(1))
        .await
        .unwrap();
    let client = raw_client().await;
    let s = schema(&store);
    // Written by something else: a stream name without category and metadata that is not
    // an object.
    let position: i64 = client
        .query_one(
            &format!(
                "INSERT INTO {s}.events (position, event_id, stream_id, stream_version, event_type,
                     schema_version, payload, metadata)
                 VALUES (pg_current_xact_id()::text::bigint * 65536, gen_random_uuid(), 'nodash', 1,
                     'X', 1, '{{}}', '[1]')
                 RETURNING position"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let bad_meta: i64 = client
        .query_one(
            &format!(
                "INSERT INTO {s}.events (position, event_id, stream_id, stream_version, event_type,
                     schema_version, payload, metadata)
                 VALUES (pg_current_xact_id()::text::bigint * 65536, gen_random_uuid(), 'order-bad', 1,
                     'X', -3, '{{}}', '{{}}')
                 RETURNING position"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let err = store.read_all(&ReadAll::after(0)).await.unwrap_err();
    match err {
        StoreError::Corrupt { location, message } => {
            assert!(location.contains(&position.to_string()), "{location}");
            assert!(location.contains("nodash"), "{location}");
            assert!(message.contains("stream id"), "{message}");
        }
        other => panic!("expected Corrupt, got {other}"),
    }
    let err = store
        .read_all(&ReadAll::after(u64::try_from(position).unwrap()))
        .await
        .unwrap_err();
    match err {
        StoreError::Corrupt { location, message } => {
            assert!(location.contains(&bad_meta.to_string()), "{location}");
            assert!(location.contains("order-bad"), "{location}");
            assert!(message.contains("schema version"), "{message}");
        }
        other => panic!("expected Corrupt, got {other}"),
    }
    // The good event still reads by stream.
    assert_eq!(
        store
            .read_stream(&stream("ok"), &factum::store::StreamRead::all())
            .await
            .unwrap()[0]
            .position,
        good.first_position
    );
}

#[tokio::test]
async fn the_head_watcher_reconnects_and_polls() {
    let store = factum_postgres::testing::fresh_store_with(
        PgConfig::default().poll_interval(Duration::from_millis(200)),
    )
    .await
    .unwrap();
    let mut head = store.watch_head();
    let first = store
        .append(&stream("w"), ExpectedVersion::Any, &events(1))
        .await
        .unwrap();
    tokio::time::timeout(
        Duration::from_secs(30),
        head.wait_for(|&h| h >= first.last_position),
    )
    .await
    .expect("woken")
    .unwrap();

    // Kill the listener's connection: it comes back, and nothing is lost meanwhile.
    let client = raw_client().await;
    let killed: i64 = client
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
              WHERE application_name = 'factum-head-listener'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(killed >= 1);
    let second = store
        .append(&stream("w"), ExpectedVersion::Any, &events(1))
        .await
        .unwrap();
    tokio::time::timeout(
        Duration::from_secs(30),
        head.wait_for(|&h| h >= second.last_position),
    )
    .await
    .expect("woken after reconnecting")
    .unwrap();

    // Another process's appends wake this one too (here: a second store on the schema).
    let other = PgStore::connect_with(
        &url().await,
        PgConfig::default()
            .schema(store.config().schema.as_str())
            .unwrap(),
    )
    .await
    .unwrap();
    let third = other
        .append(&stream("w"), ExpectedVersion::Any, &events(1))
        .await
        .unwrap();
    tokio::time::timeout(
        Duration::from_secs(30),
        head.wait_for(|&h| h >= third.last_position),
    )
    .await
    .expect("woken by another writer")
    .unwrap();
    assert!(store.head_hint().is_some());
}
