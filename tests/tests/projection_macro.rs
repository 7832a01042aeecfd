//! `#[projection]` read models run through the projection runner on the in-memory store:
//! upcast and split old versions, handlers with the recorded event, categories, handler and
//! decode errors, rebuilds.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use factum::coordination::{ParkReason, ParkedEvent};
use factum::prelude::*;
use factum::projection::{FailurePolicy, ProjectionOptions, ProjectionRunner, RunningProjections};
use factum::store::{DecodeError, NewEvent, Payload};
use factum::{ExpectedVersion, MemoryStore, Metadata, Projection, RecordedEvent, StreamId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

// ANCHOR: events
/// The first version, stored as `("OrderCreated", 1)` before the event was renamed.
#[event(name = "OrderCreated", version = 1, upcast_to = OrderPlaced)]
#[derive(Debug, Deserialize)]
pub struct OrderCreatedV1 {
    pub order_id: String,
    pub cents: u64,
}

impl From<OrderCreatedV1> for OrderPlaced {
    fn from(v1: OrderCreatedV1) -> Self {
        Self {
            order_id: v1.order_id,
            cents: v1.cents,
            currency: "EUR".into(),
        }
    }
}

#[event(version = 2, previous = OrderCreatedV1)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderPlaced {
    pub order_id: String,
    pub cents: u64,
    pub currency: String,
}

/// An event of the shipment aggregate.
#[event]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShipmentDispatched {
    pub order_id: String,
    pub carrier: String,
}
// ANCHOR_END: events

/// The old `LinesAdded` carried every line; each line is now its own `LineAdded`.
#[event(name = "LinesAdded", version = 1, upcast_to = LineAdded, upcast_with = split_lines)]
#[derive(Debug, Deserialize)]
pub struct LinesAddedV1 {
    pub order_id: String,
    pub skus: Vec<String>,
}

fn split_lines(v1: LinesAddedV1) -> Vec<LineAdded> {
    v1.skus
        .into_iter()
        .map(|sku| LineAdded {
            order_id: v1.order_id.clone(),
            sku,
        })
        .collect()
}

#[event(version = 2, previous = LinesAddedV1)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LineAdded {
    pub order_id: String,
    pub sku: String,
}

/// An event no projection here handles.
#[event]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderNoted {
    pub order_id: String,
}

// ANCHOR: projection
/// One row per order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OrderRow {
    pub cents: u64,
    pub currency: String,
    pub lines: Vec<String>,
    pub carrier: Option<String>,
    /// The position of the last event applied to the row.
    pub position: u64,
}

#[derive(Debug, Default)]
pub struct OrderList {
    rows: Mutex<BTreeMap<String, OrderRow>>,
}

#[projection(name = "order_list")]
impl OrderList {
    async fn placed(&self, event: &OrderPlaced, recorded: &RecordedEvent) {
        let mut rows = self.rows.lock().unwrap();
        let row = rows.entry(event.order_id.clone()).or_default();
        row.cents = event.cents;
        row.currency.clone_from(&event.currency);
        row.position = recorded.position;
    }

    async fn line_added(&self, event: &LineAdded) -> Result<(), ListError> {
        let mut rows = self.rows.lock().unwrap();
        let row = rows
            .get_mut(&event.order_id)
            .ok_or_else(|| ListError::UnknownOrder(event.order_id.clone()))?;
        row.lines.push(event.sku.clone());
        Ok(())
    }

    async fn dispatched(&self, event: &ShipmentDispatched) -> Result<(), ListError> {
        let mut rows = self.rows.lock().unwrap();
        let row = rows
            .get_mut(&event.order_id)
            .ok_or_else(|| ListError::UnknownOrder(event.order_id.clone()))?;
        row.carrier = Some(event.carrier.clone());
        Ok(())
    }

    #[reset]
    async fn clear(&self) {
        self.rows.lock().unwrap().clear();
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error("no order `{0}`")]
    UnknownOrder(String),
}
// ANCHOR_END: projection

impl OrderList {
    fn rows(&self) -> BTreeMap<String, OrderRow> {
        self.rows.lock().unwrap().clone()
    }
}

/// Counts placed orders of the `order` category only.
#[derive(Debug, Default)]
pub struct PlacedInOrders {
    count: Mutex<u64>,
}

#[projection(name = "placed_in_orders", categories = ["order"])]
impl PlacedInOrders {
    async fn placed(&self, _: &OrderPlaced) -> std::io::Result<()> {
        *self.count.lock().unwrap() += 1;
        Ok(())
    }
}

fn stream(category: &str, id: &str) -> StreamId {
    StreamId::new(category, id).unwrap()
}

/// An event as stored: `(event_type, version, json)`.
fn stored(event_type: &str, version: u32, json: &str) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: event_type.into(),
        schema_version: version,
        payload: Payload::from_json(json.into()).unwrap(),
        metadata: Metadata::new(),
    }
}

