//! Appends: expected versions, idempotent retries, SQLSTATE mapping, concurrent writers.

mod common;

use common::*;
use factum::store::{Payload, ReadAll, StreamRead};
use factum::testing::{Counter, Increment};
use factum::{EventStore, ExpectedVersion, Metadata, Repository, StoreError};
use factum_postgres::PgConfig;
use factum_postgres::testing::fresh_store_with;
use uuid::Uuid;

#[tokio::test]
async fn expected_versions_behave_like_the_core_contract() {
    let store = store().await;
    let s = stream("1");
    let err = store
        .append(&s, ExpectedVersion::StreamExists, &events(1))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::WrongExpectedVersion {
                actual: 0,
                expected: ExpectedVersion::StreamExists,
                ..
            }
        ),
        "{err}"
    );
    let first = store
        .append(&s, ExpectedVersion::NoStream, &events(2))
        .await
        .unwrap();
    assert_eq!((first.version, first.first_version), (2, 1));
    assert_eq!(first.last_position - first.first_position, 1);
    assert!(!first.replayed);

    let err = store
        .append(&s, ExpectedVersion::NoStream, &events(1))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::WrongExpectedVersion { actual: 2, .. }),
        "{err}"
    );
    let err = store
        .append(&s, ExpectedVersion::Exact(1), &events(1))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::WrongExpectedVersion {
                actual: 2,
                expected: ExpectedVersion::Exact(1),
                ..
            }
        ),
        "{err}"
    );
    assert!(err.is_conflict());

    let third = store
        .append(&s, ExpectedVersion::Exact(2), &events(1))
        .await
        .unwrap();
    assert_eq!((third.version, third.first_version), (3, 3));
    let fourth = store
        .append(&s, ExpectedVersion::StreamExists, &events(1))
        .await
        .unwrap();
    assert_eq!(fourth.version, 4);
    let fifth = store
        .append(&s, ExpectedVersion::Any, &events(1))
        .await
        .unwrap();
    assert_eq!(fifth.version, 5);
    assert!(fifth.first_position > fourth.last_position);

    // An empty append checks the version and stores nothing.
    let empty = store
        .append(&s, ExpectedVersion::Exact(5), &[])
        .await
        .unwrap();
    assert_eq!(
        (empty.version, empty.first_version, empty.last_position),
        (5, 6, 0)
    );
    assert!(
        store
            .append(&s, ExpectedVersion::Exact(4), &[])
            .await
            .is_err()
    );

    assert_eq!(store.stream_version(&s).await.unwrap(), 5);
    let read = store.read_stream(&s, &StreamRead::all()).await.unwrap();
    let versions: Vec<u64> = read.iter().map(|e| e.stream_version).collect();
    assert_eq!(versions, [1, 2, 3, 4, 5]);
}

#[tokio::test]
async fn retries_are_idempotent_and_reused_ids_are_refused() {
    let store = store().await;
    let s = stream("retry");
    let batch = events(3);
    let first = store
        .append(&s, ExpectedVersion::NoStream, &batch)
        .await
        .unwrap();
    // Same ids, same content: the original result, nothing stored, whatever the expectation.
    for expected in [
        ExpectedVersion::NoStream,
        ExpectedVersion::Any,
        ExpectedVersion::Exact(0),
    ] {
        let again = store.append(&s, expected, &batch).await.unwrap();
        assert!(again.replayed);
        assert_eq!(
            (
                again.version,
                again.first_version,
                again.first_position,
                again.last_position
            ),
            (
                first.version,
                first.first_version,
                first.first_position,
                first.last_position
            )
        );
    }
    assert_eq!(store.stream_version(&s).await.unwrap(), 3);

    // Same id, other content.
    let mut changed = batch[0].clone();
    changed.payload = Payload::encode(&serde_json::json!({"n": 99})).unwrap();
    let err = store
        .append(&s, ExpectedVersion::Any, &[changed])
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::DuplicateEventId { event_id, .. } if event_id == batch[0].event_id),
        "{err}"
    );
    // Same id in another stream.
    let err = store
        .append(&stream("other"), ExpectedVersion::Any, &batch[..1])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::DuplicateEventId { .. }), "{err}");
    // A stored id mixed with a new one.
    let err = store
        .append(&s, ExpectedVersion::Any, &[batch[0].clone(), event(7)])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::DuplicateEventId { .. }), "{err}");
    // Repeated ids in one batch and bad type names are refused before the database.
    let e = event(1);
    let err = store
        .append(&s, ExpectedVersion::Any, &[e.clone(), e])
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::RepeatedEventIdInBatch { .. }),
        "{err}"
    );
    let mut bad = event(1);
    bad.event_type = String::new();
    assert!(matches!(
        store.append(&s, ExpectedVersion::Any, &[bad]).await,
        Err(StoreError::InvalidEventType { .. })
    ));
    assert_eq!(store.stream_version(&s).await.unwrap(), 3);
    assert_eq!(store.read_all(&ReadAll::after(0)).await.unwrap().len(), 3);
}

