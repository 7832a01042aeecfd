//! The conformance cases. Each takes a fresh, empty store and panics on a violation.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use chrono::Utc;
use serde_json::json;
use uuid::Uuid;

use super::counter::{Counter, CounterError, Increment, Incremented};
use super::tab::{Open, Paid, Pay, Tab, TabError};
use crate::aggregate::Aggregate;
use crate::command_log::{CommandOutcome, CommandRecord};
use crate::error::{DecodeError, Error, StoreError};
use crate::event::{NewEvent, Payload, RecordedEvent};
use crate::metadata::Metadata;
use crate::repository::{AsOf, Repository};
use crate::store::{EventStore, ReadAll, Snapshot, StreamRead};
use crate::stream::{ExpectedVersion, StreamId};

fn stream(name: &str) -> StreamId {
    StreamId::parse(name).expect("valid stream name")
}

/// A new event of type `event_type` with payload `{"n": n}`.
pub fn event(event_type: &str, n: u64) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: event_type.to_owned(),
        schema_version: 1,
        payload: Payload::encode(&json!({ "n": n })).expect("json"),
        metadata: Metadata::new(),
    }
}

fn events(n: u64) -> Vec<NewEvent> {
    (1..=n).map(|i| event("Tested", i)).collect()
}

async fn versions<S: EventStore>(store: &S, s: &StreamId) -> Vec<u64> {
    store
        .read_stream(s, &StreamRead::all())
        .await
        .expect("read stream")
        .iter()
        .map(|e| e.stream_version)
        .collect()
}

async fn read_everything<S: EventStore>(store: &S, batch: usize) -> Vec<RecordedEvent> {
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let page = store
            .read_all(&ReadAll::after(after).limit(batch))
            .await
            .expect("read all");
        let Some(last) = page.last() else { break };
        after = last.position;
        all.extend(page);
    }
    all
}

#[track_caller]
fn assert_wrong_version(
    result: Result<crate::store::AppendResult, StoreError>,
    expected: ExpectedVersion,
    actual: u64,
) {
    match result {
        Err(StoreError::WrongExpectedVersion {
            expected: e,
            actual: a,
            ..
        }) => {
            assert_eq!(e, expected, "the conflict reports the expected version");
            assert_eq!(a, actual, "the conflict reports the actual version");
        }
        other => panic!("expected WrongExpectedVersion, got {other:?}"),
    }
}

/// Versions start at 1, are gapless, and the result says what was stored.
pub async fn append_to_new_stream<S: EventStore>(store: S) {
    let s = stream("order-1");
    let r = store
        .append(&s, ExpectedVersion::NoStream, &events(3))
        .await
        .expect("append");
    assert_eq!((r.first_version, r.version), (1, 3));
    assert!(r.first_position >= 1 && r.last_position > r.first_position);
    let r2 = store
        .append(&s, ExpectedVersion::Exact(3), &events(2))
        .await
        .expect("append");
    assert_eq!((r2.first_version, r2.version), (4, 5));
    assert!(r2.first_position > r.last_position);
    assert_eq!(versions(&store, &s).await, [1, 2, 3, 4, 5]);
    assert_eq!(store.stream_version(&s).await.expect("version"), 5);
}

/// `NoStream` succeeds once and then reports the actual version.
pub async fn expected_version_no_stream<S: EventStore>(store: S) {
    let s = stream("order-1");
    store
        .append(&s, ExpectedVersion::NoStream, &events(2))
        .await
        .expect("first append");
    let again = store
        .append(&s, ExpectedVersion::NoStream, &events(1))
        .await;
    assert_wrong_version(again, ExpectedVersion::NoStream, 2);
    assert_eq!(versions(&store, &s).await, [1, 2]);
    store
        .append(&stream("order-2"), ExpectedVersion::Exact(0), &events(1))
        .await
        .expect("Exact(0) on a new stream");
}

/// `Exact(n)` must match the current version, and a conflict carries both versions.
pub async fn expected_version_exact<S: EventStore>(store: S) {
    let s = stream("order-1");
    let first = store
        .append(&s, ExpectedVersion::Exact(1), &events(1))
        .await;
    assert_wrong_version(first, ExpectedVersion::Exact(1), 0);
    store
        .append(&s, ExpectedVersion::Exact(0), &events(2))
        .await
        .expect("append");
    let stale = store
        .append(&s, ExpectedVersion::Exact(1), &events(1))
        .await;
    assert_wrong_version(stale, ExpectedVersion::Exact(1), 2);
    let ahead = store
        .append(&s, ExpectedVersion::Exact(7), &events(1))
        .await;
    assert_wrong_version(ahead, ExpectedVersion::Exact(7), 2);
    store
        .append(&s, ExpectedVersion::Exact(2), &events(1))
        .await
        .expect("append at the right version");
    assert_eq!(versions(&store, &s).await, [1, 2, 3]);
}

/// `StreamExists` needs at least one event.
pub async fn expected_version_stream_exists<S: EventStore>(store: S) {
    let s = stream("order-1");
    let missing = store
        .append(&s, ExpectedVersion::StreamExists, &events(1))
        .await;
    assert_wrong_version(missing, ExpectedVersion::StreamExists, 0);
    assert_eq!(store.stream_version(&s).await.expect("version"), 0);
    store
        .append(&s, ExpectedVersion::Any, &events(1))
        .await
        .expect("append");
    store
        .append(&s, ExpectedVersion::StreamExists, &events(1))
        .await
        .expect("append to an existing stream");
    assert_eq!(versions(&store, &s).await, [1, 2]);
}

/// `Any` appends whatever the version.
pub async fn expected_version_any<S: EventStore>(store: S) {
    let s = stream("order-1");
    for _ in 0..3 {
        store
            .append(&s, ExpectedVersion::Any, &events(2))
            .await
            .expect("append");
    }
    assert_eq!(versions(&store, &s).await, [1, 2, 3, 4, 5, 6]);
}

/// An empty append stores nothing but still checks the expected version.
pub async fn empty_append_checks_expected_version<S: EventStore>(store: S) {
    let s = stream("order-1");
    let r = store
        .append(&s, ExpectedVersion::NoStream, &[])
        .await
        .expect("empty append");
    assert_eq!((r.version, r.first_version, r.last_position), (0, 1, 0));
    let missing = store.append(&s, ExpectedVersion::StreamExists, &[]).await;
    assert_wrong_version(missing, ExpectedVersion::StreamExists, 0);
    assert_eq!(store.head_position().await.expect("head"), 0);
}

/// A batch that fails stores none of its events.
pub async fn append_is_all_or_nothing<S: EventStore>(store: S) {
    let s = stream("order-1");
    let mut batch = events(3);
    batch[2].event_id = batch[0].event_id;
    match store.append(&s, ExpectedVersion::Any, &batch).await {
        Err(StoreError::RepeatedEventIdInBatch { event_id, .. }) => {
            assert_eq!(event_id, batch[0].event_id);
        }
        other => panic!("expected RepeatedEventIdInBatch, got {other:?}"),
    }
    assert!(versions(&store, &s).await.is_empty());

    let stored = events(1);
    store
        .append(&stream("order-2"), ExpectedVersion::Any, &stored)
        .await
        .expect("append");
    let mut clashing = events(3);
    clashing[1].event_id = stored[0].event_id;
    assert!(
        store
            .append(&s, ExpectedVersion::Any, &clashing)
            .await
            .is_err(),
        "a batch reusing a stored id must fail"
    );
    assert!(
        versions(&store, &s).await.is_empty(),
        "nothing of it is stored"
    );
    assert_eq!(read_everything(&store, 100).await.len(), 1);
}

/// Appending the same ids and content again returns the original result and stores nothing.
pub async fn idempotent_retry<S: EventStore>(store: S) {
    let s = stream("order-1");
    store
        .append(&s, ExpectedVersion::NoStream, &events(1))
        .await
        .expect("append");
    let batch = events(2);
    let first = store
        .append(&s, ExpectedVersion::Exact(1), &batch)
        .await
        .expect("append");
    assert!(!first.replayed);
    let retry = store
        .append(&s, ExpectedVersion::Exact(1), &batch)
        .await
        .expect("retry with the original expected version");
    assert!(retry.replayed, "a retry says it stored nothing");
    assert_eq!(
        (
            retry.version,
            retry.first_version,
            retry.first_position,
            retry.last_position
        ),
        (
            first.version,
            first.first_version,
            first.first_position,
            first.last_position
        )
    );
    let retry_any = store
        .append(&s, ExpectedVersion::Any, &batch)
        .await
        .expect("retry with Any");
    assert_eq!(retry_any, retry);
    assert_eq!(versions(&store, &s).await, [1, 2, 3]);
    assert_eq!(read_everything(&store, 100).await.len(), 3);
}

/// A stored id with other content is a distinct error, and nothing is stored.
pub async fn reused_id_with_other_content<S: EventStore>(store: S) {
    let s = stream("order-1");
    let batch = events(1);
    store
        .append(&s, ExpectedVersion::NoStream, &batch)
        .await
        .expect("append");
    let mut other = batch.clone();
    other[0].payload = Payload::encode(&json!({ "n": 999 })).expect("json");
    match store.append(&s, ExpectedVersion::Any, &other).await {
        Err(StoreError::DuplicateEventId { event_id, stream }) => {
            assert_eq!(event_id, batch[0].event_id);
            assert_eq!(stream, s);
        }
        other => panic!("expected DuplicateEventId, got {other:?}"),
    }
    let mut renamed = batch.clone();
    renamed[0].event_type = "Other".into();
    assert!(matches!(
        store.append(&s, ExpectedVersion::Any, &renamed).await,
        Err(StoreError::DuplicateEventId { .. })
    ));
    assert_eq!(versions(&store, &s).await, [1]);
}

/// A stored id reused in another stream is a duplicate, not a retry.
pub async fn reused_id_in_other_stream<S: EventStore>(store: S) {
    let batch = events(1);
    store
        .append(&stream("order-1"), ExpectedVersion::Any, &batch)
        .await
        .expect("append");
    assert!(matches!(
        store
            .append(&stream("order-2"), ExpectedVersion::Any, &batch)
            .await,
        Err(StoreError::DuplicateEventId { .. })
    ));
    assert!(versions(&store, &stream("order-2")).await.is_empty());
}

/// A batch mixing stored ids and new ones is not a retry.
pub async fn partially_repeated_batch<S: EventStore>(store: S) {
    let s = stream("order-1");
    let batch = events(2);
    store
        .append(&s, ExpectedVersion::NoStream, &batch)
        .await
        .expect("append");
    let mut mixed = batch.clone();
    mixed.push(event("Tested", 3));
    assert!(matches!(
        store.append(&s, ExpectedVersion::Any, &mixed).await,
        Err(StoreError::DuplicateEventId { .. })
    ));
    assert_eq!(versions(&store, &s).await, [1, 2]);
}

/// Empty or overlong type names are refused.
pub async fn invalid_event_type<S: EventStore>(store: S) {
    let s = stream("order-1");
    for bad in [String::new(), "x".repeat(256)] {
        let mut batch = events(1);
        batch[0].event_type = bad;
        assert!(matches!(
            store.append(&s, ExpectedVersion::Any, &batch).await,
            Err(StoreError::InvalidEventType { .. })
        ));
    }
    assert!(versions(&store, &s).await.is_empty());
}

/// Every field of the envelope comes back as written.
pub async fn envelope_round_trip<S: EventStore>(store: S) {
    let s = stream("order-o-1");
    let correlation = Uuid::now_v7();
    let metadata = Metadata::new()
        .command_id(Uuid::now_v7())
        .correlation_id(correlation)
        .causation_id(Uuid::now_v7())
        .actor("alice")
        .tenant("acme")
        .with("ip", "10.0.0.1")
        .with("nested", json!({"a": [1, 2, {"b": null}]}));
    let payload = json!({
        "order_id": "o-1",
        "lines": [{"sku": "é✓", "qty": 2, "price": 12.5}],
        "note": "quote \" and \\ backslash",
        "big": 9_007_199_254_740_993_u64,
    });
    let new = NewEvent {
        event_id: Uuid::now_v7(),
        event_type: "OrderPlaced".into(),
        schema_version: 3,
        payload: Payload::encode(&payload).expect("json"),
        metadata: metadata.clone(),
    };
    let before = Utc::now() - chrono::Duration::seconds(5);
    store
        .append(&s, ExpectedVersion::NoStream, std::slice::from_ref(&new))
        .await
        .expect("append");
    let read = store
        .read_stream(&s, &StreamRead::all())
        .await
        .expect("read");
    assert_eq!(read.len(), 1);
    let e = &read[0];
    assert_eq!(e.event_id, new.event_id);
    assert_eq!(e.stream_id, s);
    assert_eq!(e.stream_id.category(), "order");
    assert_eq!(e.stream_version, 1);
    assert!(e.position >= 1);
    assert_eq!(e.event_type, "OrderPlaced");
    assert_eq!(e.schema_version, 3);
    assert_eq!(e.payload.to_value().expect("payload"), payload);
    assert_eq!(e.metadata, metadata);
    assert!(e.recorded_at >= before && e.recorded_at <= Utc::now() + chrono::Duration::seconds(5));
    let via_all = read_everything(&store, 10).await;
    assert_eq!(via_all, read);
}

