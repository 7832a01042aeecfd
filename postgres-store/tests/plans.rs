//! The plans of the statements that load aggregates: an ordered index scan of the stream's
//! versions, never a sort, from the first execution of the prepared statement to the
//! generic plan that PostgreSQL switches to after the fifth. The same for a read of one
//! partition of the streams: a range of the partition index, in position order.

mod common;

use common::{raw_client, schema, store};
use factum::store::NewEvent;
use factum::{EventStore, ExpectedVersion, StreamId};
use serde_json::Value;

/// Executions explained per statement: five custom plans, then the generic one.
const EXECUTIONS: usize = 8;

/// A stream of 10,000 events among 95 of 1,000, with fresh statistics: what makes the planner choose a
/// bitmap scan and a sort for the long stream when it sees the stream id.
async fn long_stream() -> (factum_postgres::PgStore, StreamId) {
    let store = store().await;
    let long = StreamId::new("counter", "long").expect("stream id");
    for chunk in 0..10 {
        store
            .append(
                &long,
                ExpectedVersion::Exact(chunk * 1000),
                &common::events(1000),
            )
            .await
            .expect("append");
    }
    for i in 0..95 {
        let events: Vec<NewEvent> = common::events(1000);
        store
            .append(
                &common::stream(&format!("o{i}")),
                ExpectedVersion::NoStream,
                &events,
            )
            .await
            .expect("append");
    }
    raw_client()
        .await
        .batch_execute(&format!("ANALYZE {}.events", schema(&store)))
        .await
        .expect("analyze");
    (store, long)
}

/// The plan nodes of `plan` (the `Plan` of `EXPLAIN (FORMAT JSON)`) and of its children.
fn nodes(plan: &Value, out: &mut Vec<Value>) {
    out.push(plan.clone());
    for child in plan["Plans"].as_array().into_iter().flatten() {
        nodes(child, out);
    }
}

/// Prepares `sql` (with the store's schema) as `name(types)`, explains `EXECUTE
/// name(args)` [`EXECUTIONS`] times, and checks that every plan reads the events by an
/// index scan of `events_stream_version_key` and sorts nothing.
async fn assert_ordered_index_scan(
    store: &factum_postgres::PgStore,
    name: &str,
    sql: &str,
    types: &str,
    args: &str,
) {
    let client = raw_client().await;
    let sql = sql.replace("__SCHEMA__", &schema(store));
    client
        .batch_execute(&format!("PREPARE {name}({types}) AS {sql}"))
        .await
        .expect("prepare");
    for execution in 1..=EXECUTIONS {
        let row = client
            .query_one(
                &format!("EXPLAIN (FORMAT JSON) EXECUTE {name}({args})"),
                &[],
            )
            .await
            .expect("explain");
        let explained: Value = row.get(0);
        let mut all = Vec::new();
        nodes(&explained[0]["Plan"], &mut all);
        let kinds: Vec<&str> = all
            .iter()
            .map(|n| n["Node Type"].as_str().unwrap_or("?"))
            .collect();
        let on_events: Vec<&Value> = all
            .iter()
            .filter(|n| n["Relation Name"] == "events")
            .collect();
        assert!(
            !on_events.is_empty()
                && on_events.iter().all(|n| n["Node Type"] == "Index Scan"
                    && n["Index Name"] == "events_stream_version_key"),
            "{name}, execution {execution}: events not read by an index scan of \
             events_stream_version_key: {kinds:?}\n{explained:#}"
        );
        assert!(
            !kinds.contains(&"Sort") && !kinds.contains(&"Incremental Sort"),
            "{name}, execution {execution}: the plan sorts: {kinds:?}\n{explained:#}"
        );
    }
}

#[tokio::test]
async fn replay_is_an_ordered_index_scan_in_every_plan() {
    let (store, long) = long_stream().await;
    assert_ordered_index_scan(
        &store,
        "replay",
        include_str!("../sql/replay_stream.sql"),
        "text, bigint, bigint, bigint",
        &format!("'{long}', 1, 9223372036854775807, NULL"),
    )
    .await;
}

