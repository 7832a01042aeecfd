//! A reader following global positions never skips or reorders a committed event.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use factum::store::ReadAll;
use factum::{EventStore, ExpectedVersion, RecordedEvent};
use factum_postgres::PgStore;
use factum_postgres::testing::OpenTransaction;
use uuid::Uuid;

/// The tests of this file hold transactions open, which holds back every reader of the
/// cluster: they run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Opens a transaction on a raw connection that calls the store's append function and
/// stays open: it holds its positions until the caller commits or rolls back.
async fn open_append(
    store: &PgStore,
    client: &tokio_postgres::Client,
    stream: &str,
) -> (u64, Uuid) {
    let id = Uuid::now_v7();
    client.batch_execute("BEGIN").await.unwrap();
    let row = client
        .query_one(
            &format!(
                "SELECT status, version, first_position FROM {}.append($1, -1, $2, $3, $4, $5, $6)",
                schema(store)
            ),
            &[
                &stream,
                &vec![id],
                &vec!["Slow"],
                &vec![1i32],
                &vec![r#"{"slow":true}"#],
                &vec!["{}"],
            ],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 0);
    let position: i64 = row.get(2);
    (u64::try_from(position).unwrap(), id)
}

fn positions(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.position).collect()
}

async fn hard_case(commit: bool) {
    let _serial = SERIAL.lock().await;
    let store = store().await;
    let before = store
        .append(&stream("early"), ExpectedVersion::Any, &events(2))
        .await
        .unwrap();
    let slow = raw_client().await;
    let (p, slow_id) = open_append(&store, &slow, "order-slow").await;
    assert!(p > before.last_position);

    // p + 1 commits while p is still open.
    let fast = store
        .append(&stream("fast"), ExpectedVersion::Any, &events(1))
        .await
        .unwrap();
    assert!(fast.first_position > p);

    // The reader must not pass p: it sees only what lies below it, however often it asks.
    for _ in 0..3 {
        let read = store.read_all(&ReadAll::after(0)).await.unwrap();
        assert_eq!(
            positions(&read),
            [before.first_position, before.last_position]
        );
        assert_eq!(store.head_position().await.unwrap(), before.last_position);
        let tail = store
            .read_all(&ReadAll::after(before.last_position))
            .await
            .unwrap();
        assert!(
            tail.is_empty(),
            "read past an open position: {:?}",
            positions(&tail)
        );
    }
    // The committed event is there by id and by stream: only the global order waits.
    assert_eq!(
        store
            .read_stream(&stream("fast"), &factum::store::StreamRead::all())
            .await
            .unwrap()
            .len(),
        1
    );

    slow.batch_execute(if commit { "COMMIT" } else { "ROLLBACK" })
        .await
        .unwrap();

    let tail = store
        .read_all(&ReadAll::after(before.last_position))
        .await
        .unwrap();
    if commit {
        assert_eq!(positions(&tail), [p, fast.first_position]);
        assert_eq!(tail[0].event_id, slow_id);
    } else {
        // The gap left by the rollback does not stall the reader.
        assert_eq!(positions(&tail), [fast.first_position]);
        assert!(store.event_by_id(slow_id).await.unwrap().is_none());
    }
    assert_eq!(store.head_position().await.unwrap(), fast.last_position);
}

#[tokio::test]
async fn reader_waits_for_an_open_position_then_delivers_in_order() {
    hard_case(true).await;
}

#[tokio::test]
async fn reader_passes_a_rolled_back_position() {
    hard_case(false).await;
}

#[tokio::test]
async fn a_filtered_reader_waits_too() {
    let _serial = SERIAL.lock().await;
    let store = store().await;
    let slow = raw_client().await;
    let (p, _) = open_append(&store, &slow, "order-slow").await;
    store
        .append(&stream("fast"), ExpectedVersion::Any, &events(1))
        .await
        .unwrap();
    let filtered = ReadAll::after(0)
        .categories(["order"])
        .event_types(["Happened", "Slow"]);
    assert!(store.read_all(&filtered).await.unwrap().is_empty());
    slow.batch_execute("COMMIT").await.unwrap();
    let read = store.read_all(&filtered).await.unwrap();
    assert_eq!(read.len(), 2);
    assert_eq!(read[0].position, p);
}