/// Stream reads honour from, to and limit.
pub async fn read_stream_ranges<S: EventStore>(store: S) {
    let s = stream("order-1");
    store
        .append(&s, ExpectedVersion::NoStream, &events(10))
        .await
        .expect("append");
    store
        .append(&stream("order-2"), ExpectedVersion::NoStream, &events(3))
        .await
        .expect("append");
    let got = |read: StreamRead| {
        let store = store.clone();
        let s = s.clone();
        async move {
            store
                .read_stream(&s, &read)
                .await
                .expect("read")
                .iter()
                .map(|e| e.stream_version)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(got(StreamRead::from_version(8)).await, [8, 9, 10]);
    assert_eq!(got(StreamRead::all().to_version(3)).await, [1, 2, 3]);
    assert_eq!(
        got(StreamRead::from_version(4).to_version(6)).await,
        [4, 5, 6]
    );
    assert_eq!(got(StreamRead::from_version(2).limit(2)).await, [2, 3]);
    assert!(got(StreamRead::from_version(11)).await.is_empty());
    assert!(
        got(StreamRead::from_version(5).to_version(4))
            .await
            .is_empty()
    );
    let payloads: Vec<u64> = store
        .read_stream(&s, &StreamRead::from_version(9))
        .await
        .expect("read")
        .iter()
        .map(|e| {
            e.payload.to_value().expect("payload")["n"]
                .as_u64()
                .unwrap_or(0)
        })
        .collect();
    assert_eq!(payloads, [9, 10]);
}

/// The replay read returns the same events as the full read, for every kind of bound.
pub async fn replay_stream_matches_read_stream<S: EventStore>(store: S) {
    let s = stream("order-1");
    store
        .append(&s, ExpectedVersion::NoStream, &events(6))
        .await
        .expect("append");
    store
        .append(&stream("order-2"), ExpectedVersion::NoStream, &events(2))
        .await
        .expect("append");
    let cut = store
        .read_stream(&s, &StreamRead::all())
        .await
        .expect("read")[3]
        .recorded_at;
    for read in [
        StreamRead::all(),
        StreamRead::from_version(3),
        StreamRead::from_version(2).to_version(4),
        StreamRead::all().limit(2),
        StreamRead::all().until(cut),
        StreamRead::from_version(9),
    ] {
        let full: Vec<crate::store::ReplayEvent> = store
            .read_stream(&s, &read)
            .await
            .expect("read")
            .into_iter()
            .map(Into::into)
            .collect();
        let replay = store.replay_stream(&s, &read).await.expect("replay");
        assert_eq!(replay, full, "{read:?}");
    }
    assert!(
        store
            .replay_stream(&stream("order-none"), &StreamRead::all())
            .await
            .expect("replay")
            .is_empty()
    );
}

/// Stream reads stop at a time.
pub async fn read_stream_until_time<S: EventStore>(store: S) {
    let s = stream("order-1");
    store
        .append(&s, ExpectedVersion::NoStream, &events(2))
        .await
        .expect("append");
    let recorded = store
        .read_stream(&s, &StreamRead::all())
        .await
        .expect("read");
    let cut = recorded[1].recorded_at;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    store
        .append(&s, ExpectedVersion::Exact(2), &events(2))
        .await
        .expect("append");
    let until = store
        .read_stream(&s, &StreamRead::all().until(cut))
        .await
        .expect("read");
    assert_eq!(
        until.iter().map(|e| e.stream_version).collect::<Vec<_>>(),
        [1, 2]
    );
    let before_all = store
        .read_stream(
            &s,
            &StreamRead::all().until(recorded[0].recorded_at - chrono::Duration::seconds(60)),
        )
        .await
        .expect("read");
    assert!(before_all.is_empty());
}

/// A stream with no events reads as empty, at version 0.
pub async fn read_missing_stream<S: EventStore>(store: S) {
    let s = stream("order-none");
    assert!(versions(&store, &s).await.is_empty());
    assert_eq!(store.stream_version(&s).await.expect("version"), 0);
    assert!(
        store
            .load_snapshot(&s, 1, None)
            .await
            .expect("snapshot")
            .is_none()
    );
}

/// `read_all` returns every event once, in increasing position, in batches.
pub async fn read_all_in_order_and_batches<S: EventStore>(store: S) {
    for i in 0..5 {
        for s in ["order-a", "payment-b", "order-c"] {
            store
                .append(&stream(s), ExpectedVersion::Any, &events(i % 3 + 1))
                .await
                .expect("append");
        }
    }
    let everything = read_everything(&store, 1000).await;
    let batched = read_everything(&store, 4).await;
    assert_eq!(everything.len(), 27);
    assert_eq!(everything, batched);
    assert!(everything.windows(2).all(|w| w[0].position < w[1].position));
    let ids: BTreeSet<Uuid> = everything.iter().map(|e| e.event_id).collect();
    assert_eq!(ids.len(), 27);
    let mut per_stream: HashMap<&str, Vec<u64>> = HashMap::new();
    for e in &everything {
        per_stream
            .entry(e.stream_id.as_str())
            .or_default()
            .push(e.stream_version);
    }
    for v in per_stream.values() {
        assert_eq!(
            *v,
            (1..=v.len() as u64).collect::<Vec<_>>(),
            "ordered per stream"
        );
    }
    let last = everything.last().expect("events").position;
    assert_eq!(store.head_position().await.expect("head"), last);
    assert!(
        store
            .read_all(&ReadAll::after(last))
            .await
            .expect("read")
            .is_empty()
    );
    let middle = everything[14].position;
    let rest = store.read_all(&ReadAll::after(middle)).await.expect("read");
    assert_eq!(rest, everything[15..]);
}

/// `read_all` of partition p of N returns exactly the events of the streams
/// [`partition_of`](crate::coordination::partition_of) puts in p, in global order, in
/// batches that resume where the last one stopped; the N partitions together are the log,
/// once. The stream ids include non-ASCII ones, hashed as their UTF-8 bytes.
pub async fn read_all_partitions<S: EventStore>(store: S) {
    use crate::coordination::partition_of;
    use crate::store::StreamPartition;
    let names: Vec<String> = (0..24)
        .map(|i| match i % 4 {
            0 => format!("order-{i}"),
            1 => format!("payment-{i}"),
            2 => format!("order-é{i}"),
            _ => format!("order-日本{i}🦀"),
        })
        .collect();
    for round in 0..3u64 {
        for (i, name) in names.iter().enumerate() {
            let kind = if i % 3 == 0 { "Placed" } else { "Paid" };
            store
                .append(&stream(name), ExpectedVersion::Any, &[event(kind, round)])
                .await
                .expect("append");
        }
    }
    let everything = read_everything(&store, 1000).await;
    assert_eq!(everything.len(), 72);
    let read_partition = |read: ReadAll| {
        let store = store.clone();
        async move {
            let mut out: Vec<RecordedEvent> = Vec::new();
            let mut read = read.limit(5);
            loop {
                let batch = store.read_all(&read).await.expect("read");
                let Some(last) = batch.last() else { break };
                read.after = last.position;
                out.extend(batch);
            }
            out
        }
    };
    for count in [1u32, 2, 3, 4, 7] {
        let mut union = Vec::new();
        for index in 0..count {
            let partition = StreamPartition::new(index, count).expect("partition");
            let mine = read_partition(ReadAll::after(0).partition(partition)).await;
            let expected: Vec<&RecordedEvent> = everything
                .iter()
                .filter(|e| partition_of(e.stream_id.as_str(), count) == index)
                .collect();
            assert_eq!(
                mine.iter().collect::<Vec<_>>(),
                expected,
                "partition {index} of {count}"
            );
            let paid = read_partition(
                ReadAll::after(0)
                    .partition(partition)
                    .categories(["order"])
                    .event_types(["Paid"]),
            )
            .await;
            let expected_paid: Vec<&RecordedEvent> = expected
                .iter()
                .copied()
                .filter(|e| e.event_type == "Paid" && e.stream_id.category() == "order")
                .collect();
            assert_eq!(
                paid.iter().collect::<Vec<_>>(),
                expected_paid,
                "paid orders of partition {index} of {count}"
            );
            union.extend(mine);
        }
        union.sort_by_key(|e| e.position);
        assert_eq!(union, everything, "{count} partitions read the log once");
    }
    // Several partitions are not empty, or the split proves nothing.
    let sizes: Vec<usize> = (0..4)
        .map(|p| {
            everything
                .iter()
                .filter(|e| partition_of(e.stream_id.as_str(), 4) == p)
                .count()
        })
        .collect();
    assert!(sizes.iter().filter(|&&n| n > 0).count() >= 3, "{sizes:?}");
}

/// `read_all` filters by category and event type.
pub async fn read_all_filters<S: EventStore>(store: S) {
    store
        .append(
            &stream("order-1"),
            ExpectedVersion::Any,
            &[event("OrderPlaced", 1), event("OrderShipped", 2)],
        )
        .await
        .expect("append");
    store
        .append(
            &stream("payment-1"),
            ExpectedVersion::Any,
            &[event("PaymentTaken", 3)],
        )
        .await
        .expect("append");
    store
        .append(
            &stream("order_line-1"),
            ExpectedVersion::Any,
            &[event("OrderPlaced", 4)],
        )
        .await
        .expect("append");
    let types = |read: ReadAll| {
        let store = store.clone();
        async move {
            store
                .read_all(&read)
                .await
                .expect("read")
                .iter()
                .map(|e| (e.stream_id.to_string(), e.event_type.clone()))
                .collect::<Vec<_>>()
        }
    };
    let pair = |s: &str, t: &str| (s.to_owned(), t.to_owned());
    assert_eq!(
        types(ReadAll::after(0).categories(["order"])).await,
        [
            pair("order-1", "OrderPlaced"),
            pair("order-1", "OrderShipped")
        ]
    );
    assert_eq!(
        types(ReadAll::after(0).event_types(["OrderPlaced", "PaymentTaken"])).await,
        [
            pair("order-1", "OrderPlaced"),
            pair("payment-1", "PaymentTaken"),
            pair("order_line-1", "OrderPlaced")
        ]
    );
    assert_eq!(
        types(
            ReadAll::after(0)
                .categories(["order", "order_line"])
                .event_types(["OrderPlaced"])
        )
        .await,
        [
            pair("order-1", "OrderPlaced"),
            pair("order_line-1", "OrderPlaced")
        ]
    );
    assert_eq!(
        types(ReadAll::after(0).event_types(["OrderPlaced"]).limit(1)).await,
        [pair("order-1", "OrderPlaced")]
    );
    assert!(
        types(ReadAll::after(0).categories(["nothing"]))
            .await
            .is_empty()
    );
}

/// The head position follows appends; events are found by id.
pub async fn head_position_and_event_by_id<S: EventStore>(store: S) {
    assert_eq!(store.head_position().await.expect("head"), 0);
    let batch = events(2);
    let r = store
        .append(&stream("order-1"), ExpectedVersion::Any, &batch)
        .await
        .expect("append");
    assert_eq!(store.head_position().await.expect("head"), r.last_position);
    let found = store
        .event_by_id(batch[1].event_id)
        .await
        .expect("lookup")
        .expect("stored");
    assert_eq!(found.stream_version, 2);
    assert_eq!(found.position, r.last_position);
    assert!(
        store
            .event_by_id(Uuid::now_v7())
            .await
            .expect("lookup")
            .is_none()
    );
}

/// Snapshots are keyed by stream and state schema version, and loaded at or before a version.
pub async fn snapshots<S: EventStore>(store: S) {
    let s = stream("counter-1");
    let snap = |version: u64, schema_version: u32, value: u64| Snapshot {
        stream_id: s.clone(),
        version,
        schema_version,
        state: Payload::encode(&json!({ "value": value })).expect("json"),
        taken_at: Utc::now(),
    };
    for v in [5, 10, 15] {
        store.save_snapshot(&snap(v, 1, v)).await.expect("save");
    }
    store.save_snapshot(&snap(20, 2, 20)).await.expect("save");
    let latest = store
        .load_snapshot(&s, 1, None)
        .await
        .expect("load")
        .expect("a snapshot");
    assert_eq!((latest.version, latest.schema_version), (15, 1));
    assert_eq!(latest.state, snap(15, 1, 15).state);
    let at_12 = store
        .load_snapshot(&s, 1, Some(12))
        .await
        .expect("load")
        .expect("a snapshot");
    assert_eq!(at_12.version, 10);
    assert!(
        store
            .load_snapshot(&s, 1, Some(4))
            .await
            .expect("load")
            .is_none()
    );
    assert_eq!(
        store
            .load_snapshot(&s, 2, None)
            .await
            .expect("load")
            .expect("v2")
            .version,
        20
    );
    assert!(
        store
            .load_snapshot(&s, 3, None)
            .await
            .expect("load")
            .is_none()
    );
    store
        .save_snapshot(&snap(15, 1, 99))
        .await
        .expect("replace");
    let replaced = store
        .load_snapshot(&s, 1, None)
        .await
        .expect("load")
        .expect("a snapshot");
    assert_eq!(replaced.state, snap(15, 1, 99).state);
    assert!(
        store
            .load_snapshot(&stream("counter-2"), 1, None)
            .await
            .expect("load")
            .is_none()
    );
}

/// Writers on one stream: exactly one winner per version, no gaps, no duplicates.
pub async fn concurrent_writers_one_stream<S: EventStore>(store: S) {
    const WRITERS: usize = 32;
    const APPENDS_EACH: usize = 5;
    let s = stream("order-race");
    let barrier = Arc::new(tokio::sync::Barrier::new(WRITERS));
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let (store, s, barrier) = (store.clone(), s.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let mut won = Vec::new();
            let mut conflicts = 0u32;
            while won.len() < APPENDS_EACH {
                let current = store.stream_version(&s).await.expect("version");
                let batch = [event("Raced", writer as u64), event("Raced", writer as u64)];
                match store
                    .append(&s, ExpectedVersion::Exact(current), &batch)
                    .await
                {
                    Ok(r) => {
                        assert_eq!(r.first_version, current + 1);
                        won.push(r.first_version);
                    }
                    Err(StoreError::WrongExpectedVersion { actual, .. }) => {
                        assert!(
                            actual != current,
                            "a conflict must report a different version"
                        );
                        conflicts += 1;
                    }
                    Err(e) => panic!("unexpected error: {e}"),
                }
                tokio::task::yield_now().await;
            }
            (won, conflicts)
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let (won, _) = t.await.expect("writer task");
        winners.extend(won);
    }
    winners.sort_unstable();
    let expected: Vec<u64> = (0..(WRITERS * APPENDS_EACH) as u64)
        .map(|i| i * 2 + 1)
        .collect();
    assert_eq!(winners, expected, "exactly one winner per version");
    let total = (WRITERS * APPENDS_EACH * 2) as u64;
    assert_eq!(versions(&store, &s).await, (1..=total).collect::<Vec<_>>());
    let all = read_everything(&store, 97).await;
    assert_eq!(all.len() as u64, total);
    // Each batch is contiguous: both events of one append come from the same writer.
    let recorded = store
        .read_stream(&s, &StreamRead::all())
        .await
        .expect("read");
    for pair in recorded.chunks(2) {
        assert_eq!(
            pair[0].payload, pair[1].payload,
            "batches are not interleaved"
        );
    }
}

/// Many writers creating the same stream: exactly one wins.
pub async fn concurrent_no_stream_race<S: EventStore>(store: S) {
    const WRITERS: usize = 32;
    let s = stream("order-new");
    let barrier = Arc::new(tokio::sync::Barrier::new(WRITERS));
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let (store, s, barrier) = (store.clone(), s.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            store
                .append(
                    &s,
                    ExpectedVersion::NoStream,
                    &[event("Created", writer as u64)],
                )
                .await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.expect("task") {
            Ok(r) => {
                assert_eq!(r.version, 1);
                ok += 1;
            }
            Err(StoreError::WrongExpectedVersion { actual, .. }) => assert_eq!(actual, 1),
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(ok, 1, "exactly one creator wins");
    assert_eq!(versions(&store, &s).await, [1]);
}

/// Writers on distinct streams: every event gets a distinct, increasing position.
pub async fn concurrent_writers_many_streams<S: EventStore>(store: S) {
    const WRITERS: u64 = 32;
    const APPENDS_EACH: u64 = 10;
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let s = stream(&format!("order-{writer}"));
            for i in 0..APPENDS_EACH {
                store
                    .append(&s, ExpectedVersion::Exact(i), &[event("Placed", i)])
                    .await
                    .expect("append");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let all = read_everything(&store, 50).await;
    assert_eq!(all.len() as u64, WRITERS * APPENDS_EACH);
    assert!(all.windows(2).all(|w| w[0].position < w[1].position));
    let mut per_stream: HashMap<&str, u64> = HashMap::new();
    for e in &all {
        let seen = per_stream.entry(e.stream_id.as_str()).or_default();
        *seen += 1;
        assert_eq!(e.stream_version, *seen, "ordered per stream");
    }
}

type CounterRepo<S> = Repository<Counter, S>;

/// The repository executes a command, appends its events and loads the new state.
pub async fn repository_execute_and_load<S: EventStore>(store: S) {
    let repo = CounterRepo::new(store.clone());
    let correlation = Uuid::now_v7();
    let meta = Metadata::new()
        .actor("alice")
        .tenant("acme")
        .correlation_id(correlation);
    let done = repo
        .execute_on("c-1", Increment { by: 2 }, meta)
        .await
        .expect("execute");
    assert_eq!(done.version, 1);
    assert_eq!(done.events, [Incremented { by: 2 }.into()]);
    assert!(!done.duplicate);
    repo.execute_on("c-1", Increment { by: 3 }, Metadata::new())
        .await
        .expect("execute");
    let loaded = repo.load("c-1").await.expect("load");
    assert_eq!((loaded.state.value, loaded.version), (5, 2));
    let recorded = store
        .read_stream(&stream("counter-c-1"), &StreamRead::all())
        .await
        .expect("read");
    let m = &recorded[0].metadata;
    assert_eq!(m.actor.as_deref(), Some("alice"));
    assert_eq!(m.tenant.as_deref(), Some("acme"));
    assert_eq!(m.correlation_id, Some(correlation));
    assert!(m.causation_id.is_some(), "causation is the command");
    assert_eq!(
        m.command_id, None,
        "a command executed without a command id has no idempotency key"
    );
    assert_ne!(
        recorded[1].metadata.causation_id, m.causation_id,
        "each command without a command id gets its own id"
    );
    let fresh = repo.load("c-2").await.expect("load");
    assert_eq!((fresh.state, fresh.version), (Counter::default(), 0));
}

/// Rejections and validation failures are typed and append nothing.
pub async fn repository_rejects_and_validates<S: EventStore>(store: S) {
    let repo = CounterRepo::new(store.clone());
    repo.execute_on("c-1", Increment { by: u64::MAX }, Metadata::new())
        .await
        .expect("execute");
    let rejected = repo
        .execute_on("c-1", Increment { by: 1 }, Metadata::new())
        .await
        .expect_err("overflow is rejected");
    assert!(matches!(rejected, Error::Rejected(CounterError::Overflow)));
    let invalid = repo
        .execute_on("c-1", Increment { by: 0 }, Metadata::new())
        .await
        .expect_err("invalid");
    match invalid {
        Error::InvalidCommand { command, message } => {
            assert_eq!(command, "Increment");
            assert!(message.contains("`by`"), "{message}");
        }
        other => panic!("expected InvalidCommand, got {other:?}"),
    }
    let bad_id = repo
        .execute_on("", Increment { by: 1 }, Metadata::new())
        .await
        .expect_err("empty id");
    assert!(matches!(bad_id, Error::StreamId(_)), "{bad_id:?}");
    assert_eq!(
        store
            .stream_version(&stream("counter-c-1"))
            .await
            .expect("version"),
        1
    );
}

/// A repeated command id returns the original outcome and appends nothing.
pub async fn repository_command_idempotency<S: EventStore>(store: S) {
    let repo = CounterRepo::new(store.clone());
    let command_id = Uuid::now_v7();
    let first = repo
        .execute_on(
            "c-1",
            Increment { by: 4 },
            Metadata::new().command_id(command_id),
        )
        .await
        .expect("execute");
    repo.execute_on("c-1", Increment { by: 1 }, Metadata::new())
        .await
        .expect("execute");
    let again = repo
        .execute_on(
            "c-1",
            Increment { by: 4 },
            Metadata::new().command_id(command_id),
        )
        .await
        .expect("repeat");
    assert!(again.duplicate);
    assert_eq!(again.events, first.events);
    let recorded = store
        .read_stream(&stream("counter-c-1"), &StreamRead::all())
        .await
        .expect("read");
    let m = &recorded[0].metadata;
    assert_eq!(
        (m.command_id, m.causation_id),
        (Some(command_id), Some(command_id)),
        "the events carry the caller's command id, as their cause too"
    );
    assert_eq!(again.version, first.version);
    assert_eq!(again.position, first.position);
    let loaded = repo.load("c-1").await.expect("load");
    assert_eq!((loaded.state.value, loaded.version), (5, 2));

    // The same command id raced by many tasks is applied once.
    let raced = Uuid::now_v7();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let repo = repo.clone();
        tasks.push(tokio::spawn(async move {
            repo.execute_on(
                "c-1",
                Increment { by: 10 },
                Metadata::new().command_id(raced),
            )
            .await
            .map(|e| (e.version, e.duplicate))
        }));
    }
    let mut fresh = 0;
    for t in tasks {
        let (version, duplicate) = t.await.expect("task").expect("execute");
        assert_eq!(version, 3);
        fresh += usize::from(!duplicate);
    }
    assert_eq!(
        fresh, 1,
        "one execution appends, the others see its outcome"
    );
    assert_eq!(repo.load("c-1").await.expect("load").state.value, 15);
}

/// Concurrent commands on one aggregate all succeed through conflict retries, and none is
/// lost; without retries, losers get a typed conflict.
pub async fn repository_concurrent_commands<S: EventStore>(store: S) {
    const TASKS: u64 = 8;
    let repo = CounterRepo::new(store.clone()).with_conflict_retries(1000);
    let mut tasks = Vec::new();
    for i in 1..=TASKS {
        let repo = repo.clone();
        tasks.push(tokio::spawn(async move {
            repo.execute_on("c-1", Increment { by: i }, Metadata::new())
                .await
        }));
    }
    for t in tasks {
        t.await.expect("task").expect("execute with retries");
    }
    let loaded = repo.load("c-1").await.expect("load");
    assert_eq!(loaded.state.value, TASKS * (TASKS + 1) / 2);
    assert_eq!(loaded.version, TASKS);

    // One repository per task, as separate processes have: no shared cache queues them.
    let barrier = Arc::new(tokio::sync::Barrier::new(16));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let strict = CounterRepo::new(store.clone()).with_conflict_retries(0);
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            strict
                .execute_on("c-2", Increment { by: 1 }, Metadata::new())
                .await
        }));
    }
    let mut ok = 0u64;
    for t in tasks {
        match t.await.expect("task") {
            Ok(_) => ok += 1,
            Err(Error::Conflict {
                attempts,
                expected,
                actual,
                ..
            }) => {
                assert_eq!(attempts, 1);
                assert!(actual > expected);
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert!(ok >= 1);
    assert_eq!(repo.load("c-2").await.expect("load").version, ok);
}

/// Two repositories over one store, as two processes have, each with its own cache: every
/// command is decided on the stream's current state, whatever the other wrote since.
pub async fn repository_cache_sees_other_writers<S: EventStore>(store: S) {
    let a = CounterRepo::new(store.clone()).with_conflict_retries(0);
    let b = CounterRepo::new(store.clone()).with_conflict_retries(0);
    let mut sum = 0;
    for i in 1..=12u64 {
        let repo = if i % 3 == 0 { &b } else { &a };
        let done = repo
            .execute_on("c-1", Increment { by: i }, Metadata::new())
            .await
            .expect("a stale cache entry is caught up, never a conflict");
        sum += i;
        assert_eq!((done.version, done.events.len()), (i, 1));
    }
    assert_eq!(a.cached(), 1);
    let loaded = b.load("c-1").await.expect("load");
    assert_eq!((loaded.state.value, loaded.version), (sum, 12));
    assert_eq!(
        store
            .stream_version(&stream("counter-c-1"))
            .await
            .expect("version"),
        12
    );
}

/// A rejection or an empty outcome decided on a cached state, or on the initial state of a
/// stream that was not cached, is checked against the stream: a stream that moved has the
/// command decided again on its current state.
pub async fn repository_cache_never_trusts_a_stale_rejection<S: EventStore>(store: S) {
    type TabRepo<S> = Repository<Tab, S>;
    let a = TabRepo::new(store.clone());
    let b = TabRepo::new(store.clone());
    let pay = |only_if_open| Pay {
        amount: 5,
        only_if_open,
    };
    // `a` caches the tab as not open.
    assert!(matches!(
        a.execute_on("t-1", pay(false), Metadata::new()).await,
        Err(Error::Rejected(TabError::NotOpen))
    ));
    let nothing = a
        .execute_on("t-1", pay(true), Metadata::new())
        .await
        .expect("no-op");
    assert_eq!((nothing.version, nothing.events.len()), (0, 0));
    // Another process opens it.
    b.execute_on("t-1", Open, Metadata::new())
        .await
        .expect("open");
    let paid = a
        .execute_on("t-1", pay(false), Metadata::new())
        .await
        .expect("decided again on the opened tab");
    assert_eq!(paid.version, 2);
    assert_eq!(paid.events.len(), 1);

    // A repository that never saw the tab decides `Pay` on the initial state first: the
    // rejection there is not the answer.
    b.execute_on("t-2", Open, Metadata::new())
        .await
        .expect("open");
    let c = TabRepo::new(store.clone());
    let paid = c
        .execute_on("t-2", pay(false), Metadata::new())
        .await
        .expect("paid on the loaded state");
    assert_eq!(paid.version, 2);
    // `Open` on an existing open tab, uncached: speculation appends nothing twice.
    let d = TabRepo::new(store.clone());
    let again = d
        .execute_on("t-2", Open, Metadata::new())
        .await
        .expect("no-op");
    assert_eq!((again.version, again.events.len()), (2, 0));
    let types: Vec<String> = store
        .read_stream(&stream("tab-t-2"), &StreamRead::all())
        .await
        .expect("read")
        .into_iter()
        .map(|e| e.event_type)
        .collect();
    assert_eq!(types, ["TabOpened", "TabPaid"]);

    // An expected version is checked against the stream, not the cache (`execute_expecting`
    // for a command without `#[id]`).
    async fn expecting<S: EventStore>(
        repo: &Repository<Tab, S>,
        id: &str,
        pay: Pay,
        version: u64,
    ) -> Result<crate::Executed<Tab>, Error<TabError>> {
        let stream = stream(&format!("tab-{id}"));
        repo.run(stream, pay.into(), Metadata::new(), Some(version))
            .await
    }
    assert!(matches!(
        expecting(&a, "t-2", pay(false), 1).await,
        Err(Error::VersionMismatch {
            expected: 1,
            actual: 2,
            ..
        })
    ));
    b.execute_on("t-3", Open, Metadata::new())
        .await
        .expect("open");
    a.execute_on("t-3", Open, Metadata::new())
        .await
        .expect("a no-op, cached at 1");
    b.execute_on("t-3", pay(false), Metadata::new())
        .await
        .expect("paid elsewhere");
    assert!(matches!(
        expecting(&a, "t-3", pay(false), 1).await,
        Err(Error::VersionMismatch {
            expected: 1,
            actual: 2,
            ..
        })
    ));
    assert!(matches!(
        expecting(&a, "t-3", pay(false), 2).await,
        Err(Error::Rejected(TabError::AlreadyPaid))
    ));
}

/// Commands on one aggregate through one repository queue behind each other instead of
/// racing: none conflicts, even without retries.
pub async fn repository_cache_queues_commands_on_one_aggregate<S: EventStore>(store: S) {
    const TASKS: u64 = 16;
    let repo = CounterRepo::new(store.clone()).with_conflict_retries(0);
    let barrier = Arc::new(tokio::sync::Barrier::new(TASKS as usize));
    let mut tasks = Vec::new();
    for i in 1..=TASKS {
        let (repo, barrier) = (repo.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            repo.execute_on("c-1", Increment { by: i }, Metadata::new())
                .await
        }));
    }
    let mut versions = BTreeSet::new();
    for t in tasks {
        let done = t.await.expect("task").expect("no conflict");
        versions.insert(done.version);
    }
    assert_eq!(versions, (1..=TASKS).collect());
    let loaded = repo.load("c-1").await.expect("load");
    assert_eq!(loaded.state.value, TASKS * (TASKS + 1) / 2);
}

/// Snapshots are taken from the cached state as from a loaded one: every `Every(5)`
/// crossing saves the state at that version, and loads from it equal a full replay.
pub async fn repository_cache_takes_snapshots<S: EventStore>(store: S) {
    let repo = CounterRepo::new(store.clone());
    let other = CounterRepo::new(store.clone());
    for i in 1..=12u64 {
        let repo = if i == 7 { &other } else { &repo };
        repo.execute_on("c-1", Increment { by: i }, Metadata::new())
            .await
            .expect("execute");
    }
    let snapshot = store
        .load_snapshot(&stream("counter-c-1"), 1, None)
        .await
        .expect("load")
        .expect("a snapshot");
    assert_eq!(snapshot.version, 10);
    let state: Counter = snapshot.state.decode().expect("decode");
    assert_eq!((state.value, state.increments), ((1..=10).sum(), 10));
    let loaded = repo.load("c-1").await.expect("load");
    let mut replayed = Counter::default();
    for recorded in store
        .read_stream(&stream("counter-c-1"), &StreamRead::all())
        .await
        .expect("read")
    {
        let by = recorded.payload.decode::<Incremented>().expect("decode").by;
        replayed.apply(&Incremented { by }.into());
    }
    assert_eq!((loaded.state, loaded.version), (replayed, 12));
}

/// Loading from a snapshot plus the tail gives the same state as a full replay; a snapshot
/// of another state version, or one that does not decode, falls back to replay.
pub async fn repository_snapshot_equals_replay<S: EventStore>(store: S) {
    let repo = CounterRepo::new(store.clone());
    for i in 1..=13 {
        repo.execute_on("c-1", Increment { by: i }, Metadata::new())
            .await
            .expect("execute");
    }
    let s = stream("counter-c-1");
    let snap = store
        .load_snapshot(&s, 1, None)
        .await
        .expect("load")
        .expect("snapshots every 5 events");
    assert_eq!(snap.version, 10);
    let loaded = repo.load("c-1").await.expect("load");
    let expected = Counter {
        value: (1..=13).sum(),
        increments: 13,
    };
    assert_eq!(loaded.state, expected);
    assert_eq!(loaded.version, 13);

    // A corrupt snapshot is ignored, not trusted.
    store
        .save_snapshot(&Snapshot {
            stream_id: s.clone(),
            version: 12,
            schema_version: 1,
            state: Payload::encode(&json!({"unexpected": true})).expect("json"),
            taken_at: Utc::now(),
        })
        .await
        .expect("save");
    assert_eq!(repo.load("c-1").await.expect("load").state, expected);
}

/// State as of a version or a time.
pub async fn repository_temporal_loads<S: EventStore>(store: S) {
    let repo = CounterRepo::new(store.clone());
    for i in 1..=7 {
        repo.execute_on("c-1", Increment { by: i }, Metadata::new())
            .await
            .expect("execute");
    }
    let at3 = repo
        .load_as_of("c-1", AsOf::Version(3))
        .await
        .expect("load");
    assert_eq!((at3.state.value, at3.version), (6, 3));
    let at6 = repo
        .load_as_of("c-1", AsOf::Version(6))
        .await
        .expect("load");
    assert_eq!(
        (at6.state.value, at6.version),
        (21, 6),
        "snapshot at 5 plus one event"
    );
    let at99 = repo
        .load_as_of("c-1", AsOf::Version(99))
        .await
        .expect("load");
    assert_eq!(at99.version, 7);
    let at0 = repo
        .load_as_of("c-1", AsOf::Version(0))
        .await
        .expect("load");
    assert_eq!((at0.state.value, at0.version), (0, 0));

    let recorded = store
        .read_stream(&stream("counter-c-1"), &StreamRead::all())
        .await
        .expect("read");
    let t4 = recorded[3].recorded_at;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    repo.execute_on("c-1", Increment { by: 100 }, Metadata::new())
        .await
        .expect("execute");
    let at_time = repo.load_as_of("c-1", t4).await.expect("load");
    assert!(at_time.version >= 4 && at_time.version <= 7);
    let expected: u64 = (1..=at_time.version).sum();
    assert_eq!(at_time.state.value, expected);
    let now = repo.load_as_of("c-1", Utc::now()).await.expect("load");
    assert_eq!(now.version, 8);
}

/// An unknown stored type or version is an error naming it, with stream and position.
pub async fn repository_decode_error_names_the_event<S: EventStore>(store: S) {
    let repo = CounterRepo::new(store.clone());
    repo.execute_on("c-1", Increment { by: 1 }, Metadata::new())
        .await
        .expect("execute");
    let s = stream("counter-c-1");
    let r = store
        .append(&s, ExpectedVersion::Exact(1), &[event("Exploded", 1)])
        .await
        .expect("append");
    match repo.load("c-1").await {
        Err(Error::Decode {
            stream,
            stream_version,
            position,
            source: DecodeError::UnknownType { event_type },
        }) => {
            assert_eq!(stream, s);
            assert_eq!(stream_version, 2);
            assert_eq!(position, r.last_position);
            assert_eq!(event_type, "Exploded");
        }
        other => panic!("expected an unknown-type decode error, got {other:?}"),
    }

    let mut v9 = event("Incremented", 1);
    v9.schema_version = 9;
    store
        .append(&stream("counter-c-2"), ExpectedVersion::NoStream, &[v9])
        .await
        .expect("append");
    let err = repo.load("c-2").await.expect_err("unknown version");
    let message = err.to_string();
    assert!(
        matches!(
            err,
            Error::Decode {
                source: DecodeError::UnknownVersion { version: 9, .. },
                ..
            }
        ),
        "{message}"
    );
    assert!(
        message.contains("Incremented") && message.contains("counter-c-2"),
        "{message}"
    );

    let mut garbage = event("Incremented", 1);
    garbage.payload = Payload::encode(&json!({"by": "many"})).expect("json");
    store
        .append(
            &stream("counter-c-3"),
            ExpectedVersion::NoStream,
            &[garbage],
        )
        .await
        .expect("append");
    assert!(matches!(
        repo.load("c-3").await,
        Err(Error::Decode {
            source: DecodeError::Payload { .. },
            ..
        })
    ));
}

type TabRepo<S> = Repository<Tab, S>;

fn pay(amount: u64) -> Pay {
    Pay {
        amount,
        only_if_open: false,
    }
}

/// Two concurrent executions of one command id, the second of which would be rejected on
/// the state holding the first one's events, both answer with the first outcome; its
/// events are stored once. 300 rounds.
pub async fn repository_command_race_same_outcome<S: EventStore>(store: S) {
    let repo = TabRepo::new(store.clone());
    for round in 0..300 {
        let id = format!("race-{round}");
        repo.execute_on(&id, Open, Metadata::new())
            .await
            .expect("open");
        let command_id = Uuid::now_v7();
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let mut tasks = Vec::new();
        for _ in 0..2 {
            let (repo, barrier, id) = (repo.clone(), barrier.clone(), id.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                repo.execute_on(&id, pay(5), Metadata::new().command_id(command_id))
                    .await
            }));
        }
        let mut answers = Vec::new();
        for task in tasks {
            match task.await.expect("task") {
                Ok(done) => answers.push((done.events, done.version, done.position)),
                Err(e) => panic!("round {round}: a racing retry answered {e:?}"),
            }
        }
        assert_eq!(answers[0], answers[1], "round {round}: one outcome");
        assert_eq!(answers[0].0, [Paid { amount: 5 }.into()], "round {round}");
        assert_eq!(
            versions(&store, &stream(&format!("tab-{id}"))).await,
            [1, 2],
            "round {round}: one set of events"
        );
    }
}