#[tokio::test]
async fn load_aggregate_is_an_ordered_index_scan_in_every_plan() {
    let (store, long) = long_stream().await;
    assert_ordered_index_scan(
        &store,
        "load",
        include_str!("../sql/load_aggregate.sql"),
        "text, integer, bigint",
        &format!("'{long}', 1, 9223372036854775807"),
    )
    .await;
}

/// 20,000 events in 200 streams, analyzed: a read of partition 1 of 4 with the indexes of 4
/// partitions is an index scan of partition 1's index bounded by the position (a range, not a filter
/// over the log), with no sort, in every plan; and it returns exactly the partition's events.
#[tokio::test]
async fn partition_read_is_a_range_of_the_partition_index_in_every_plan() {
    let store = store().await;
    for i in 0..200 {
        store
            .append(
                &common::stream(&format!("p{i}")),
                ExpectedVersion::NoStream,
                &common::events(100),
            )
            .await
            .expect("append");
    }
    assert!(matches!(
        store.create_partition_index(0).await,
        Err(factum_postgres::PgError::InvalidPartitionCount { count: 0 })
    ));
    // ANCHOR: partition_index
    // Once per number of partitions in use, as the tables' owner: one index per partition.
    store.create_partition_index(4).await.expect("index");
    // ANCHOR_END: partition_index
    // Again: nothing to do.
    store.create_partition_index(4).await.expect("index again");
    let client = raw_client().await;
    client
        .batch_execute(&format!("ANALYZE {}.events", schema(&store)))
        .await
        .expect("analyze");
    let sql = store.partition_read_statement(1, 4);
    client
        .batch_execute(&format!(
            "PREPARE part(bigint, bigint, text[], text[]) AS {sql}"
        ))
        .await
        .expect("prepare");
    for execution in 1..=EXECUTIONS {
        let row = client
            .query_one(
                "EXPLAIN (FORMAT JSON) EXECUTE part(0, 1000, '{}', '{}')",
                &[],
            )
            .await
            .expect("explain");
        let explained: Value = row.get(0);
        let mut all = Vec::new();
        nodes(&explained[0]["Plan"], &mut all);
        let kinds: Vec<&str> = all
            .iter()
            .map(|n| n["Node Type"].as_str().unwrap_or("?"))
            .collect();
        let on_events: Vec<&Value> = all
            .iter()
            .filter(|n| n["Relation Name"] == "events")
            .collect();
        // The subquery of the read bound reads the head through the primary key; the
        // partition's events come from the partition index, bounded by position in it.
        let scans: Vec<&&Value> = on_events
            .iter()
            .filter(|n| n["Index Name"] == "events_partition_4_1_idx")
            .collect();
        assert!(
            scans.len() == 1
                && scans[0]["Node Type"] == "Index Scan"
                && scans[0]["Index Cond"]
                    .as_str()
                    .is_some_and(|c| c.contains("\"position\" >")),
            "execution {execution}: the partition is not read as a range of its index: \
             {kinds:?}\n{explained:#}"
        );
        assert!(
            on_events
                .iter()
                .all(|n| n["Node Type"] != "Seq Scan" && n["Node Type"] != "Bitmap Heap Scan"),
            "execution {execution}: the plan scans the log: {kinds:?}\n{explained:#}"
        );
        assert!(
            !kinds.contains(&"Sort") && !kinds.contains(&"Incremental Sort"),
            "execution {execution}: the plan sorts: {kinds:?}\n{explained:#}"
        );
    }
    // ANCHOR: partition_read
    // The events of the streams of partition 1 of 4, in global order: what the second of
    // four projection workers reads.
    let partition = factum::store::StreamPartition::new(1, 4).expect("partition");
    let read = store
        .read_all(
            &factum::store::ReadAll::after(0)
                .limit(100_000)
                .partition(partition),
        )
        .await
        .expect("read");
    // ANCHOR_END: partition_read
    let all = store
        .read_all(&factum::store::ReadAll::after(0).limit(100_000))
        .await
        .expect("read");
    let expected: Vec<_> = all
        .into_iter()
        .filter(|e| partition.contains(&e.stream_id))
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(read, expected);
}