/// A partition's reader, through its index, does not pass an open position either, whether
/// the open append is in its partition or not, and skips none of its events once it commits.
#[tokio::test]
async fn a_partition_reader_waits_too() {
    use factum::coordination::partition_of;
    use factum::store::StreamPartition;
    let _serial = SERIAL.lock().await;
    let store = store().await;
    store.create_partition_index(2).await.unwrap();
    // Stream names of each partition of 2: the open one, one more in its partition, one in
    // the other.
    let named = |partition: u32, skip: usize| {
        (0..)
            .map(|i| format!("p{i}"))
            .filter(|id| partition_of(&format!("order-{id}"), 2) == partition)
            .nth(skip)
            .unwrap()
    };
    let (open_id, same_id, other_id) = (named(0, 0), named(0, 1), named(1, 0));
    let slow = raw_client().await;
    let (p, slow_id) = open_append(&store, &slow, &format!("order-{open_id}")).await;
    let same = store
        .append(&stream(&same_id), ExpectedVersion::Any, &events(1))
        .await
        .unwrap();
    let other = store
        .append(&stream(&other_id), ExpectedVersion::Any, &events(1))
        .await
        .unwrap();
    assert!(same.first_position > p && other.first_position > p);
    let partition = |index| ReadAll::after(0).partition(StreamPartition::new(index, 2).unwrap());
    for _ in 0..3 {
        for index in 0..2 {
            let read = store.read_all(&partition(index)).await.unwrap();
            assert!(
                read.is_empty(),
                "partition {index} read past an open position: {:?}",
                positions(&read)
            );
        }
    }
    slow.batch_execute("COMMIT").await.unwrap();
    let mine = store.read_all(&partition(0)).await.unwrap();
    assert_eq!(positions(&mine), [p, same.first_position]);
    assert_eq!(mine[0].event_id, slow_id);
    let theirs = store.read_all(&partition(1)).await.unwrap();
    assert_eq!(positions(&theirs), [other.first_position]);
}

/// 4 writers × 79 events, and 2 raw writers committing 13 and 14 of their 20 appends.
const EXPECTED: usize = 4 * 79 + 13 + 14;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_following_reader_sees_every_commit_once_in_order() {
    let _serial = SERIAL.lock().await;
    let store = store().await;
    let mut writers = Vec::new();
    for w in 0..4 {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..40 {
                let n = 1 + (i % 3);
                store
                    .append(
                        &stream(&format!("w{w}-{}", i % 5)),
                        ExpectedVersion::Any,
                        &events(n),
                    )
                    .await
                    .unwrap();
            }
        }));
    }
    for w in 0..2 {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            let client = raw_client().await;
            for i in 0..20u64 {
                open_append(&store, &client, &format!("order-raw{w}")).await;
                if i % 4 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let end = if (i + w) % 3 == 0 {
                    "ROLLBACK"
                } else {
                    "COMMIT"
                };
                client.batch_execute(end).await.unwrap();
            }
        }));
    }
    let reader = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut seen: Vec<RecordedEvent> = Vec::new();
            let mut after = 0;
            for _ in 0..20_000 {
                let batch = store
                    .read_all(&ReadAll::after(after).limit(7))
                    .await
                    .unwrap();
                if let Some(last) = batch.last() {
                    after = last.position;
                }
                seen.extend(batch);
                if seen.len() >= EXPECTED {
                    break;
                }
                tokio::task::yield_now().await;
            }
            seen
        })
    };
    for writer in writers {
        writer.await.unwrap();
    }
    let mut seen = reader.await.unwrap();
    // Catch up with whatever the reader had not reached yet.
    loop {
        let after = seen.last().map_or(0, |e| e.position);
        let batch = store.read_all(&ReadAll::after(after)).await.unwrap();
        if batch.is_empty() {
            break;
        }
        seen.extend(batch);
    }
    assert!(seen.windows(2).all(|w| w[0].position < w[1].position));
    let all = store
        .read_all(&ReadAll::after(0).limit(100_000))
        .await
        .unwrap();
    assert_eq!(
        positions(&seen),
        positions(&all),
        "the follower skipped or reordered"
    );
    let ids: HashSet<Uuid> = seen.iter().map(|e| e.event_id).collect();
    assert_eq!(ids.len(), seen.len());
    assert_eq!(seen.len(), EXPECTED);
}

