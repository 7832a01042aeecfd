//! Reads: streams, all events with filters, by id, snapshots.

mod common;

use chrono::Utc;
use common::*;
use factum::store::{NewEvent, Payload, ReadAll, Snapshot, StreamRead};
use factum::{EventStore, ExpectedVersion, Metadata, StreamId};
use uuid::Uuid;

fn typed(event_type: &str, n: u64) -> NewEvent {
    NewEvent {
        event_type: event_type.into(),
        ..event(n)
    }
}

#[tokio::test]
async fn stream_reads_honour_bounds_and_limits() {
    let store = store().await;
    let s = stream("r");
    store
        .append(&s, ExpectedVersion::NoStream, &events(5))
        .await
        .unwrap();
    let cut = Utc::now();
    store
        .append(&s, ExpectedVersion::Exact(5), &events(3))
        .await
        .unwrap();
    let versions = |events: Vec<factum::RecordedEvent>| -> Vec<u64> {
        events.iter().map(|e| e.stream_version).collect()
    };
    let all = store.read_stream(&s, &StreamRead::all()).await.unwrap();
    assert_eq!(versions(all.clone()), [1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(
        versions(
            store
                .read_stream(&s, &StreamRead::from_version(3).to_version(6))
                .await
                .unwrap()
        ),
        [3, 4, 5, 6]
    );
    assert_eq!(
        versions(
            store
                .read_stream(&s, &StreamRead::from_version(2).limit(2))
                .await
                .unwrap()
        ),
        [2, 3]
    );
    assert_eq!(
        versions(
            store
                .read_stream(&s, &StreamRead::all().until(cut))
                .await
                .unwrap()
        ),
        [1, 2, 3, 4, 5]
    );
    assert!(
        store
            .read_stream(&s, &StreamRead::from_version(9))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .read_stream(&s, &StreamRead::from_version(4).to_version(3))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .read_stream(&s, &StreamRead::all().limit(0))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .read_stream(&stream("none"), &StreamRead::all())
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        versions(
            store
                .read_stream(&s, &StreamRead::from_version(7).to_version(u64::MAX))
                .await
                .unwrap()
        ),
        [7, 8]
    );

    // The envelope comes back whole.
    let first = &all[0];
    assert_eq!(first.stream_id, s);
    assert_eq!(first.event_type, "Happened");
    assert_eq!(first.schema_version, 1);
    assert_eq!(
        first.payload,
        Payload::encode(&serde_json::json!({"n": 0})).unwrap()
    );
    assert_eq!(first.metadata.actor.as_deref(), Some("tester"));
    assert!(all.windows(2).all(|w| w[0].recorded_at <= w[1].recorded_at));
}

#[tokio::test]
async fn read_all_filters_by_category_and_type_in_batches() {
    let store = store().await;
    let order = StreamId::new("order", "1").unwrap();
    let invoice = StreamId::new("invoice", "1").unwrap();
    let mut expected_positions = Vec::new();
    for i in 0..6 {
        let (s, t) = if i % 2 == 0 {
            (&order, "Placed")
        } else {
            (&invoice, "Billed")
        };
        let r = store
            .append(s, ExpectedVersion::Any, &[typed(t, i), typed("Noted", i)])
            .await
            .unwrap();
        expected_positions.extend([r.first_position, r.last_position]);
    }
    let all = store.read_all(&ReadAll::after(0)).await.unwrap();
    let positions: Vec<u64> = all.iter().map(|e| e.position).collect();
    assert_eq!(positions, expected_positions);

    // Batches.
    let mut after = 0;
    let mut batched = Vec::new();
    loop {
        let batch = store
            .read_all(&ReadAll::after(after).limit(5))
            .await
            .unwrap();
        assert!(batch.len() <= 5);
        let Some(last) = batch.last() else { break };
        after = last.position;
        batched.extend(batch.iter().map(|e| e.position));
    }
    assert_eq!(batched, expected_positions);
    assert!(
        store
            .read_all(&ReadAll::after(0).limit(0))
            .await
            .unwrap()
            .is_empty()
    );

    let orders = store
        .read_all(&ReadAll::after(0).categories(["order"]))
        .await
        .unwrap();
    assert_eq!(orders.len(), 6);
    assert!(orders.iter().all(|e| e.stream_id.category() == "order"));
    let billed = store
        .read_all(&ReadAll::after(0).event_types(["Billed"]))
        .await
        .unwrap();
    assert_eq!(billed.len(), 3);
    let both = store
        .read_all(
            &ReadAll::after(0)
                .categories(["order", "invoice"])
                .event_types(["Placed", "Billed"]),
        )
        .await
        .unwrap();
    assert_eq!(both.len(), 6);
    let none = store
        .read_all(
            &ReadAll::after(0)
                .categories(["order"])
                .event_types(["Billed"]),
        )
        .await
        .unwrap();
    assert!(none.is_empty());
    let read = ReadAll::after(0)
        .categories(["invoice"])
        .event_types(["Noted"]);
    let expected: Vec<_> = all.iter().filter(|e| read.matches(e)).cloned().collect();
    assert_eq!(store.read_all(&read).await.unwrap(), expected);

    assert_eq!(
        store.head_position().await.unwrap(),
        *expected_positions.last().unwrap()
    );
    assert!(
        store
            .read_all(&ReadAll::after(u64::MAX))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn events_are_found_by_id() {
    let store = store().await;
    let e = NewEvent {
        metadata: Metadata::new()
            .correlation_id(Uuid::now_v7())
            .tenant("acme")
            .with("ip", "10.0.0.1"),
        ..event(1)
    };
    let r = store
        .append(
            &stream("id"),
            ExpectedVersion::Any,
            std::slice::from_ref(&e),
        )
        .await
        .unwrap();
    let found = store.event_by_id(e.event_id).await.unwrap().unwrap();
    assert_eq!(found.position, r.first_position);
    assert_eq!(found.metadata, e.metadata);
    assert!(e.same_content(&found));
    assert!(store.event_by_id(Uuid::now_v7()).await.unwrap().is_none());
    assert_eq!(store.stream_version(&stream("id")).await.unwrap(), 1);
    assert_eq!(store.stream_version(&stream("nope")).await.unwrap(), 0);
}

#[tokio::test]
async fn snapshots_upsert_and_load_the_latest_fitting_one() {
    let store = store().await;
    let s = stream("snap");
    let snap = |version: u64, schema_version: u32, n: u64| Snapshot {
        stream_id: s.clone(),
        version,
        schema_version,
        state: Payload::encode(&serde_json::json!({ "n": n })).unwrap(),
        taken_at: Utc::now(),
    };
    assert!(store.load_snapshot(&s, 1, None).await.unwrap().is_none());
    store.save_snapshot(&snap(10, 1, 1)).await.unwrap();
    store.save_snapshot(&snap(20, 1, 2)).await.unwrap();
    store.save_snapshot(&snap(30, 2, 3)).await.unwrap();
    // Same key: replaced.
    store.save_snapshot(&snap(20, 1, 22)).await.unwrap();

    let latest = store.load_snapshot(&s, 1, None).await.unwrap().unwrap();
    assert_eq!((latest.version, latest.schema_version), (20, 1));
    assert_eq!(
        latest.state,
        Payload::encode(&serde_json::json!({"n": 22})).unwrap()
    );
    assert_eq!(latest.stream_id, s);
    assert_eq!(
        store
            .load_snapshot(&s, 1, Some(19))
            .await
            .unwrap()
            .unwrap()
            .version,
        10
    );
    assert_eq!(
        store
            .load_snapshot(&s, 1, Some(20))
            .await
            .unwrap()
            .unwrap()
            .version,
        20
    );
    assert!(store.load_snapshot(&s, 1, Some(9)).await.unwrap().is_none());
    assert_eq!(
        store
            .load_snapshot(&s, 2, None)
            .await
            .unwrap()
            .unwrap()
            .version,
        30
    );
    assert!(store.load_snapshot(&s, 3, None).await.unwrap().is_none());
    assert!(
        store
            .load_snapshot(&stream("other"), 1, None)
            .await
            .unwrap()
            .is_none()
    );
}