/// A rejected command retried with its command id on a state where it would succeed gets
/// the original rejection, and nothing is appended.
pub async fn repository_rejection_is_remembered<S: EventStore>(store: S) {
    let repo = TabRepo::new(store.clone());
    let command_id = Uuid::now_v7();
    let meta = || Metadata::new().command_id(command_id);
    let first = repo
        .execute_on("t-1", pay(5), meta())
        .await
        .expect_err("a closed tab rejects payment");
    assert!(
        matches!(first, Error::Rejected(TabError::NotOpen)),
        "{first:?}"
    );
    repo.execute_on("t-1", Open, Metadata::new())
        .await
        .expect("open");
    let again = repo
        .execute_on("t-1", pay(5), meta())
        .await
        .expect_err("the retry gets the first outcome");
    assert!(
        matches!(again, Error::Rejected(TabError::NotOpen)),
        "{again:?}"
    );
    assert_eq!(versions(&store, &stream("tab-t-1")).await, [1]);
    let loaded = repo.load("t-1").await.expect("load");
    assert!(loaded.state.open && !loaded.state.paid);
    // A new command id is a new command.
    repo.execute_on("t-1", pay(5), Metadata::new().command_id(Uuid::now_v7()))
        .await
        .expect("pay");
}

/// A command that appended nothing, retried with its command id on a state where it would
/// append, appends nothing again.
pub async fn repository_empty_outcome_is_remembered<S: EventStore>(store: S) {
    let repo = TabRepo::new(store.clone());
    let command_id = Uuid::now_v7();
    let lenient = || Pay {
        amount: 5,
        only_if_open: true,
    };
    let meta = || Metadata::new().command_id(command_id);
    let first = repo
        .execute_on("t-1", lenient(), meta())
        .await
        .expect("nothing to pay");
    assert!(first.events.is_empty());
    assert_eq!((first.version, first.position), (0, 0));
    repo.execute_on("t-1", Open, Metadata::new())
        .await
        .expect("open");
    let again = repo
        .execute_on("t-1", lenient(), meta())
        .await
        .expect("the retry gets the first outcome");
    assert!(again.events.is_empty(), "{:?}", again.events);
    assert!(again.duplicate);
    assert_eq!(again.version, 0, "the version the command was decided on");
    assert_eq!(versions(&store, &stream("tab-t-1")).await, [1]);
}