#[tokio::test]
async fn concurrent_copies_of_one_append_store_it_once() {
    let store = store().await;
    for round in 0..5 {
        let s = stream(&format!("race-{round}"));
        let batch = events(3);
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let (store, s, batch) = (store.clone(), s.clone(), batch.clone());
                let expected = if i % 2 == 0 {
                    ExpectedVersion::Any
                } else {
                    ExpectedVersion::NoStream
                };
                tokio::spawn(async move { store.append(&s, expected, &batch).await })
            })
            .collect();
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.unwrap().unwrap());
        }
        assert_eq!(results.iter().filter(|r| !r.replayed).count(), 1);
        assert!(
            results
                .iter()
                .all(|r| r.version == 3 && r.first_position == results[0].first_position)
        );
        assert_eq!(
            store
                .read_stream(&s, &StreamRead::all())
                .await
                .unwrap()
                .len(),
            3
        );
    }
}

#[tokio::test]
async fn an_id_reused_concurrently_in_two_streams_is_a_duplicate() {
    // The second writer passes the early check and hits the unique index (SQLSTATE 23505).
    let store = store().await;
    for round in 0..10 {
        let shared = event(round);
        let mut other = shared.clone();
        other.payload = Payload::encode(&serde_json::json!({"other": round})).unwrap();
        let (sa, sb) = (stream(&format!("a{round}")), stream(&format!("b{round}")));
        let (ea, eb) = ([shared], [other]);
        let (a, b) = tokio::join!(
            store.append(&sa, ExpectedVersion::Any, &ea),
            store.append(&sb, ExpectedVersion::Any, &eb),
        );
        let outcomes = [a, b];
        assert_eq!(outcomes.iter().filter(|r| r.is_ok()).count(), 1);
        assert!(
            outcomes
                .iter()
                .any(|r| matches!(r, Err(StoreError::DuplicateEventId { .. })))
        );
    }
}

