//! The order domain: versioned events read through upcast chains (typed, renamed, split and
//! JSON-level), every handler return shape, snapshots, and errors for unknown stored events.

use factum::prelude::*;
use factum::store::{DecodeError, Decoded, NewEvent, Payload};
use factum::{ExpectedVersion, MemoryStore, Metadata, Repository, StreamId};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// One line of an order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Line {
    pub sku: String,
    pub quantity: u32,
}

// ANCHOR: chain
/// The current shape: stored as ("OrderPlaced", 3).
#[event(version = 3, previous = OrderPlacedV2)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderPlaced {
    pub order_id: String,
    pub customer_id: String,
    pub currency: String,
    pub channel: String,
}

/// Version 2 added the currency; kept to read old history.
#[event(name = "OrderPlaced", version = 2, upcast_to = OrderPlaced, previous = OrderPlacedV1)]
#[derive(Debug, Deserialize)]
pub struct OrderPlacedV2 {
    pub order_id: String,
    pub customer_id: String,
    pub currency: String,
}

impl From<OrderPlacedV2> for OrderPlaced {
    fn from(v2: OrderPlacedV2) -> Self {
        Self {
            order_id: v2.order_id,
            customer_id: v2.customer_id,
            currency: v2.currency,
            channel: "web".into(),
        }
    }
}

/// Version 1, the first shape.
#[event(name = "OrderPlaced", version = 1, upcast_to = OrderPlacedV2)]
#[derive(Debug, Deserialize)]
pub struct OrderPlacedV1 {
    pub order_id: String,
    pub customer_id: String,
}

impl From<OrderPlacedV1> for OrderPlacedV2 {
    fn from(v1: OrderPlacedV1) -> Self {
        Self {
            order_id: v1.order_id,
            customer_id: v1.customer_id,
            currency: "EUR".into(),
        }
    }
}
// ANCHOR_END: chain

// ANCHOR: split
/// One line added; replaces the old `LinesAdded`, which held several.
#[event(version = 2, previous = LinesAddedV1)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LineAdded {
    pub line: Line,
}

/// The old event, under its old name: read as one `LineAdded` per line.
#[event(name = "LinesAdded", version = 1, upcast_to = LineAdded, upcast_with = split_lines)]
#[derive(Debug, Deserialize)]
pub struct LinesAddedV1 {
    pub lines: Vec<Line>,
}

fn split_lines(old: LinesAddedV1) -> Vec<LineAdded> {
    old.lines
        .into_iter()
        .map(|line| LineAdded { line })
        .collect()
}
// ANCHOR_END: split

// ANCHOR: json
/// Version 1 stored `{"amount": <whole euros>}`, version 2 `{"amount_cents": <cents>}`; both
/// are read through JSON upcasters, without keeping a type for them.
#[event(
    version = 3,
    upcast_json(from = 1, with = paid_v1_to_v2),
    upcast_json(from = 2, with = paid_v2_to_v3)
)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderPaid {
    pub amount_cents: u64,
    pub method: String,
}

// A stored payload can be any JSON: an upcaster refuses what it cannot read (indexing a
// `Value` mutably panics on anything but an object, and so does an overflow).
fn paid_v1_to_v2(mut v1: serde_json::Value) -> Result<serde_json::Value, String> {
    let euros = v1["amount"]
        .as_u64()
        .ok_or_else(|| format!("`amount` is not a whole number: {}", v1["amount"]))?;
    let cents = euros
        .checked_mul(100)
        .ok_or_else(|| format!("{euros} euros do not fit in cents"))?;
    v1["amount_cents"] = json!(cents);
    Ok(v1)
}

fn paid_v2_to_v3(mut v2: serde_json::Value) -> Result<serde_json::Value, String> {
    let Some(fields) = v2.as_object_mut() else {
        return Err(format!("not an object: {v2}"));
    };
    fields.insert("method".into(), json!("card"));
    Ok(v2)
}
// ANCHOR_END: json

/// The order left the warehouse.
#[event]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderShipped {
    pub carrier: String,
}

/// The order was cancelled.
#[event]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderCancelled {
    pub reason: String,
}

// ANCHOR: commands
/// Places an order: name `PlaceOrder`, version 2.
#[command]
#[derive(Clone, Debug)]
pub struct PlaceOrderV2 {
    #[id]
    pub order_id: String,
    pub customer_id: String,
    pub channel: String,
}