/// A store whose next append or command record fails with a backend error, and that counts
/// the calls made to it (round trips, for a store that makes one per call).
#[derive(Clone)]
struct Flaky<S> {
    store: S,
    fail_append: Arc<std::sync::atomic::AtomicBool>,
    fail_record: Arc<std::sync::atomic::AtomicBool>,
    calls: Arc<std::sync::Mutex<Vec<&'static str>>>,
}

impl<S> Flaky<S> {
    fn new(store: S) -> Self {
        Self {
            store,
            fail_append: Arc::default(),
            fail_record: Arc::default(),
            calls: Arc::default(),
        }
    }

    fn call(&self, name: &'static str) {
        self.calls.lock().expect("calls").push(name);
    }

    /// The calls made since the last time this was asked.
    fn take_calls(&self) -> Vec<&'static str> {
        std::mem::take(&mut *self.calls.lock().expect("calls"))
    }

    fn injected(flag: &std::sync::atomic::AtomicBool) -> Result<(), StoreError> {
        if flag.swap(false, std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::Backend("injected failure".into()));
        }
        Ok(())
    }
}

impl<S: EventStore> EventStore for Flaky<S> {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Result<crate::store::AppendResult, StoreError> {
        self.call("append");
        Self::injected(&self.fail_append)?;
        self.store.append(stream, expected, events).await
    }
    async fn read_stream(
        &self,
        stream: &StreamId,
        read: &StreamRead,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.call("read_stream");
        self.store.read_stream(stream, read).await
    }
    async fn replay_stream(
        &self,
        stream: &StreamId,
        read: &StreamRead,
    ) -> Result<Vec<crate::store::ReplayEvent>, StoreError> {
        self.call("replay_stream");
        self.store.replay_stream(stream, read).await
    }
    async fn load_aggregate(
        &self,
        stream: &StreamId,
        schema_version: u32,
        max_version: Option<u64>,
    ) -> Result<crate::store::AggregateRead, StoreError> {
        self.call("load_aggregate");
        self.store
            .load_aggregate(stream, schema_version, max_version)
            .await
    }
    async fn stream_version(&self, stream: &StreamId) -> Result<u64, StoreError> {
        self.call("stream_version");
        self.store.stream_version(stream).await
    }
    async fn read_all(&self, read: &ReadAll) -> Result<Vec<RecordedEvent>, StoreError> {
        self.call("read_all");
        self.store.read_all(read).await
    }
    async fn head_position(&self) -> Result<u64, StoreError> {
        self.call("head_position");
        self.store.head_position().await
    }
    async fn event_by_id(&self, event_id: Uuid) -> Result<Option<RecordedEvent>, StoreError> {
        self.call("event_by_id");
        self.store.event_by_id(event_id).await
    }
    async fn save_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        self.call("save_snapshot");
        self.store.save_snapshot(snapshot).await
    }
    async fn load_snapshot(
        &self,
        stream: &StreamId,
        schema_version: u32,
        max_version: Option<u64>,
    ) -> Result<Option<Snapshot>, StoreError> {
        self.call("load_snapshot");
        self.store
            .load_snapshot(stream, schema_version, max_version)
            .await
    }
    async fn record_command(
        &self,
        record: &CommandRecord,
    ) -> Result<Option<CommandRecord>, StoreError> {
        self.call("record_command");
        Self::injected(&self.fail_record)?;
        self.store.record_command(record).await
    }
    async fn command_record(&self, command_id: Uuid) -> Result<Option<CommandRecord>, StoreError> {
        self.call("command_record");
        self.store.command_record(command_id).await
    }
}