async fn append(store: &MemoryStore, stream: &StreamId, events: &[NewEvent]) -> u64 {
    store
        .append(stream, ExpectedVersion::Any, events)
        .await
        .unwrap()
        .last_position
}

/// Appends one event and reads it back as recorded.
async fn recorded(store: &MemoryStore, stream: &StreamId, event: NewEvent) -> RecordedEvent {
    let id = event.event_id;
    append(store, stream, &[event]).await;
    store.event_by_id(id).await.unwrap().unwrap()
}

async fn caught_up<S, C>(running: &RunningProjections<S, C>, name: &str, position: u64)
where
    S: EventStore,
    C: factum::Coordination,
{
    tokio::time::timeout(Duration::from_secs(30), running.wait_for(name, position))
        .await
        .expect("caught up in time")
        .expect("running");
}

/// Runs an `OrderList` that parks an event after two failed attempts until it has handled
/// `last`; returns the read model and what was parked.
async fn project_parking(
    store: MemoryStore,
    last: u64,
) -> (std::sync::Arc<OrderList>, Vec<ParkedEvent>) {
    let list = std::sync::Arc::new(OrderList::default());
    let running = ProjectionRunner::new(store)
        .register(
            std::sync::Arc::clone(&list),
            options().failure(
                FailurePolicy::park_after(2)
                    .backoff(Duration::from_millis(1), Duration::from_millis(1)),
            ),
        )
        .start();
    caught_up(&running, "order_list", last).await;
    let parked = running.parked("order_list").await.unwrap();
    running.shutdown().await.unwrap();
    (list, parked)
}

fn options() -> ProjectionOptions {
    ProjectionOptions::new().poll_interval(Duration::from_millis(10))
}

#[test]
fn event_types_include_old_names() {
    assert_eq!(
        OrderList::default().event_types(),
        [
            "OrderPlaced",
            "OrderCreated",
            "LineAdded",
            "LinesAdded",
            "ShipmentDispatched"
        ]
    );
    assert_eq!(OrderList::default().name(), "order_list");
    assert!(OrderList::default().categories().is_empty());
    assert_eq!(PlacedInOrders::default().categories(), ["order"]);
}