/// Adds lines.
#[command]
#[derive(Clone, Debug)]
pub struct AddLinesV1 {
    #[id]
    pub order_id: String,
    pub lines: Vec<Line>,
}

/// Pays and ships in one go: two events.
#[command(name = "Checkout", version = 3)]
#[derive(Clone, Debug)]
pub struct CheckoutOrder(#[id] pub String, pub u64);

/// Ships, if not shipped yet.
#[command]
#[derive(Clone, Debug)]
pub struct ShipOrderV1 {
    #[id]
    pub order_id: String,
}

/// Checks that the order is placed; records nothing.
#[command]
#[derive(Clone, Debug)]
pub struct ConfirmOrderV1 {
    #[id]
    pub order_id: String,
}

/// Ships again, if shipped already.
#[command]
#[derive(Clone, Debug)]
pub struct ReshipOrderV1 {
    #[id]
    pub order_id: String,
}

/// Cancels: ships nothing, may emit several kinds of events.
#[command]
#[derive(Clone, Debug)]
pub struct CancelOrderV1 {
    #[id]
    pub order_id: String,
    pub reason: String,
}
// ANCHOR_END: commands

/// Why an order refuses a command.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum OrderError {
    #[error("the order is already placed")]
    AlreadyPlaced,
    #[error("the order is not placed")]
    NotPlaced,
    #[error("the order is already shipped")]
    AlreadyShipped,
}

// ANCHOR: aggregate
/// The order's state; snapshotted every 2 events.
#[aggregate(category = "order", snapshot_every = 2, state_version = 1)]
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Order {
    placed: bool,
    customer_id: String,
    currency: String,
    lines: Vec<Line>,
    paid_cents: u64,
    shipped: bool,
    cancelled: bool,
}

#[aggregate]
impl Order {
    /// One event.
    #[handle]
    fn place(&self, command: PlaceOrderV2) -> Result<OrderPlaced, OrderError> {
        if self.placed {
            return Err(OrderError::AlreadyPlaced);
        }
        Ok(OrderPlaced {
            order_id: command.order_id,
            customer_id: command.customer_id,
            currency: "EUR".into(),
            channel: command.channel,
        })
    }

    /// Any number of one event type.
    #[handle]
    fn add_lines(&self, command: AddLinesV1) -> Result<Vec<LineAdded>, OrderError> {
        self.require_placed()?;
        Ok(command
            .lines
            .into_iter()
            .map(|line| LineAdded { line })
            .collect())
    }

    /// A tuple: one event of each type, in order.
    #[handle]
    fn checkout(&self, command: CheckoutOrder) -> Result<(OrderPaid, OrderShipped), OrderError> {
        self.require_placed()?;
        Ok((
            OrderPaid {
                amount_cents: command.1,
                method: "card".into(),
            },
            OrderShipped {
                carrier: "post".into(),
            },
        ))
    }

    /// Zero or one event.
    #[handle]
    fn ship(&self, _: ShipOrderV1) -> Result<Option<OrderShipped>, OrderError> {
        self.require_placed()?;
        Ok((!self.shipped).then(|| OrderShipped {
            carrier: "post".into(),
        }))
    }

    /// Any events of the aggregate.
    #[handle]
    fn cancel(&self, command: CancelOrderV1) -> Result<Vec<OrderEvent>, OrderError> {
        self.require_placed()?;
        if self.shipped {
            return Err(OrderError::AlreadyShipped);
        }
        Ok(vec![
            OrderCancelled {
                reason: command.reason,
            }
            .into(),
        ])
    }

    /// No event.
    #[handle]
    fn confirm(&self, _: ConfirmOrderV1) -> Result<(), OrderError> {
        self.require_placed()
    }

    /// One event of any type of the aggregate, or none.
    #[handle]
    fn reship(&self, _: ReshipOrderV1) -> Result<Option<OrderEvent>, OrderError> {
        self.require_placed()?;
        Ok(self.shipped.then(|| {
            OrderShipped {
                carrier: "courier".into(),
            }
            .into()
        }))
    }

    fn require_placed(&self) -> Result<(), OrderError> {
        if self.placed {
            Ok(())
        } else {
            Err(OrderError::NotPlaced)
        }
    }

    #[apply]
    fn placed(&mut self, event: &OrderPlaced) {
        self.placed = true;
        self.customer_id.clone_from(&event.customer_id);
        self.currency.clone_from(&event.currency);
    }

    #[apply]
    fn line_added(&mut self, event: &LineAdded) {
        self.lines.push(event.line.clone());
    }