/// What commands cost in store calls: creating an aggregate and a command on a cached one
/// are one append each; a stale entry adds the failed append and a read of what it missed; a
/// rejection costs one read; without cache and speculation, every command reads first.
pub async fn repository_round_trips<S: EventStore>(store: S) {
    let counted = Flaky::new(store.clone());
    let repo = CounterRepo::new(counted.clone());
    let inc = |by| Increment { by };
    for (i, calls) in [(1, "create"), (2, "cached")] {
        repo.execute_on("c-1", inc(i), Metadata::new())
            .await
            .expect("execute");
        assert_eq!(counted.take_calls(), ["append"], "{calls}");
    }
    CounterRepo::new(store.clone())
        .execute_on("c-1", inc(3), Metadata::new())
        .await
        .expect("another writer");
    let done = repo
        .execute_on("c-1", inc(4), Metadata::new())
        .await
        .expect("stale");
    assert_eq!(done.version, 4);
    assert_eq!(counted.take_calls(), ["append", "replay_stream", "append"]);
    let done = repo
        .execute_on("c-1", inc(5), Metadata::new())
        .await
        .expect("snapshot due");
    assert_eq!(done.version, 5);
    assert_eq!(counted.take_calls(), ["append", "save_snapshot"]);

    // A command id is claimed by the append itself: no lookup first.
    let keyed = Metadata::new().command_id(Uuid::now_v7());
    let first = repo
        .execute_on("c-4", inc(1), keyed.clone())
        .await
        .expect("keyed");
    assert_eq!(counted.take_calls(), ["append"], "a command with an id");
    let again = repo
        .execute_on("c-4", inc(1), keyed)
        .await
        .expect("retried");
    assert!(again.duplicate && !first.duplicate);
    assert_eq!((again.version, again.events), (1, first.events));
    counted.take_calls();

    let cold = CounterRepo::new(counted.clone()).with_cache(0);
    cold.execute_on("c-2", inc(1), Metadata::new())
        .await
        .expect("create");
    assert_eq!(
        counted.take_calls(),
        ["append"],
        "speculation without cache"
    );
    cold.execute_on("c-2", inc(1), Metadata::new())
        .await
        .expect("existing");
    assert_eq!(
        counted.take_calls(),
        ["append", "load_aggregate", "append"],
        "a failed speculation"
    );
    let plain = cold.with_speculation(crate::Speculation::Never);
    plain
        .execute_on("c-3", inc(1), Metadata::new())
        .await
        .expect("create");
    assert_eq!(counted.take_calls(), ["load_aggregate", "append"]);

    let tabs = TabRepo::new(counted.clone());
    for calls in ["uncached", "cached"] {
        let rejected = tabs.execute_on("t-1", pay(5), Metadata::new()).await;
        assert!(matches!(rejected, Err(Error::Rejected(TabError::NotOpen))));
        assert_eq!(counted.take_calls(), ["replay_stream"], "{calls}");
    }
}

/// A command that failed on a store error is not remembered: retried with its command id,
/// it is decided again.
pub async fn repository_store_errors_are_not_remembered<S: EventStore>(store: S) {
    use std::sync::atomic::Ordering::SeqCst;
    let flaky = Flaky::new(store.clone());
    let repo = TabRepo::new(flaky.clone());
    repo.execute_on("t-1", Open, Metadata::new())
        .await
        .expect("open");

    // The append fails: nothing is stored, and the retry appends.
    let command_id = Uuid::now_v7();
    flaky.fail_append.store(true, SeqCst);
    let failed = repo
        .execute_on("t-1", pay(5), Metadata::new().command_id(command_id))
        .await
        .expect_err("injected append failure");
    assert!(
        matches!(failed, Error::Store(StoreError::Backend(_))),
        "{failed:?}"
    );
    assert_eq!(
        store
            .command_record(command_id)
            .await
            .expect("command record"),
        None
    );
    let retried = repo
        .execute_on("t-1", pay(5), Metadata::new().command_id(command_id))
        .await
        .expect("the retry is decided again");
    assert!(!retried.duplicate);
    assert_eq!(retried.events, [Paid { amount: 5 }.into()]);

    // Recording a rejection fails: the caller gets the store error, not a rejection that
    // a retry could contradict, and the retry is decided again.
    let command_id = Uuid::now_v7();
    flaky.fail_record.store(true, SeqCst);
    let failed = repo
        .execute_on("t-2", pay(5), Metadata::new().command_id(command_id))
        .await
        .expect_err("injected record failure");
    assert!(
        matches!(failed, Error::Store(StoreError::Backend(_))),
        "{failed:?}"
    );
    repo.execute_on("t-2", Open, Metadata::new())
        .await
        .expect("open");
    let retried = repo
        .execute_on("t-2", pay(5), Metadata::new().command_id(command_id))
        .await
        .expect("the retry is decided again");
    assert_eq!(retried.events, [Paid { amount: 5 }.into()]);
    assert_eq!(versions(&store, &stream("tab-t-2")).await, [1, 2]);
}

fn with_command(mut event: NewEvent, command_id: Uuid) -> NewEvent {
    event.metadata.command_id = Some(command_id);
    event
}

fn record(command_id: Uuid, stream_id: &StreamId, outcome: CommandOutcome) -> CommandRecord {
    CommandRecord {
        command_id,
        stream_id: stream_id.clone(),
        version: 0,
        outcome,
    }
}

/// The command log keeps the first outcome of a command id: a record refuses later appends
/// of the command's events, appended events win over a later record, and an append racing
/// a record of the same command id agrees with it on which came first.
pub async fn command_log_first_outcome_wins<S: EventStore>(store: S) {
    let s = stream("order-1");
    let rejected = CommandOutcome::Rejected {
        message: "no".into(),
    };

    // Recorded first: the record stays, and the command's events are refused.
    let x = Uuid::now_v7();
    assert_eq!(
        store
            .record_command(&record(x, &s, CommandOutcome::NoEvents))
            .await
            .expect("record"),
        None
    );
    let first = store
        .record_command(&record(x, &s, rejected.clone()))
        .await
        .expect("record");
    assert_eq!(first, Some(record(x, &s, CommandOutcome::NoEvents)));
    let refused = store
        .append(&s, ExpectedVersion::Any, &[with_command(event("A", 1), x)])
        .await
        .expect_err("the command already has an outcome");
    match refused {
        StoreError::CommandDecided { command_id, stream } => {
            assert_eq!((command_id, stream), (x, s.clone()));
        }
        other => panic!("expected CommandDecided, got {other:?}"),
    }
    assert_eq!(store.stream_version(&s).await.expect("version"), 0);

    // Appended first: the events win over a later record; their retry is still a retry, and
    // other events with the same command id may follow.
    let y = Uuid::now_v7();
    let events = vec![
        with_command(event("A", 1), y),
        with_command(event("B", 2), y),
    ];
    let appended = store
        .append(&s, ExpectedVersion::NoStream, &events)
        .await
        .expect("append");
    let first = store
        .record_command(&record(y, &s, rejected.clone()))
        .await
        .expect("record")
        .expect("the append came first");
    assert_eq!(first.outcome, CommandOutcome::Appended);
    assert_eq!(first.stream_id, s);
    assert_eq!(
        store.command_record(y).await.expect("command record"),
        Some(first)
    );
    let again = store
        .append(&s, ExpectedVersion::NoStream, &events)
        .await
        .expect("retry");
    assert!(again.replayed);
    assert_eq!(again.version, appended.version);
    store
        .append(&s, ExpectedVersion::Any, &[with_command(event("C", 3), y)])
        .await
        .expect("more events of the same command id");

    // Races: exactly one of an append and a record of one command id comes first.
    for round in 0..100 {
        let z = Uuid::now_v7();
        let s = stream(&format!("race-{round}"));
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let append = {
            let (store, s, barrier) = (store.clone(), s.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store
                    .append(&s, ExpectedVersion::Any, &[with_command(event("A", 1), z)])
                    .await
            })
        };
        let recorded = {
            let (store, s, rejected) = (store.clone(), s.clone(), rejected.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store.record_command(&record(z, &s, rejected)).await
            })
        };
        let append = append.await.expect("task");
        let recorded = recorded.await.expect("task").expect("record");
        let first = store
            .command_record(z)
            .await
            .expect("command record")
            .expect("an outcome");
        match (append, recorded) {
            (Ok(_), Some(winner)) => {
                assert_eq!(winner.outcome, CommandOutcome::Appended, "round {round}");
                assert_eq!(first.outcome, CommandOutcome::Appended, "round {round}");
                assert_eq!(versions(&store, &s).await, [1], "round {round}");
            }
            (Err(StoreError::CommandDecided { .. }), None) => {
                assert_eq!(first.outcome, rejected, "round {round}");
                assert_eq!(versions(&store, &s).await, [0; 0], "round {round}");
            }
            (append, recorded) => {
                panic!("round {round}: two first outcomes: {append:?} and {recorded:?}")
            }
        }
    }
}