#[tokio::test]
async fn old_versions_are_delivered_upcast_and_split() {
    let store = MemoryStore::new();
    let list = std::sync::Arc::new(OrderList::default());
    let order = stream("order", "o-1");
    let created = append(
        &store,
        &order,
        &[stored(
            "OrderCreated",
            1,
            r#"{"order_id":"o-1","cents":1250}"#,
        )],
    )
    .await;
    append(
        &store,
        &order,
        &[
            stored(
                "LinesAdded",
                1,
                r#"{"order_id":"o-1","skus":["apple","pear"]}"#,
            ),
            stored("OrderNoted", 1, r#"{"order_id":"o-1"}"#),
        ],
    )
    .await;
    // ANCHOR: register
    let running = ProjectionRunner::new(store.clone())
        .register(std::sync::Arc::clone(&list), options())
        .start();
    // ANCHOR_END: register
    let line = NewEvent::from_event(
        &LineAdded {
            order_id: "o-1".into(),
            sku: "plum".into(),
        },
        Metadata::new(),
    )
    .unwrap();
    append(&store, &order, &[line]).await;
    let shipped = NewEvent::from_event(
        &ShipmentDispatched {
            order_id: "o-1".into(),
            carrier: "dhl".into(),
        },
        Metadata::new(),
    )
    .unwrap();
    let last = append(&store, &stream("shipment", "s-1"), &[shipped]).await;
    caught_up(&running, "order_list", last).await;
    running.shutdown().await.unwrap();

    let rows = list.rows();
    assert_eq!(
        rows["o-1"],
        OrderRow {
            cents: 1250,
            currency: "EUR".into(),
            lines: vec!["apple".into(), "pear".into(), "plum".into()],
            carrier: Some("dhl".into()),
            position: created,
        }
    );
}

#[tokio::test]
async fn categories_filter_streams() {
    let store = MemoryStore::new();
    let placed = |id: &str| {
        NewEvent::from_event(
            &OrderPlaced {
                order_id: id.into(),
                cents: 1,
                currency: "EUR".into(),
            },
            Metadata::new(),
        )
        .unwrap()
    };
    append(&store, &stream("order", "o-1"), &[placed("o-1")]).await;
    append(&store, &stream("archive", "o-2"), &[placed("o-2")]).await;
    let last = append(&store, &stream("order", "o-3"), &[placed("o-3")]).await;
    let count = std::sync::Arc::new(PlacedInOrders::default());
    let running = ProjectionRunner::new(store)
        .register(std::sync::Arc::clone(&count), options())
        .start();
    caught_up(&running, "placed_in_orders", last).await;
    running.shutdown().await.unwrap();
    assert_eq!(*count.count.lock().unwrap(), 2);
}

#[tokio::test]
async fn unhandled_types_are_ignored_and_unknown_versions_are_errors_naming_the_event() {
    let store = MemoryStore::new();
    let order = stream("order", "o-9");
    let noted = recorded(
        &store,
        &order,
        stored("OrderNoted", 1, r#"{"order_id":"o-9"}"#),
    )
    .await;
    let broken = recorded(
        &store,
        &order,
        stored("OrderCreated", 1, r#"{"order_id":7}"#),
    )
    .await;
    let orphan = recorded(
        &store,
        &order,
        stored("LineAdded", 2, r#"{"order_id":"o-9","sku":"fig"}"#),
    )
    .await;
    let unknown_version = recorded(
        &store,
        &order,
        stored("OrderPlaced", 9, r#"{"order_id":"o-9"}"#),
    )
    .await;
    let list = OrderList::default();

    list.handle(&noted)
        .await
        .expect("an unhandled type is a no-op");
    let error = list
        .handle(&unknown_version)
        .await
        .expect_err("an unknown version of a handled name is never skipped silently");
    assert_eq!(
        error.to_string(),
        format!(
            "`order_list` cannot decode `OrderPlaced` version 9 at position {} of stream `order-o-9`: unknown version 9 of event type `OrderPlaced`",
            unknown_version.position
        )
    );
    assert!(matches!(
        error.source().and_then(|e| e.downcast_ref::<DecodeError>()),
        Some(DecodeError::UnknownVersion { event_type, version: 9 }) if event_type == "OrderPlaced"
    ));
    assert!(list.rows().is_empty());

    let error = list.handle(&broken).await.unwrap_err().to_string();
    assert!(
        error.starts_with(&format!(
            "`order_list` cannot decode `OrderCreated` version 1 at position {} of stream `order-o-9`: ",
            broken.position
        )),
        "{error}"
    );

    let error = list.handle(&orphan).await.unwrap_err().to_string();
    assert_eq!(error, "no order `o-9`");
}

#[tokio::test]
async fn a_failing_handler_parks_the_event() {
    let store = MemoryStore::new();
    let order = stream("order", "o-5");
    let line = append(
        &store,
        &order,
        &[stored("LineAdded", 2, r#"{"order_id":"o-5","sku":"fig"}"#)],
    )
    .await;
    let last = append(
        &store,
        &stream("order", "o-6"),
        &[stored("OrderCreated", 1, r#"{"order_id":"o-6","cents":3}"#)],
    )
    .await;
    let (list, parked) = project_parking(store, last).await;
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].position, line);
    assert_eq!(
        parked[0].reason,
        ParkReason::Failed {
            error: "no order `o-5`".into(),
            attempts: 2
        }
    );
    assert_eq!(list.rows()["o-6"].cents, 3);
}

#[tokio::test]
async fn rebuild_resets_and_replays() {
    let store = MemoryStore::new();
    let order = stream("order", "o-1");
    append(
        &store,
        &order,
        &[stored("OrderCreated", 1, r#"{"order_id":"o-1","cents":5}"#)],
    )
    .await;
    let last = append(
        &store,
        &order,
        &[stored(
            "LinesAdded",
            1,
            r#"{"order_id":"o-1","skus":["a"]}"#,
        )],
    )
    .await;
    let list = std::sync::Arc::new(OrderList::default());
    let running = ProjectionRunner::new(store)
        .register(std::sync::Arc::clone(&list), options())
        .start();
    caught_up(&running, "order_list", last).await;
    let live = list.rows();
    list.rows
        .lock()
        .unwrap()
        .insert("stale".into(), OrderRow::default());
    running.rebuild("order_list", |_| {}).await.unwrap();
    caught_up(&running, "order_list", last).await;
    running.shutdown().await.unwrap();
    assert_eq!(list.rows(), live);
    assert_eq!(live["o-1"].lines, ["a"]);
}

/// A version of `OrderPlaced` this build does not know, written by a newer deployment.
fn placed_v9(id: &str) -> NewEvent {
    stored(
        "OrderPlaced",
        9,
        &format!(r#"{{"order_id":"{id}","cents":1,"currency":"EUR","gift":true}}"#),
    )
}

#[tokio::test]
async fn an_unknown_version_goes_through_the_failure_policy_and_is_parked() {
    let store = MemoryStore::new();
    let order = stream("order", "o-7");
    append(
        &store,
        &order,
        &[stored("OrderCreated", 1, r#"{"order_id":"o-7","cents":5}"#)],
    )
    .await;
    let newer = append(&store, &order, &[placed_v9("o-7")]).await;
    let behind = append(
        &store,
        &order,
        &[stored("LineAdded", 2, r#"{"order_id":"o-7","sku":"fig"}"#)],
    )
    .await;
    let last = append(
        &store,
        &stream("order", "o-8"),
        &[stored("OrderCreated", 1, r#"{"order_id":"o-8","cents":3}"#)],
    )
    .await;
    let (list, parked) = project_parking(store, last).await;
    assert_eq!(parked.len(), 2, "{parked:?}");
    assert_eq!(parked[0].position, newer);
    assert_eq!(parked[0].event_type, "OrderPlaced");
    assert_eq!(
        parked[0].reason,
        ParkReason::Failed {
            error: format!(
                "`order_list` cannot decode `OrderPlaced` version 9 at position {newer} of stream `order-o-7`: unknown version 9 of event type `OrderPlaced`"
            ),
            attempts: 2
        }
    );
    assert_eq!(
        (parked[1].position, &parked[1].reason),
        (behind, &ParkReason::Waiting { behind: newer }),
        "later events of the stream wait behind it"
    );
    let rows = list.rows();
    assert_eq!(rows["o-7"].cents, 5, "the unknown version was not applied");
    assert!(rows["o-7"].lines.is_empty());
    assert_eq!(rows["o-8"].cents, 3, "other streams flow");
}

#[tokio::test]
async fn an_unknown_version_stops_a_partition_whose_policy_stops() {
    let store = MemoryStore::new();
    let order = stream("order", "o-7");
    append(
        &store,
        &order,
        &[stored("OrderCreated", 1, r#"{"order_id":"o-7","cents":5}"#)],
    )
    .await;
    let newer = append(&store, &order, &[placed_v9("o-7")]).await;
    let checkpoints = factum::MemoryCoordination::new();
    let running = ProjectionRunner::new(store)
        .coordination(checkpoints.clone())
        .register(
            std::sync::Arc::new(OrderList::default()),
            options().failure(
                FailurePolicy::stop_after(1)
                    .backoff(Duration::from_millis(1), Duration::from_millis(1)),
            ),
        )
        .start();
    let stopped = tokio::time::timeout(
        Duration::from_secs(30),
        running.wait_for("order_list", newer),
    )
    .await
    .expect("stopped in time");
    assert!(
        stopped.is_err(),
        "the partition stops at the unknown version"
    );
    match running.shutdown().await {
        Err(factum::projection::ProjectionError::HandlerFailed {
            position, source, ..
        }) => {
            assert_eq!(position, newer);
            assert!(matches!(
                source
                    .source()
                    .and_then(|e| e.downcast_ref::<DecodeError>()),
                Some(DecodeError::UnknownVersion { version: 9, .. })
            ));
        }
        other => panic!("expected HandlerFailed, got {other:?}"),
    }
    let checkpoint = factum::coordination::CheckpointStore::load(&checkpoints, "order_list", 0)
        .await
        .unwrap();
    assert!(
        checkpoint < newer,
        "the checkpoint stays before the unknown version: {checkpoint}"
    );
}

// ANCHOR: skip_unknown_versions
/// Counts placed orders; versions of `OrderPlaced` it does not know yet are skipped (with a
/// warning and a count) instead of stopping or parking.
#[derive(Debug, Default)]
pub struct PlacedCount {
    count: Mutex<u64>,
}

#[projection(name = "placed_count", skip_unknown_versions)]
impl PlacedCount {
    async fn placed(&self, _: &OrderPlaced) {
        *self.count.lock().unwrap() += 1;
    }
}
// ANCHOR_END: skip_unknown_versions

#[tokio::test]
async fn skip_unknown_versions_skips_them_and_counts_them() {
    let capture = factum_tests::counters::Capture::default();
    let values = std::sync::Arc::clone(&capture.0);
    let _guard = metrics::set_default_local_recorder(&capture);
    let store = MemoryStore::new();
    let order = stream("order", "o-1");
    let v1 = recorded(
        &store,
        &order,
        stored("OrderCreated", 1, r#"{"order_id":"o-1","cents":5}"#),
    )
    .await;
    let v9 = recorded(&store, &order, placed_v9("o-1")).await;
    let broken = recorded(
        &store,
        &order,
        stored("OrderPlaced", 2, r#"{"order_id":7}"#),
    )
    .await;
    let count = PlacedCount::default();
    count.handle(&v1).await.unwrap();
    count
        .handle(&v9)
        .await
        .expect("skipped: the projection opted in");
    assert!(
        count.handle(&broken).await.is_err(),
        "a known version that does not decode is still an error"
    );
    assert_eq!(*count.count.lock().unwrap(), 1);
    assert_eq!(
        values.lock().unwrap().get(
            "factum_projection_skipped_unknown_versions_total{projection=placed_count,event_type=OrderPlaced}"
        ),
        Some(&1)
    );
}