    #[apply]
    fn paid(&mut self, event: &OrderPaid) {
        self.paid_cents += event.amount_cents;
    }

    #[apply]
    fn shipped(&mut self, _: &OrderShipped) {
        self.shipped = true;
    }

    #[apply]
    fn cancelled(&mut self, _: &OrderCancelled) {
        self.cancelled = true;
    }
}
// ANCHOR_END: aggregate

fn line(sku: &str, quantity: u32) -> Line {
    Line {
        sku: sku.into(),
        quantity,
    }
}

fn placed() -> OrderPlaced {
    OrderPlaced {
        order_id: "o-1".into(),
        customer_id: "c-1".into(),
        currency: "EUR".into(),
        channel: "web".into(),
    }
}

/// Appends raw stored events, as an older version of the application wrote them.
async fn seed(store: &MemoryStore, id: &str, events: &[(&str, u32, serde_json::Value)]) {
    let stream = StreamId::new("order", id).unwrap();
    let new: Vec<NewEvent> = events
        .iter()
        .map(|(name, version, payload)| NewEvent {
            event_id: uuid::Uuid::now_v7(),
            event_type: (*name).to_owned(),
            schema_version: *version,
            payload: Payload::encode(payload).unwrap(),
            metadata: Metadata::new(),
        })
        .collect();
    store
        .append(&stream, ExpectedVersion::Any, &new)
        .await
        .unwrap();
}

#[test]
fn the_set_knows_every_stored_name_and_version() {
    assert_eq!(
        OrderEvent::EVENT_TYPES,
        [
            "OrderPlaced",
            "LineAdded",
            "LinesAdded",
            "OrderPaid",
            "OrderShipped",
            "OrderCancelled"
        ]
    );
    assert_eq!(<OrderPlaced as Event>::VERSION, 3);
    assert_eq!(<CheckoutOrder as Command>::NAME, "Checkout");
    assert_eq!(<CheckoutOrder as Command>::VERSION, 3);
    assert_eq!(Order::SNAPSHOT, factum::SnapshotPolicy::Every(2));
    let checkout = OrderCommand::from(CheckoutOrder("o-9".into(), 1));
    assert_eq!(checkout.aggregate_id(), Some("o-9"));
}

// ANCHOR: decode_v1
#[tokio::test]
async fn stored_v1_and_v2_payloads_load_as_the_current_type() {
    let store = MemoryStore::new();
    seed(
        &store,
        "o-1",
        &[(
            "OrderPlaced",
            1,
            json!({"order_id": "o-1", "customer_id": "c-1"}),
        )],
    )
    .await;
    seed(
        &store,
        "o-2",
        &[(
            "OrderPlaced",
            2,
            json!({"order_id": "o-2", "customer_id": "c-2", "currency": "USD"}),
        )],
    )
    .await;
    let orders = Repository::<Order, _>::new(store);

    let o1 = orders.load("o-1").await.unwrap().state;
    assert!(o1.placed);
    assert_eq!(
        (o1.customer_id.as_str(), o1.currency.as_str()),
        ("c-1", "EUR")
    );
    let o2 = orders.load("o-2").await.unwrap().state;
    assert_eq!(
        (o2.customer_id.as_str(), o2.currency.as_str()),
        ("c-2", "USD")
    );
}
// ANCHOR_END: decode_v1

#[test]
fn each_version_of_the_chain_decodes_to_the_current_type() {
    let v1 = Payload::encode(&json!({"order_id": "o-1", "customer_id": "c-1"})).unwrap();
    let decoded = OrderPlaced::decode_stored(1, &v1).unwrap();
    assert_eq!(decoded, Decoded::One(placed()));
    let v3 = Payload::encode(&placed()).unwrap();
    assert_eq!(
        OrderPlaced::decode_stored(3, &v3).unwrap(),
        Decoded::One(placed())
    );
    assert!(matches!(
        OrderPlaced::decode_stored(4, &v3),
        Err(DecodeError::UnknownVersion { version: 4, .. })
    ));
    assert!(matches!(
        OrderPlaced::decode_stored(2, &v1),
        Err(DecodeError::Payload { version: 2, .. })
    ));
}