/// What `load_aggregate` reads for (`schema_version`, `max_version`): checked against
/// `load_snapshot` and `replay_stream` of the tail, and against the snapshot and event
/// versions expected.
async fn check_load_aggregate<S: EventStore>(
    store: &S,
    s: &StreamId,
    schema_version: u32,
    max_version: Option<u64>,
    snapshot: Option<u64>,
    (first, last): (u64, u64),
) {
    let case = format!("schema version {schema_version}, max version {max_version:?}");
    let read = store
        .load_aggregate(s, schema_version, max_version)
        .await
        .expect("load aggregate");
    assert_eq!(
        read.snapshot.as_ref().map(|s| s.version),
        snapshot,
        "snapshot, {case}"
    );
    if let Some(snapshot) = &read.snapshot {
        assert_eq!(
            (&snapshot.stream_id, snapshot.schema_version),
            (s, schema_version),
            "{case}"
        );
    }
    let versions: Vec<u64> = read.events.iter().map(|e| e.stream_version).collect();
    assert_eq!(
        versions,
        (first..=last).collect::<Vec<_>>(),
        "events, {case}"
    );

    let expected_snapshot = store
        .load_snapshot(s, schema_version, max_version)
        .await
        .expect("load snapshot");
    let from = expected_snapshot.as_ref().map_or(0, |s| s.version) + 1;
    let mut tail = StreamRead::from_version(from);
    tail.to = max_version;
    let expected_events = if max_version.is_some_and(|max| max < from) {
        Vec::new()
    } else {
        store.replay_stream(s, &tail).await.expect("replay stream")
    };
    assert_eq!(read.snapshot, expected_snapshot, "{case}");
    assert_eq!(read.events, expected_events, "{case}");
}

/// `load_aggregate` reads what `load_snapshot` and then `replay_stream` of the events after
/// the snapshot read: without a snapshot, with one at the end, in the middle, below the
/// version asked for, and ignoring snapshots of other schema versions.
pub async fn load_aggregate_matches_snapshot_and_replay<S: EventStore>(store: S) {
    let s = stream("counter-agg");
    let other = stream("counter-other");
    for chunk in 0..3 {
        store
            .append(&s, ExpectedVersion::Exact(chunk * 10), &events(10))
            .await
            .expect("append");
        store
            .append(&other, ExpectedVersion::Any, &events(3))
            .await
            .expect("append other");
    }
    let snap = |version: u64, schema_version: u32| Snapshot {
        stream_id: s.clone(),
        version,
        schema_version,
        state: Payload::encode(&json!({ "value": version })).expect("json"),
        taken_at: Utc::now(),
    };
    let none = Option::<u64>::None;

    // No snapshot.
    check_load_aggregate(&store, &s, 1, None, none, (1, 30)).await;
    check_load_aggregate(&store, &s, 1, Some(10), none, (1, 10)).await;
    check_load_aggregate(&store, &s, 1, Some(0), none, (1, 0)).await;
    check_load_aggregate(&store, &stream("counter-missing"), 1, None, none, (1, 0)).await;

    // A snapshot at the end.
    store.save_snapshot(&snap(30, 1)).await.expect("save");
    check_load_aggregate(&store, &s, 1, None, Some(30), (31, 30)).await;
    check_load_aggregate(&store, &s, 1, Some(30), Some(30), (31, 30)).await;
    check_load_aggregate(&store, &s, 1, Some(1000), Some(30), (31, 30)).await;

    // Snapshots in the middle; a version asked for below some of them.
    store.save_snapshot(&snap(12, 1)).await.expect("save");
    store.save_snapshot(&snap(5, 1)).await.expect("save");
    check_load_aggregate(&store, &s, 1, Some(29), Some(12), (13, 29)).await;
    check_load_aggregate(&store, &s, 1, Some(12), Some(12), (13, 12)).await;
    check_load_aggregate(&store, &s, 1, Some(11), Some(5), (6, 11)).await;
    check_load_aggregate(&store, &s, 1, Some(4), none, (1, 4)).await;
    check_load_aggregate(&store, &s, 1, Some(0), none, (1, 0)).await;

    // Snapshots of other schema versions are ignored.
    store.save_snapshot(&snap(25, 2)).await.expect("save");
    check_load_aggregate(&store, &s, 1, None, Some(30), (31, 30)).await;
    check_load_aggregate(&store, &s, 2, None, Some(25), (26, 30)).await;
    check_load_aggregate(&store, &s, 2, Some(24), none, (1, 24)).await;
    check_load_aggregate(&store, &s, 3, None, none, (1, 30)).await;
    check_load_aggregate(&store, &s, u32::MAX, Some(7), none, (1, 7)).await;
}

// Hostile values: text that breaks naive quoting, encoding or matching is stored and read
// back exactly; the NUL character and control characters in type names are refused alike
// by every store, before anything is written.

/// Stream ids, type names and strings that break naive SQL quoting, `LIKE` patterns,
/// UTF-16 or byte-length assumptions.
pub const HOSTILE_TEXTS: &[&str] = &[
    "o'1",
    "o\"1",
    "o;1",
    "o--1",
    "o\\1",
    "o%",
    "o_",
    "$1",
    "x'); DELETE FROM events; --",
    "\\'%_\\%",
    "😀🎉𝄞",
    "e\u{301}",
    "Z\u{351}\u{36b}\u{343}\u{36a}",
    "\u{202e}rtl\u{200b}\u{feff}",
];

/// A string of about 10 KB mixing every hostile text (and a `\u0000` look-alike: a
/// backslash followed by `u0000`).
fn big_hostile_text() -> String {
    let mut text = String::from("\\u0000");
    while text.len() < 10 * 1024 {
        for piece in HOSTILE_TEXTS {
            text.push_str(piece);
        }
    }
    text
}

/// Follows the store from the start with a [`Subscription`](crate::subscription::Subscription)
/// filtered by `options` until it has delivered `n` events (at most a minute).
async fn subscribe<S: EventStore>(
    store: &S,
    options: crate::subscription::SubscriptionOptions,
    n: usize,
) -> Vec<RecordedEvent> {
    use crate::subscription::{Shutdown, Subscription};
    let mut subscription = Subscription::new(
        store.clone(),
        0,
        options.poll_interval(std::time::Duration::from_millis(20)),
    );
    let shutdown = Shutdown::new();
    let mut delivered = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while delivered.len() < n {
        let batch = tokio::time::timeout_at(deadline, subscription.next(&shutdown))
            .await
            .unwrap_or_else(|_| panic!("{} of {n} events delivered in a minute", delivered.len()))
            .expect("subscription")
            .expect("not shut down");
        delivered.extend(batch.events);
    }
    delivered
}

/// Stream ids holding quotes, `;`, `--`, `\`, `%`, `_`, `$1`, emoji and combining
/// characters, and one of exactly the longest length, round-trip exactly through append,
/// stream reads, `read_all`, aggregate loads, the repository and a subscription; one byte
/// longer, a 10 KB id or a control character is refused by the stream id's own validation.
pub async fn hostile_stream_ids_round_trip<S: EventStore>(store: S) {
    let longest = format!("{}abc", "😀".repeat(61));
    assert_eq!(
        "hostile-".len() + longest.len(),
        crate::stream::MAX_STREAM_ID_LEN
    );
    let mut ids: Vec<String> = HOSTILE_TEXTS.iter().map(|s| (*s).to_owned()).collect();
    ids.push(longest.clone());
    let mut appended = Vec::new();
    for id in &ids {
        let s = StreamId::new("hostile", id).expect("an allowed stream id");
        assert_eq!(s.id(), id);
        let batch = events(2);
        store
            .append(&s, ExpectedVersion::NoStream, &batch)
            .await
            .expect("append");
        appended.push((s, batch));
    }
    for (s, batch) in &appended {
        let read = store
            .read_stream(s, &StreamRead::all())
            .await
            .expect("read stream");
        assert_eq!(
            read.iter()
                .map(|e| (e.event_id, e.stream_id.as_str(), e.stream_version))
                .collect::<Vec<_>>(),
            [
                (batch[0].event_id, s.as_str(), 1),
                (batch[1].event_id, s.as_str(), 2)
            ],
            "stream {s:?} reads exactly its own events"
        );
        assert_eq!(store.stream_version(s).await.expect("version"), 2);
        let loaded = store.load_aggregate(s, 1, None).await.expect("load");
        assert_eq!(
            loaded
                .events
                .iter()
                .map(|e| e.stream_version)
                .collect::<Vec<_>>(),
            [1, 2]
        );
        let by_id = store
            .event_by_id(batch[1].event_id)
            .await
            .expect("by id")
            .expect("stored");
        assert_eq!(by_id.stream_id, *s);
        assert_eq!(by_id.stream_id.id(), s.id());
    }
    let expected: Vec<(Uuid, String)> = appended
        .iter()
        .flat_map(|(s, batch)| batch.iter().map(|e| (e.event_id, s.as_str().to_owned())))
        .collect();
    let all = store
        .read_all(&ReadAll::after(0).categories(["hostile"]))
        .await
        .expect("read all");
    let ids_of = |events: &[RecordedEvent]| {
        events
            .iter()
            .map(|e| (e.event_id, e.stream_id.as_str().to_owned()))
            .collect::<Vec<_>>()
    };
    assert_eq!(ids_of(&all), expected, "read_all, in append order");
    let options = crate::subscription::SubscriptionOptions::new().categories(["hostile"]);
    let delivered = subscribe(&store, options, expected.len()).await;
    assert_eq!(ids_of(&delivered), expected, "the subscription");

    // Through the repository, whose stream id is built from the aggregate id.
    let repo = CounterRepo::new(store.clone());
    for id in [HOSTILE_TEXTS[8], HOSTILE_TEXTS[10], HOSTILE_TEXTS[12]] {
        repo.execute_on(id, Increment { by: 7 }, Metadata::new())
            .await
            .expect("execute");
        let loaded = repo.load(id).await.expect("load");
        assert_eq!((loaded.state.value, loaded.version), (7, 1), "{id:?}");
    }

    for (bad, what) in [
        (format!("{longest}d"), "one byte too long"),
        ("x".repeat(10 * 1024), "10 KB"),
    ] {
        assert!(
            matches!(
                StreamId::new("hostile", &bad),
                Err(crate::error::StreamIdError::TooLong { .. })
            ),
            "{what}"
        );
    }
    for bad in ["a\u{0}b", "a\nb", "\u{7f}", "\u{85}"] {
        assert!(matches!(
            StreamId::new("hostile", bad),
            Err(crate::error::StreamIdError::ControlCharacter { .. })
        ));
    }
}