#[tokio::test]
async fn several_appends_in_one_transaction_get_consecutive_positions() {
    let _serial = SERIAL.lock().await;
    let store = store().await;
    let client = raw_client().await;
    let (first, _) = open_append(&store, &client, "order-tx1").await;
    let row = client
        .query_one(
            &format!(
                "SELECT status, version, first_position FROM {}.append($1, 0, $2, $3, $4, $5, $6)",
                schema(&store)
            ),
            &[
                &"order-tx2",
                &vec![Uuid::now_v7(), Uuid::now_v7()],
                &vec!["A", "B"],
                &vec![1i32, 1],
                &vec!["{}", "{}"],
                &vec!["{}", "{}"],
            ],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 0);
    assert_eq!(row.get::<_, i64>(2), i64::try_from(first).unwrap() + 1);
    client.batch_execute("COMMIT").await.unwrap();
    let read = store.read_all(&ReadAll::after(0)).await.unwrap();
    assert_eq!(positions(&read), [first, first + 1, first + 2]);
    assert_eq!(read[1].stream_version, 1);
    assert_eq!(read[2].stream_version, 2);
}

/// A transaction in another database of the cluster cannot write the events table: one left
/// idle in transaction with a transaction id holds no reader back.
#[tokio::test]
async fn a_transaction_in_another_database_holds_no_reader_back() {
    let _serial = SERIAL.lock().await;
    let store = store().await;
    let (database, other) = other_database().await;
    other
        .batch_execute("BEGIN; SELECT pg_current_xact_id();")
        .await
        .unwrap();

    let appended = store
        .append(&stream("after-foreign"), ExpectedVersion::Any, &events(2))
        .await
        .unwrap();
    let read = store.read_all(&ReadAll::after(0)).await.unwrap();
    assert_eq!(
        positions(&read),
        [appended.first_position, appended.last_position],
        "an idle transaction in another database held the reader back"
    );
    assert_eq!(store.head_position().await.unwrap(), appended.last_position);
    let head = store.head_status().await.unwrap();
    assert!(!head.is_held_back(), "{head:?}");

    other.batch_execute("COMMIT").await.unwrap();
    drop(other);
    drop_database(&database).await;
}

/// A transaction of this database that may still write holds the readable head back, and the
/// head status names its session; once it commits, everything is read in order.
#[tokio::test]
async fn an_open_transaction_of_this_database_is_named_while_it_holds_the_head_back() {
    let _serial = SERIAL.lock().await;
    let store = store().await;
    let before = store
        .append(&stream("before"), ExpectedVersion::Any, &events(1))
        .await
        .unwrap();
    let idle = OpenTransaction::begin(&url().await, "stalling-session")
        .await
        .unwrap();

    let during = store
        .append(&stream("during"), ExpectedVersion::Any, &events(2))
        .await
        .unwrap();
    let head = store.head_status().await.unwrap();
    assert_eq!(head.readable, before.last_position, "{head:?}");
    assert_eq!(head.committed, during.last_position, "{head:?}");
    let blocker = head.held_back_by.expect("the blocking session is named");
    assert_eq!(blocker.pid, Some(idle.pid()));
    assert_eq!(
        blocker.application_name.as_deref(),
        Some("stalling-session")
    );
    assert_eq!(blocker.state.as_deref(), Some("idle in transaction"));
    assert!(blocker.transaction_age.is_some());
    assert_eq!(
        positions(&store.read_all(&ReadAll::after(0)).await.unwrap()),
        [before.first_position]
    );

    idle.commit().await.unwrap();
    let head = store.head_status().await.unwrap();
    assert_eq!(
        head,
        factum::store::HeadStatus::settled(during.last_position)
    );
    assert_eq!(
        positions(&store.read_all(&ReadAll::after(0)).await.unwrap()),
        [
            before.first_position,
            during.first_position,
            during.last_position
        ]
    );
}