#[tokio::test]
async fn a_renamed_event_is_split_into_several() {
    let store = MemoryStore::new();
    seed(
        &store,
        "o-1",
        &[
            (
                "OrderPlaced",
                1,
                json!({"order_id": "o-1", "customer_id": "c-1"}),
            ),
            (
                "LinesAdded",
                1,
                json!({"lines": [{"sku": "a", "quantity": 1}, {"sku": "b", "quantity": 2}]}),
            ),
            ("LineAdded", 2, json!({"line": {"sku": "c", "quantity": 3}})),
        ],
    )
    .await;
    let orders = Repository::<Order, _>::new(store);
    let loaded = orders.load("o-1").await.unwrap();
    assert_eq!(loaded.version, 3);
    assert_eq!(
        loaded.state.lines,
        [line("a", 1), line("b", 2), line("c", 3)]
    );

    let payload = Payload::encode(&json!({"lines": []})).unwrap();
    assert_eq!(
        OrderEvent::decode("LinesAdded", 1, &payload).unwrap(),
        Decoded::Many(vec![])
    );
}

/// A cached order brought up to date with events an older version of the application wrote
/// goes through the upcasters as a load does: the snapshot taken from the cached state
/// equals a full replay.
#[tokio::test]
async fn the_cache_catches_up_through_the_upcasters() {
    let store = MemoryStore::new();
    let placed_v1 = json!({"order_id": "o-1", "customer_id": "c-1"});
    seed(&store, "o-1", &[("OrderPlaced", 1, placed_v1)]).await;
    let orders = Repository::<Order, _>::new(store.clone());
    let add = |sku: &str| AddLinesV1 {
        order_id: "o-1".into(),
        lines: vec![line(sku, 1)],
    };
    orders.execute(add("a"), Metadata::new()).await.unwrap();
    assert_eq!(orders.cached(), 1);
    // An older process appends behind the cache's back.
    let lines_v1 = json!({"lines": [{"sku": "b", "quantity": 2}, {"sku": "c", "quantity": 3}]});
    let line_v2 = json!({"line": {"sku": "d", "quantity": 4}});
    seed(
        &store,
        "o-1",
        &[("LinesAdded", 1, lines_v1), ("LineAdded", 2, line_v2)],
    )
    .await;
    let shipped = orders
        .execute(
            ShipOrderV1 {
                order_id: "o-1".into(),
            },
            Metadata::new(),
        )
        .await
        .unwrap();
    assert_eq!(shipped.version, 5);
    let added = orders.execute(add("e"), Metadata::new()).await.unwrap();
    assert_eq!(added.version, 6);

    let stream = StreamId::new("order", "o-1").unwrap();
    let snapshot = store
        .load_snapshot(&stream, 1, None)
        .await
        .unwrap()
        .expect("a snapshot at 6");
    assert_eq!(snapshot.version, 6);
    let replayed = orders.load_as_of("o-1", chrono::Utc::now()).await.unwrap();
    assert_eq!(replayed.version, 6);
    assert_eq!(
        snapshot.state.decode::<serde_json::Value>().unwrap(),
        serde_json::to_value(&replayed.state).unwrap()
    );
    let skus: Vec<&str> = replayed
        .state
        .lines
        .iter()
        .map(|l| l.sku.as_str())
        .collect();
    assert_eq!(skus, ["a", "b", "c", "d", "e"]);
}

#[tokio::test]
async fn json_upcasters_read_versions_without_a_type() {
    let store = MemoryStore::new();
    seed(
        &store,
        "o-1",
        &[
            ("OrderPlaced", 3, serde_json::to_value(placed()).unwrap()),
            ("OrderPaid", 1, json!({"amount": 12})),
            ("OrderPaid", 2, json!({"amount_cents": 50})),
            ("OrderPaid", 3, json!({"amount_cents": 7, "method": "cash"})),
        ],
    )
    .await;
    let orders = Repository::<Order, _>::new(store);
    assert_eq!(orders.load("o-1").await.unwrap().state.paid_cents, 1257);

    let v1 = Payload::encode(&json!({"amount": 3})).unwrap();
    assert_eq!(
        OrderPaid::decode_stored(1, &v1).unwrap(),
        Decoded::One(OrderPaid {
            amount_cents: 300,
            method: "card".into()
        })
    );
    let bad = Payload::encode(&json!({"amount": "x"})).unwrap();
    match OrderPaid::decode_stored(1, &bad) {
        Err(DecodeError::Upcast {
            event_type,
            version,
            message,
        }) => {
            assert_eq!((event_type.as_str(), version), ("OrderPaid", 1));
            assert!(message.contains("not a whole number"), "{message}");
        }
        other => panic!("expected an upcast error, got {other:?}"),
    }
}