/// Event type names holding SQL metacharacters, `LIKE` wildcards, emoji and combining
/// characters, and one of exactly the longest length, are stored exactly and filtered on
/// exactly (`o%` matches neither `o_` nor `o'1`); one byte longer, or 10 KB, is refused.
pub async fn hostile_event_types_round_trip<S: EventStore>(store: S) {
    let longest = format!("{}é!", "😀".repeat(63));
    assert_eq!(longest.len(), crate::store::MAX_EVENT_TYPE_LEN);
    let mut types: Vec<String> = HOSTILE_TEXTS.iter().map(|s| (*s).to_owned()).collect();
    types.push(longest.clone());
    types.push("oX".to_owned());
    let s = stream("types-1");
    let batch: Vec<NewEvent> = types
        .iter()
        .enumerate()
        .map(|(i, t)| event(t, i as u64))
        .collect();
    store
        .append(&s, ExpectedVersion::NoStream, &batch)
        .await
        .expect("append");
    let read = store
        .read_stream(&s, &StreamRead::all())
        .await
        .expect("read stream");
    let types_of = |events: &[RecordedEvent]| {
        events
            .iter()
            .map(|e| e.event_type.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(types_of(&read), types);
    let replayed = store
        .replay_stream(&s, &StreamRead::all())
        .await
        .expect("replay");
    assert_eq!(
        replayed
            .iter()
            .map(|e| e.event_type.clone())
            .collect::<Vec<_>>(),
        types
    );
    for (t, new) in types.iter().zip(&batch) {
        let only = store
            .read_all(&ReadAll::after(0).event_types([t.as_str()]))
            .await
            .expect("read all");
        assert_eq!(
            only.iter().map(|e| e.event_id).collect::<Vec<_>>(),
            [new.event_id],
            "the filter on {t:?} matches exactly that type"
        );
        assert_eq!(only[0].event_type, *t);
    }
    let wanted = [HOSTILE_TEXTS[5], HOSTILE_TEXTS[10], longest.as_str()];
    let options = crate::subscription::SubscriptionOptions::new().event_types(wanted);
    let delivered = subscribe(&store, options, 3).await;
    assert_eq!(types_of(&delivered), wanted);

    for too_long in [format!("{longest}x"), big_hostile_text()] {
        match store
            .append(&s, ExpectedVersion::Any, &[event(&too_long, 0)])
            .await
        {
            Err(StoreError::InvalidEventType { event_type, stream }) => {
                assert_eq!((event_type, stream), (too_long, s.clone()));
            }
            other => panic!("expected InvalidEventType, got {other:?}"),
        }
    }
    assert_eq!(
        store.stream_version(&s).await.expect("version"),
        types.len() as u64
    );
}

/// Metadata (actor, tenant, keys and values of free entries) and payload strings and keys
/// with SQL metacharacters, emoji, combining characters, 10 KB strings and a `\u0000`
/// look-alike round-trip exactly through append, stream reads, `read_all`, reads by id,
/// aggregate loads (with a snapshot of such a state) and a subscription.
pub async fn hostile_metadata_and_payload_round_trip<S: EventStore>(store: S) {
    let big = big_hostile_text();
    assert!(big.len() >= 10 * 1024);
    let mut metadata = Metadata::new()
        .command_id(Uuid::now_v7())
        .correlation_id(Uuid::now_v7())
        .causation_id(Uuid::now_v7())
        .actor(big.clone())
        .tenant(HOSTILE_TEXTS.concat());
    let mut payload = serde_json::Map::new();
    for (i, text) in HOSTILE_TEXTS.iter().enumerate() {
        metadata = metadata.with(*text, json!({ *text: [*text, i] }));
        payload.insert((*text).to_owned(), json!([*text, { *text: *text }]));
    }
    metadata = metadata.with(big.clone(), big.clone());
    payload.insert(big.clone(), json!({ "big": big, "nested": [[big]] }));
    let payload = serde_json::Value::Object(payload);
    let new = NewEvent {
        event_id: Uuid::now_v7(),
        event_type: "Hostile".into(),
        schema_version: 1,
        payload: Payload::encode(&payload).expect("json"),
        metadata: metadata.clone(),
    };
    let s = stream("hostile-payloads");
    store
        .append(&s, ExpectedVersion::NoStream, std::slice::from_ref(&new))
        .await
        .expect("append");
    let check = |e: &RecordedEvent, via: &str| {
        assert_eq!(e.event_id, new.event_id, "{via}");
        assert_eq!(e.payload.to_value().expect("payload"), payload, "{via}");
        assert_eq!(e.metadata, metadata, "{via}");
    };
    let read = store
        .read_stream(&s, &StreamRead::all())
        .await
        .expect("read stream");
    assert_eq!(read.len(), 1);
    check(&read[0], "read_stream");
    check(
        &store
            .event_by_id(new.event_id)
            .await
            .expect("by id")
            .expect("stored"),
        "event_by_id",
    );
    let all = read_everything(&store, 10).await;
    assert_eq!(all.len(), 1);
    check(&all[0], "read_all");
    let options = crate::subscription::SubscriptionOptions::new().event_types(["Hostile"]);
    check(&subscribe(&store, options, 1).await[0], "subscription");

    let snapshot = Snapshot {
        stream_id: s.clone(),
        version: 1,
        schema_version: 1,
        state: Payload::encode(&payload).expect("json"),
        taken_at: Utc::now(),
    };
    store.save_snapshot(&snapshot).await.expect("save snapshot");
    let loaded = store.load_aggregate(&s, 1, None).await.expect("load");
    let state = loaded.snapshot.expect("snapshot").state;
    assert_eq!(state.to_value().expect("state"), payload);
    let replayed = store
        .replay_stream(&s, &StreamRead::all())
        .await
        .expect("replay");
    assert_eq!(replayed[0].payload.to_value().expect("payload"), payload);
}

/// A NUL character (`\u0000`) anywhere in a payload string (nested, or in an object key) or a
/// metadata string gets [`StoreError::NulCharacter`] naming the stream, the event and the
/// JSONPath, before anything is written: the other events of the batch are not stored.
pub async fn nul_characters_are_refused<S: EventStore>(store: S) {
    use crate::error::EventPart;
    let payload = |value: serde_json::Value| Payload::encode(&value).expect("json");
    let cases: Vec<(Payload, Metadata, EventPart, &str)> = vec![
        (
            payload(json!({"note": "a\u{0}b"})),
            Metadata::new(),
            EventPart::Payload,
            "$.note",
        ),
        (
            payload(json!({"lines": [{"sku": "ok"}, {"sku": "x\u{0}"}]})),
            Metadata::new(),
            EventPart::Payload,
            "$.lines[1].sku",
        ),
        (
            payload(json!({"deep": {"we'ird key": [1, "\u{0}"]}})),
            Metadata::new(),
            EventPart::Payload,
            "$.deep[\"we'ird key\"][1]",
        ),
        (
            payload(json!({"a": {"k\u{0}ey": 1}})),
            Metadata::new(),
            EventPart::Payload,
            "$.a[\"k\\u0000ey\"]",
        ),
        (
            payload(json!("\u{0}")),
            Metadata::new(),
            EventPart::Payload,
            "$",
        ),
        (
            Payload::from_json(r#"{"a": ["\u0000"]}"#.to_owned()).expect("json"),
            Metadata::new(),
            EventPart::Payload,
            "$.a[0]",
        ),
        (
            payload(json!({})),
            Metadata::new().actor("al\u{0}ice"),
            EventPart::Metadata,
            "$.actor",
        ),
        (
            payload(json!({})),
            Metadata::new().tenant("\u{0}"),
            EventPart::Metadata,
            "$.tenant",
        ),
        (
            payload(json!({})),
            Metadata::new().with("ip\u{0}", "1"),
            EventPart::Metadata,
            "$.extra[\"ip\\u0000\"]",
        ),
        (
            payload(json!({})),
            Metadata::new().with("trace", json!({"x": ["ok", "\u{0}"]})),
            EventPart::Metadata,
            "$.extra.trace.x[1]",
        ),
    ];
    let s = stream("nul-1");
    for (payload, metadata, part, path) in cases {
        let bad = NewEvent {
            event_id: Uuid::now_v7(),
            event_type: "Nul'Carrier".into(),
            schema_version: 1,
            payload,
            metadata,
        };
        let mut batch = events(1);
        batch.push(bad.clone());
        batch.extend(events(1));
        for attempt in [batch, vec![bad.clone()]] {
            match store.append(&s, ExpectedVersion::Any, &attempt).await {
                Err(StoreError::NulCharacter {
                    stream: st,
                    event_id,
                    event_type,
                    part: p,
                    path: at,
                }) => {
                    assert_eq!(st, s);
                    assert_eq!(event_id, bad.event_id);
                    assert_eq!(event_type, "Nul'Carrier");
                    assert_eq!((p, at.as_str()), (part, path));
                }
                other => panic!("expected NulCharacter at {part} {path}, got {other:?}"),
            }
            for event in &attempt {
                assert_eq!(
                    store.event_by_id(event.event_id).await.expect("by id"),
                    None,
                    "nothing of the batch is stored"
                );
            }
        }
    }
    assert_eq!(store.stream_version(&s).await.expect("version"), 0);
    assert!(read_everything(&store, 10).await.is_empty());
    assert_eq!(store.head_position().await.expect("head"), 0);
}

/// Event type names holding a control character (C0, DEL or C1) are refused with
/// [`StoreError::InvalidEventType`] naming the name and the stream; nothing of the batch is
/// stored. Format characters such as a zero-width space are text, and allowed.
pub async fn control_characters_in_event_types_are_refused<S: EventStore>(store: S) {
    let s = stream("order-1");
    for bad in [
        "A\nB",
        "\u{0}",
        "Tab\t",
        "Del\u{7f}",
        "C1\u{85}",
        "\u{1b}[31mRed",
    ] {
        let mut batch = events(2);
        batch[1].event_type = bad.to_owned();
        match store.append(&s, ExpectedVersion::Any, &batch).await {
            Err(StoreError::InvalidEventType {
                event_type,
                stream: st,
            }) => {
                assert_eq!(event_type, bad);
                assert_eq!(st, s);
            }
            other => panic!("expected InvalidEventType for {bad:?}, got {other:?}"),
        }
    }
    assert!(versions(&store, &s).await.is_empty());
    assert_eq!(store.head_position().await.expect("head"), 0);
    let allowed = event("Zero\u{200b}Width", 1);
    store
        .append(&s, ExpectedVersion::NoStream, &[allowed])
        .await
        .expect("a format character is allowed");
    assert_eq!(versions(&store, &s).await, [1]);
}

/// A rejection's text holding a NUL character (a command's input can carry one into it) is
/// recorded by every store, and reads back with U+FFFD in its place, every other character
/// kept.
pub async fn command_log_keeps_hostile_messages<S: EventStore>(store: S) {
    let s = stream("order-1");
    let command_id = Uuid::now_v7();
    let record = CommandRecord {
        command_id,
        stream_id: s.clone(),
        version: 0,
        outcome: CommandOutcome::Rejected {
            message: format!("bad name 'a\u{0}b'; --{}", big_hostile_text()),
        },
    };
    assert_eq!(store.record_command(&record).await.expect("record"), None);
    let stored = CommandRecord {
        outcome: CommandOutcome::Rejected {
            message: format!("bad name 'a\u{fffd}b'; --{}", big_hostile_text()),
        },
        ..record.clone()
    };
    assert_eq!(
        store.command_record(command_id).await.expect("read"),
        Some(stored.clone())
    );
    assert_eq!(
        store.record_command(&record).await.expect("record again"),
        Some(stored),
        "the first outcome, as stored"
    );
}

/// A snapshot whose state holds a NUL character is refused with the same typed error by every
/// store, naming the stream, the version and where; nothing of it is kept, and an earlier
/// snapshot stays the latest.
pub async fn nul_characters_in_snapshots_are_refused<S: EventStore>(store: S) {
    let s = stream("counter-nul");
    let snap = |version: u64, state: serde_json::Value| Snapshot {
        stream_id: s.clone(),
        version,
        schema_version: 1,
        state: Payload::encode(&state).expect("json"),
        taken_at: Utc::now(),
    };
    store
        .save_snapshot(&snap(3, json!({ "name": "fine" })))
        .await
        .expect("a clean state is kept");
    let error = store
        .save_snapshot(&snap(7, json!({ "lines": [{ "sku": "a\u{0}b" }] })))
        .await
        .expect_err("a NUL in the state is refused");
    match &error {
        StoreError::NulCharacterInSnapshot {
            stream,
            version,
            path,
        } => assert_eq!((stream, *version, path.as_str()), (&s, 7, "$.lines[0].sku")),
        other => panic!("expected NulCharacterInSnapshot, got {other:?}"),
    }
    let message = error.to_string();
    assert!(
        message.contains("counter-nul") && message.contains("version 7"),
        "{message}"
    );
    let latest = store
        .load_snapshot(&s, 1, None)
        .await
        .expect("load")
        .expect("the earlier snapshot");
    assert_eq!(latest.version, 3);
}

// --- Tenants: cases for a store in multi-tenant mode, bound to no tenant ---------------------

fn tenant(name: &str) -> crate::tenant::TenantId {
    crate::tenant::TenantId::new(name).expect("valid tenant id")
}

fn bound<S: EventStore>(store: &S, name: &str) -> S {
    store
        .tenant(&tenant(name))
        .expect("a multi-tenant store binds a tenant")
}

fn of_tenant(event: NewEvent, name: &str) -> NewEvent {
    let mut event = event;
    event.metadata.tenant = Some(name.to_owned());
    event
}

#[track_caller]
fn assert_tenant_error<T: std::fmt::Debug>(
    result: Result<T, StoreError>,
    expected: &crate::tenant::TenantError,
) {
    match result {
        Err(StoreError::Tenant(error)) => assert_eq!(&error, expected),
        other => panic!("expected StoreError::Tenant({expected:?}), got {other:?}"),
    }
}

/// Two tenants appending to the same stream id have two streams, and each reads, loads,
/// subscribes to and looks up only its own events, snapshots and command outcomes; global
/// positions stay one order across them.
pub async fn tenants_are_isolated<S: EventStore>(store: S) {
    let (acme, globex) = (bound(&store, "acme"), bound(&store, "globex"));
    assert_eq!(acme.bound_tenant(), Some(&tenant("acme")));
    let s = stream("order-1");
    let command_id = Uuid::now_v7();
    let acme_events = vec![
        with_command(event("Placed", 1), command_id),
        event("Paid", 2),
    ];
    acme.append(&s, ExpectedVersion::NoStream, &acme_events)
        .await
        .expect("acme appends");
    // The same stream id, and the same version, in the other tenant: another stream.
    let globex_event = event("Placed", 3);
    let appended = globex
        .append(
            &s,
            ExpectedVersion::NoStream,
            std::slice::from_ref(&globex_event),
        )
        .await
        .expect("globex appends to its own stream of the same id");
    assert_eq!(appended.version, 1);
    assert!(
        appended.first_position > 0,
        "positions are one order across tenants"
    );

    let read = acme
        .read_stream(&s, &StreamRead::all())
        .await
        .expect("read");
    assert_eq!(
        read.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        acme_events.iter().map(|e| e.event_id).collect::<Vec<_>>()
    );
    assert!(
        read.iter()
            .all(|e| e.metadata.tenant.as_deref() == Some("acme")),
        "events appended through a tenant's handle carry its tenant"
    );
    let theirs = globex
        .read_stream(&s, &StreamRead::all())
        .await
        .expect("read");
    assert_eq!(
        theirs.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        [globex_event.event_id]
    );
    assert_eq!(acme.stream_version(&s).await.expect("version"), 2);
    assert_eq!(globex.stream_version(&s).await.expect("version"), 1);
    assert_eq!(
        globex
            .replay_stream(&s, &StreamRead::all())
            .await
            .expect("replay")
            .len(),
        1
    );
    assert_eq!(
        globex
            .load_aggregate(&s, 1, None)
            .await
            .expect("load")
            .events
            .len(),
        1
    );

    // Global reads and subscriptions: each tenant's own events, never the other's.
    let all_acme = read_everything(&acme, 1).await;
    assert_eq!(all_acme.len(), 2);
    assert!(
        all_acme
            .iter()
            .all(|e| e.metadata.tenant.as_deref() == Some("acme"))
    );
    assert!(all_acme.windows(2).all(|w| w[0].position < w[1].position));
    let subscribed = subscribe(&globex, Default::default(), 1).await;
    assert_eq!(
        subscribed.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        [globex_event.event_id]
    );
    assert!(
        globex.head_position().await.expect("head") >= appended.first_position,
        "a tenant's head covers its own events"
    );

    // Lookups by id and command id: none of the other tenant's.
    assert!(
        globex
            .event_by_id(acme_events[0].event_id)
            .await
            .expect("lookup")
            .is_none()
    );
    assert!(
        acme.event_by_id(acme_events[0].event_id)
            .await
            .expect("lookup")
            .is_some()
    );
    assert!(
        globex
            .command_record(command_id)
            .await
            .expect("lookup")
            .is_none(),
        "a command outcome is its tenant's"
    );
    assert_eq!(
        acme.command_record(command_id)
            .await
            .expect("lookup")
            .map(|r| r.stream_id),
        Some(s.clone())
    );

    // Snapshots.
    let snapshot = Snapshot {
        stream_id: s.clone(),
        version: 2,
        schema_version: 1,
        state: Payload::encode(&json!({"secret": "acme"})).expect("json"),
        taken_at: Utc::now(),
    };
    acme.save_snapshot(&snapshot).await.expect("save snapshot");
    assert!(
        globex
            .load_snapshot(&s, 1, None)
            .await
            .expect("load")
            .is_none()
    );
    assert!(
        globex
            .load_aggregate(&s, 1, None)
            .await
            .expect("load")
            .snapshot
            .is_none()
    );
    assert_eq!(
        acme.load_snapshot(&s, 1, None)
            .await
            .expect("load")
            .map(|s| s.state),
        Some(snapshot.state)
    );
}

/// Appends through a tenant's handle fill in its tenant and refuse events naming another;
/// the unbound store appends under the tenant its events name, and refuses events naming
/// none, several or an invalid one. A refused append stores nothing.
pub async fn tenant_appends_are_checked<S: EventStore>(store: S) {
    use crate::tenant::TenantError;
    let (acme, globex) = (bound(&store, "acme"), bound(&store, "globex"));
    let s = stream("order-2");

    let foreign = of_tenant(event("Placed", 1), "globex");
    match acme
        .append(
            &s,
            ExpectedVersion::Any,
            &[event("Placed", 0), foreign.clone()],
        )
        .await
    {
        Err(StoreError::Tenant(TenantError::Mismatch {
            tenant,
            event_tenant,
            event_id,
            stream: named,
        })) => {
            assert_eq!((tenant.as_str(), event_tenant.as_str()), ("acme", "globex"));
            assert_eq!((event_id, named), (foreign.event_id, s.clone()));
        }
        other => panic!("expected a tenant mismatch, got {other:?}"),
    }

    // The unbound store: the tenant comes from the events.
    let named = of_tenant(event("Placed", 2), "globex");
    store
        .append(
            &s,
            ExpectedVersion::NoStream,
            &[named.clone(), event("Paid", 3)],
        )
        .await
        .expect("an append whose events name a tenant");
    assert_eq!(acme.stream_version(&s).await.expect("version"), 0);
    let theirs = globex
        .read_stream(&s, &StreamRead::all())
        .await
        .expect("read");
    assert_eq!(theirs.len(), 2);
    assert!(
        theirs
            .iter()
            .all(|e| e.metadata.tenant.as_deref() == Some("globex"))
    );

    assert_tenant_error(
        store
            .append(&s, ExpectedVersion::Any, &[event("Paid", 4)])
            .await,
        &TenantError::Required {
            operation: "an append",
        },
    );
    assert_tenant_error(
        store.append(&s, ExpectedVersion::Any, &[]).await,
        &TenantError::Required {
            operation: "an append",
        },
    );
    let mixed = [
        of_tenant(event("Paid", 5), "globex"),
        of_tenant(event("Paid", 6), "acme"),
    ];
    assert!(matches!(
        store.append(&s, ExpectedVersion::Any, &mixed).await,
        Err(StoreError::Tenant(TenantError::Mismatch { .. }))
    ));
    assert_tenant_error(
        store
            .append(&s, ExpectedVersion::Any, &[of_tenant(event("Paid", 7), "")])
            .await,
        &TenantError::Empty,
    );
    assert!(matches!(
        store
            .append(
                &s,
                ExpectedVersion::Any,
                &[of_tenant(event("Paid", 8), "a\tb")]
            )
            .await,
        Err(StoreError::Tenant(TenantError::ControlCharacter { .. }))
    ));
    let long = "t".repeat(crate::tenant::MAX_TENANT_LEN + 1);
    assert!(matches!(
        store
            .append(
                &s,
                ExpectedVersion::Any,
                &[of_tenant(event("Paid", 9), &long)]
            )
            .await,
        Err(StoreError::Tenant(TenantError::TooLong { .. }))
    ));
    assert_eq!(globex.stream_version(&s).await.expect("version"), 2);
    assert!(read_everything(&acme, 100).await.is_empty());
}

/// The unbound multi-tenant store refuses every read, load, snapshot and command lookup
/// with [`TenantError::Required`](crate::tenant::TenantError::Required), and a repository
/// over it refuses a command before anything is written.
pub async fn tenant_required_for_reads<S: EventStore>(store: S) {
    use crate::tenant::TenantError;
    let acme = bound(&store, "acme");
    let s = stream("counter-c-1");
    acme.append(&s, ExpectedVersion::NoStream, &events(1))
        .await
        .expect("append");
    let required = |operation| TenantError::Required { operation };
    let refused = |result: Result<(), StoreError>| match result {
        Err(StoreError::Tenant(TenantError::Required { .. })) => {}
        other => panic!("expected TenantError::Required, got {other:?}"),
    };
    assert_tenant_error(
        store.read_stream(&s, &StreamRead::all()).await,
        &required("a stream read"),
    );
    refused(store.replay_stream(&s, &StreamRead::all()).await.map(drop));
    refused(store.stream_version(&s).await.map(drop));
    refused(store.read_all(&ReadAll::after(0)).await.map(drop));
    refused(store.head_position().await.map(drop));
    refused(store.event_by_id(Uuid::now_v7()).await.map(drop));
    refused(store.load_snapshot(&s, 1, None).await.map(drop));
    refused(store.load_aggregate(&s, 1, None).await.map(drop));
    refused(store.command_record(Uuid::now_v7()).await.map(drop));
    let snapshot = Snapshot {
        stream_id: s.clone(),
        version: 1,
        schema_version: 1,
        state: Payload::encode(&json!({})).expect("json"),
        taken_at: Utc::now(),
    };
    refused(store.save_snapshot(&snapshot).await);
    refused(
        store
            .record_command(&record(Uuid::now_v7(), &s, CommandOutcome::NoEvents))
            .await
            .map(drop),
    );
    assert!(
        acme.load_snapshot(&s, 1, None)
            .await
            .expect("load")
            .is_none(),
        "the refused snapshot was not saved"
    );

    // A repository over the unbound store: the command is refused, nothing is appended.
    let repo = CounterRepo::new(store.clone());
    match repo
        .execute_on("c-1", Increment { by: 1 }, Metadata::new())
        .await
    {
        Err(Error::Store(StoreError::Tenant(TenantError::Required { .. }))) => {}
        other => panic!("expected a refusal for want of a tenant, got {other:?}"),
    }
    assert_eq!(acme.stream_version(&s).await.expect("version"), 1);

    // Through a tenant's handle the repository works, and sees only that tenant.
    let globex = CounterRepo::new(bound(&store, "globex"));
    let done = globex
        .execute_on("c-1", Increment { by: 4 }, Metadata::new())
        .await
        .expect("execute in globex");
    assert_eq!(
        done.version, 1,
        "globex's counter-c-1 is a stream of its own"
    );
    let recorded = bound(&store, "globex")
        .read_stream(&s, &StreamRead::all())
        .await
        .expect("read");
    assert_eq!(recorded[0].metadata.tenant.as_deref(), Some("globex"));
    assert_eq!(acme.stream_version(&s).await.expect("version"), 1);
}

/// A projection runs per tenant: on a tenant's handle it delivers that tenant's events only;
/// on the unbound store it delivers nothing and reports, in its status, that its reads need
/// a tenant (it never reads an empty stream in silence).
pub async fn tenant_projections_run_per_tenant<S: EventStore>(store: S) {
    use super::projections::{RecordingProjection, append_tested, eventually};
    use crate::projection::{FailurePolicy, ProjectionOptions, ProjectionRunner};
    let (acme, globex) = (bound(&store, "acme"), bound(&store, "globex"));
    let (first, _) = append_tested(&acme, "order-1", 1).await;
    append_tested(&globex, "order-1", 2).await;
    let (second, acme_head) = append_tested(&acme, "order-2", 3).await;
    let options = || {
        ProjectionOptions::new()
            .poll_interval(std::time::Duration::from_millis(20))
            .failure(FailurePolicy::park_after(3).backoff(
                std::time::Duration::from_millis(10),
                std::time::Duration::from_millis(40),
            ))
    };

    let per_tenant = RecordingProjection::new("orders@acme");
    let running = ProjectionRunner::new(acme.clone())
        .register(Arc::clone(&per_tenant), options())
        .start();
    tokio::time::timeout(
        std::time::Duration::from_secs(120),
        running.wait_for("orders@acme", acme_head),
    )
    .await
    .expect("the projection catches up within two minutes")
    .expect("the projection runs");
    assert_eq!(
        per_tenant
            .recording()
            .applied
            .keys()
            .copied()
            .collect::<BTreeSet<_>>(),
        BTreeSet::from([first, second]),
        "acme's events, none of globex's"
    );
    running.shutdown().await.expect("shutdown");

    let unbound = RecordingProjection::new("orders");
    let running = ProjectionRunner::new(store.clone())
        .register(Arc::clone(&unbound), options())
        .start();
    eventually("the runner reports that its reads need a tenant", || {
        let status = running.status();
        async move {
            status.iter().any(|s| {
                s.error
                    .as_deref()
                    .is_some_and(|e| e.contains("needs a tenant"))
            })
        }
    })
    .await;
    assert!(unbound.recording().applied.is_empty());
    running.shutdown().await.expect("shutdown");
}

/// A process manager runs per tenant: on a tenant's handle it routes that tenant's events
/// only, and the commands it dispatches through a repository on the same handle append
/// under that tenant; the other tenant's flow of the same id is left alone.
pub async fn tenant_process_managers_run_per_tenant<S: EventStore>(store: S) {
    use super::process_managers::{CounterDispatcher, FLOW, ProcessRuntimeStores};
    use crate::coordination::{MemoryCheckpointStore, MemoryLeaseStore};
    use crate::process_manager::{ManualClock, MemoryProcessStore};
    let (acme, globex) = (bound(&store, "acme"), bound(&store, "globex"));
    let flow = stream("flow-a");
    globex
        .append(&flow, ExpectedVersion::NoStream, &[event("FlowStarted", 5)])
        .await
        .expect("globex starts its flow `a`");
    let head = acme
        .append(&flow, ExpectedVersion::NoStream, &[event("FlowStarted", 2)])
        .await
        .expect("acme starts its flow `a`")
        .last_position;

    let stores = ProcessRuntimeStores {
        events: acme.clone(),
        processes: MemoryProcessStore::new(),
        checkpoints: MemoryCheckpointStore::new(),
        leases: MemoryLeaseStore::new(),
    };
    let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
    let running = stores.start_flow(
        "a",
        CounterDispatcher::new(acme.clone(), Arc::clone(&calls)),
        ManualClock::new(Utc::now()),
    );
    tokio::time::timeout(
        std::time::Duration::from_secs(120),
        running.wait_for(FLOW, head),
    )
    .await
    .expect("the process manager catches up within two minutes")
    .expect("the process manager runs");
    running.shutdown().await.expect("shutdown");

    let dispatched = calls
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .len();
    assert_eq!(dispatched, 1, "acme's flow only: one command");
    assert_eq!(
        stores.counter("a").await,
        2,
        "acme's counter got acme's command"
    );
    let counter = stream("counter-a");
    let applied = acme
        .read_stream(&counter, &StreamRead::all())
        .await
        .expect("read");
    assert!(
        applied
            .iter()
            .all(|e| e.metadata.tenant.as_deref() == Some("acme"))
    );
    assert_eq!(
        globex.stream_version(&counter).await.expect("version"),
        0,
        "nothing was dispatched for globex's flow"
    );
}