/// Writers that each append one event to the same stream, reloading the version after every
/// conflict, until each has appended `per_writer` events.
/// Runs `writers` tasks appending `per_writer` events each to `s` with the version they
/// read; returns how many conflicts they met. Every writer reads the version before any
/// appends, so all but one lose the first race: at least `writers - 1` conflicts. Each
/// conflict names the stream, the version the writer expected and a later actual version.
async fn race_on_one_stream(
    store: &factum_postgres::PgStore,
    writers: u64,
    per_writer: u64,
    s: &factum::StreamId,
) -> u64 {
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(writers as usize));
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let (store, s, start) = (store.clone(), s.clone(), start.clone());
            tokio::spawn(async move {
                let mut done = 0;
                let mut conflicts = 0u64;
                let mut first = true;
                while done < per_writer {
                    let version = store.stream_version(&s).await.unwrap();
                    if std::mem::take(&mut first) {
                        start.wait().await;
                    }
                    match store
                        .append(
                            &s,
                            ExpectedVersion::Exact(version),
                            &[event(w * 1000 + done)],
                        )
                        .await
                    {
                        Ok(r) => {
                            assert_eq!(r.version, version + 1);
                            done += 1;
                        }
                        Err(StoreError::WrongExpectedVersion {
                            stream,
                            expected,
                            actual,
                        }) => {
                            assert_eq!(stream, s);
                            assert_eq!(expected, ExpectedVersion::Exact(version));
                            assert!(actual > version, "actual {actual} after {version}");
                            assert!(actual <= writers * per_writer);
                            conflicts += 1;
                        }
                        Err(other) => panic!("unexpected error: {other}"),
                    }
                }
                conflicts
            })
        })
        .collect();
    let mut conflicts = 0;
    for task in tasks {
        conflicts += task.await.unwrap();
    }
    conflicts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_writers_on_one_stream_keep_versions_gapless() {
    let store = fresh_store_with(PgConfig::default().pool_size(64))
        .await
        .unwrap();
    for round in 0..3 {
        let s = stream(&format!("hot-{round}"));
        let conflicts = race_on_one_stream(&store, 64, 2, &s).await;
        assert!(
            conflicts >= 63,
            "round {round}: {conflicts} conflicts among 64 writers"
        );
        let read = store.read_stream(&s, &StreamRead::all()).await.unwrap();
        assert_eq!(read.len(), 128);
        for (i, e) in read.iter().enumerate() {
            assert_eq!(e.stream_version, i as u64 + 1);
        }
        assert!(read.windows(2).all(|w| w[0].position < w[1].position));
    }
    let all = store
        .read_all(&ReadAll::after(0).limit(10_000))
        .await
        .unwrap();
    assert_eq!(all.len(), 3 * 128);
    assert!(all.windows(2).all(|w| w[0].position < w[1].position));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serialization_failures_surface_as_typed_conflicts() {
    // Under SERIALIZABLE, concurrent writers fail with SQLSTATE 40001: a conflict or an
    // internal retry, never a backend error.
    let url = url().await;
    let url = format!(
        "{url}{}options=-c%20default_transaction_isolation%3Dserializable",
        if url.contains('?') { "&" } else { "?" }
    );
    let store = fresh_store_with(PgConfig::default().pool_size(16))
        .await
        .unwrap();
    let serializable = factum_postgres::PgStore::connect_with(
        &url,
        PgConfig::default()
            .schema(store.config().schema.as_str())
            .unwrap()
            .pool_size(16),
    )
    .await
    .unwrap();
    let client = serializable.pool().get().await.unwrap();
    let level: String = client
        .query_one("SHOW transaction_isolation", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(level, "serializable");
    drop(client);
    let s = stream("serial");
    let conflicts = race_on_one_stream(&serializable, 16, 3, &s).await;
    assert!(conflicts >= 15, "{conflicts} conflicts among 16 writers");
    assert_eq!(serializable.stream_version(&s).await.unwrap(), 48);
}

/// Rows of the command log.
async fn command_log_rows(store: &factum_postgres::PgStore) -> i64 {
    raw_client()
        .await
        .query_one(
            &format!("SELECT count(*) FROM {}.command_log", schema(store)),
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// Only caller-given command ids are idempotency keys: appends without one, and commands
/// executed without one, cost no command-log row.
#[tokio::test]
async fn only_appends_with_a_command_id_claim_it() {
    let store = store().await;
    store
        .append(&stream("1"), ExpectedVersion::NoStream, &events(1))
        .await
        .unwrap();
    store
        .append(&stream("2"), ExpectedVersion::NoStream, &events(3))
        .await
        .unwrap();
    let repo = Repository::<Counter, _>::new(store.clone());
    repo.execute_on("c-1", Increment { by: 1 }, Metadata::new())
        .await
        .unwrap();
    assert_eq!(command_log_rows(&store).await, 0);

    let keyed = |n| {
        let command_id = Uuid::now_v7();
        let events: Vec<_> = events(n)
            .into_iter()
            .map(|mut e| {
                e.metadata.command_id = Some(command_id);
                e
            })
            .collect();
        events
    };
    store
        .append(&stream("3"), ExpectedVersion::NoStream, &keyed(1))
        .await
        .unwrap();
    store
        .append(&stream("4"), ExpectedVersion::NoStream, &keyed(3))
        .await
        .unwrap();
    repo.execute_on(
        "c-1",
        Increment { by: 1 },
        Metadata::new().command_id(Uuid::now_v7()),
    )
    .await
    .unwrap();
    assert_eq!(command_log_rows(&store).await, 3);
}