// ANCHOR: unknown
#[tokio::test]
async fn unknown_stored_types_and_versions_are_errors_naming_them() {
    let store = MemoryStore::new();
    seed(
        &store,
        "o-1",
        &[
            ("OrderPlaced", 3, serde_json::to_value(placed()).unwrap()),
            ("OrderRefunded", 1, json!({})),
        ],
    )
    .await;
    seed(&store, "o-2", &[("OrderPlaced", 9, json!({}))]).await;
    let orders = Repository::<Order, _>::new(store);

    match orders.load("o-1").await {
        Err(factum::Error::Decode {
            stream,
            stream_version,
            source: DecodeError::UnknownType { event_type },
            ..
        }) => {
            assert_eq!(stream.as_str(), "order-o-1");
            assert_eq!(stream_version, 2);
            assert_eq!(event_type, "OrderRefunded");
        }
        other => panic!("expected an unknown type, got {other:?}"),
    }
    let error = orders.load("o-2").await.unwrap_err();
    assert!(matches!(
        &error,
        factum::Error::Decode {
            source: DecodeError::UnknownVersion { version: 9, .. },
            ..
        }
    ));
    assert!(
        error
            .to_string()
            .contains("unknown version 9 of event type `OrderPlaced`"),
        "{error}"
    );
}
// ANCHOR_END: unknown

#[test]
fn every_return_shape_dispatches() {
    let history = [OrderEvent::from(placed())];
    Order::given(history.clone())
        .when(AddLinesV1 {
            order_id: "o-1".into(),
            lines: vec![line("a", 1), line("b", 2)],
        })
        .then_events([
            LineAdded { line: line("a", 1) },
            LineAdded { line: line("b", 2) },
        ]);

    let state = Order::given(history.clone())
        .when(CheckoutOrder("o-1".into(), 990))
        .then_events([
            OrderEvent::from(OrderPaid {
                amount_cents: 990,
                method: "card".into(),
            }),
            OrderEvent::from(OrderShipped {
                carrier: "post".into(),
            }),
        ]);
    assert!(state.shipped);
    assert_eq!(state.paid_cents, 990);

    Order::given([
        OrderEvent::from(placed()),
        OrderShipped {
            carrier: "post".into(),
        }
        .into(),
    ])
    .when(ShipOrderV1 {
        order_id: "o-1".into(),
    })
    .then_no_events();

    Order::given(history.clone())
        .when(CancelOrderV1 {
            order_id: "o-1".into(),
            reason: "changed my mind".into(),
        })
        .then_events([OrderCancelled {
            reason: "changed my mind".into(),
        }]);

    Order::given(history.clone())
        .when(ConfirmOrderV1 {
            order_id: "o-1".into(),
        })
        .then_no_events();
    Order::given(history.clone())
        .when(ReshipOrderV1 {
            order_id: "o-1".into(),
        })
        .then_no_events();

    Order::given_no_history()
        .when(ShipOrderV1 {
            order_id: "o-1".into(),
        })
        .then_error(OrderError::NotPlaced);
}

// ANCHOR: snapshot
#[tokio::test]
async fn snapshots_round_trip() {
    let store = MemoryStore::new();
    let orders = Repository::<Order, _>::new(store.clone());
    let place = PlaceOrderV2 {
        order_id: "o-1".into(),
        customer_id: "c-1".into(),
        channel: "app".into(),
    };
    orders
        .execute_on("o-1", place, Metadata::new())
        .await
        .unwrap();
    let add = AddLinesV1 {
        order_id: "o-1".into(),
        lines: vec![line("a", 1)],
    };
    orders
        .execute_on("o-1", add, Metadata::new())
        .await
        .unwrap();

    let stream = StreamId::new("order", "o-1").unwrap();
    let snapshot = store
        .load_snapshot(&stream, 1, None)
        .await
        .unwrap()
        .expect("a snapshot at version 2");
    assert_eq!(snapshot.version, 2);
    let state = Order::decode_state(&snapshot.state).unwrap().unwrap();
    assert_eq!(state.lines, [line("a", 1)]);
    assert_eq!(state.customer_id, "c-1");

    let loaded = orders.load("o-1").await.unwrap();
    assert_eq!(loaded.version, 2);
    assert_eq!(loaded.state.lines, state.lines);
    assert!(loaded.state.placed);
}
// ANCHOR_END: snapshot
