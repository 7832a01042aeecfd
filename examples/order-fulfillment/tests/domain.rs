//! Given / when / then tests of the four aggregates, the upcast of stored `OrderPlaced` v1
//! fixtures, and the inventory's snapshots.

use factum::prelude::*;
use factum::store::{NewEvent, Payload};
use factum::{MemoryStore, Metadata, Repository, StreamId};
use order_fulfillment::domain::Line;
use order_fulfillment::domain::inventory::{
    Inventory, InventoryError, InventoryEvent, ReceiveStockV1, ReleaseStockV1, ReservationRejected,
    ReserveStockV1, ShipStockV1, StockReceived, StockReleased, StockReserved, StockShipped,
};
use order_fulfillment::domain::order::{
    CancelOrderV1, MarkOrderPaidV1, Order, OrderCancelled, OrderError, OrderEvent, OrderPaid,
    OrderPlaced, OrderShipped, PlaceOrderV1, PlaceOrderV2, ShipOrderV1,
};
use order_fulfillment::domain::payment::{
    CapturePaymentV1, Payment, PaymentCaptured, PaymentError, PaymentEvent, PaymentRefunded,
    RefundPaymentV1,
};
use order_fulfillment::domain::shipment::{
    CancelShipmentV1, CreateShipmentV1, DispatchShipmentV1, Shipment, ShipmentCancelled,
    ShipmentCreated, ShipmentDispatched, ShipmentError, ShipmentEvent, ShipmentLine,
};
use order_fulfillment::{App, AppOptions};
use serde::Deserialize;

fn lines() -> Vec<Line> {
    vec![
        Line {
            sku: "keyboard".into(),
            quantity: 1,
            unit_price_cents: 4_999,
        },
        Line {
            sku: "mouse".into(),
            quantity: 2,
            unit_price_cents: 1_999,
        },
    ]
}

fn placed(currency: &str) -> OrderPlaced {
    OrderPlaced {
        order_id: "o-1".into(),
        customer_id: "alice".into(),
        lines: lines(),
        currency: currency.into(),
        customer_name: None,
    }
}

fn paid() -> OrderPaid {
    OrderPaid {
        order_id: "o-1".into(),
        amount_cents: 8_997,
    }
}

fn ship_order() -> ShipOrderV1 {
    ShipOrderV1 {
        order_id: "o-1".into(),
        carrier: "dhl".into(),
        tracking: "DHL-o-1".into(),
    }
}

// ANCHOR: order_tests
#[test]
fn both_versions_of_place_order_are_accepted() {
    let state = Order::given_no_history()
        .when(PlaceOrderV1 {
            order_id: "o-1".into(),
            customer_id: "alice".into(),
            lines: lines(),
        })
        .then_events([placed("EUR")]);
    assert_eq!(state.total_cents(), 8_997);

    Order::given_no_history()
        .when(PlaceOrderV2 {
            order_id: "o-1".into(),
            customer_id: "alice".into(),
            lines: lines(),
            currency: "USD".into(),
            customer_name: None,
        })
        .then_events([placed("USD")]);
}

#[test]
fn an_order_is_placed_once() {
    Order::given([placed("EUR")])
        .when(PlaceOrderV1 {
            order_id: "o-1".into(),
            customer_id: "alice".into(),
            lines: lines(),
        })
        .then_error(OrderError::AlreadyPlaced);
}

#[test]
fn an_unpaid_order_is_not_shipped() {
    Order::given([placed("EUR")])
        .when(ship_order())
        .then_error(OrderError::PaymentRequired);

    let state = Order::given([OrderEvent::from(placed("EUR")), paid().into()])
        .when(ship_order())
        .then_events([OrderShipped {
            order_id: "o-1".into(),
            carrier: "dhl".into(),
            tracking: "DHL-o-1".into(),
        }]);
    assert_eq!(state.status(), "shipped");
}
// ANCHOR_END: order_tests

#[test]
fn payment_is_recorded_once_and_cancelled_orders_change_no_more() {
    Order::given([OrderEvent::from(placed("EUR")), paid().into()])
        .when(MarkOrderPaidV1 {
            order_id: "o-1".into(),
            amount_cents: 8_997,
        })
        .then_no_events();

    let cancelled = OrderCancelled {
        order_id: "o-1".into(),
        reason: "out of stock".into(),
    };
    Order::given([OrderEvent::from(placed("EUR")), cancelled.clone().into()])
        .when(MarkOrderPaidV1 {
            order_id: "o-1".into(),
            amount_cents: 8_997,
        })
        .then_error(OrderError::Cancelled);
    Order::given([OrderEvent::from(placed("EUR")), cancelled.into()])
        .when(CancelOrderV1 {
            order_id: "o-1".into(),
            reason: "again".into(),
        })
        .then_error(OrderError::Cancelled);
    Order::given_no_history()
        .when(CancelOrderV1 {
            order_id: "o-1".into(),
            reason: "never placed".into(),
        })
        .then_error(OrderError::NotPlaced);
    let shipped = OrderShipped {
        order_id: "o-1".into(),
        carrier: "dhl".into(),
        tracking: "DHL-o-1".into(),
    };
    Order::given([
        OrderEvent::from(placed("EUR")),
        paid().into(),
        shipped.into(),
    ])
    .when(CancelOrderV1 {
        order_id: "o-1".into(),
        reason: "too late".into(),
    })
    .then_error(OrderError::AlreadyShipped);
}

#[tokio::test]
async fn invalid_orders_are_refused_before_loading() {
    let orders = Repository::<Order, _>::new(MemoryStore::new());
    let bad_currency = PlaceOrderV2 {
        order_id: "o-1".into(),
        customer_id: "alice".into(),
        lines: lines(),
        currency: "euro".into(),
        customer_name: None,
    };
    let error = orders
        .execute_on("o-1", bad_currency, Metadata::new())
        .await
        .unwrap_err();
    assert!(
        matches!(&error, factum::Error::InvalidCommand { command, .. } if *command == "PlaceOrder"),
        "{error}"
    );
    let no_lines = PlaceOrderV1 {
        order_id: "o-1".into(),
        customer_id: "alice".into(),
        lines: vec![],
    };
    let error = orders
        .execute_on("o-1", no_lines, Metadata::new())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("at least one line"), "{error}");
    assert!(orders.store().is_empty());
}

fn captured() -> PaymentCaptured {
    PaymentCaptured {
        order_id: "o-1".into(),
        amount_cents: 8_997,
        currency: "EUR".into(),
    }
}

#[test]
fn a_payment_is_captured_once_and_refunded_once() {
    Payment::given_no_history()
        .when(CapturePaymentV1 {
            order_id: "o-1".into(),
            amount_cents: 8_997,
            currency: "EUR".into(),
        })
        .then_events([captured()]);
    Payment::given([captured()])
        .when(CapturePaymentV1 {
            order_id: "o-1".into(),
            amount_cents: 8_997,
            currency: "EUR".into(),
        })
        .then_error(PaymentError::AlreadyCaptured);

    let refund = || RefundPaymentV1 {
        order_id: "o-1".into(),
        reason: "order cancelled".into(),
    };
    Payment::given_no_history()
        .when(refund())
        .then_error(PaymentError::NotCaptured);
    let refunded = PaymentRefunded {
        order_id: "o-1".into(),
        amount_cents: 8_997,
        currency: "EUR".into(),
        reason: "order cancelled".into(),
    };
    let state = Payment::given([captured()])
        .when(refund())
        .then_events([refunded.clone()]);
    assert!(state.is_refunded());
    Payment::given([PaymentEvent::from(captured()), refunded.into()])
        .when(refund())
        .then_no_events();
}

fn received(quantity: u32) -> StockReceived {
    StockReceived {
        sku: "monitor".into(),
        quantity,
    }
}

fn reserve(order_id: &str, quantity: u32) -> ReserveStockV1 {
    ReserveStockV1 {
        sku: "monitor".into(),
        order_id: order_id.into(),
        quantity,
    }
}

fn reserved(order_id: &str, quantity: u32) -> StockReserved {
    StockReserved {
        sku: "monitor".into(),
        order_id: order_id.into(),
        quantity,
    }
}

// ANCHOR: inventory_tests
#[test]
fn stock_is_never_reserved_beyond_what_is_available() {
    let state = Inventory::given([received(3)])
        .when(reserve("o-1", 2))
        .then_events([reserved("o-1", 2)]);
    assert_eq!(state.available(), 1);

    let state = Inventory::given([InventoryEvent::from(received(3)), reserved("o-1", 2).into()])
        .when(reserve("o-2", 2))
        .then_events([ReservationRejected {
            sku: "monitor".into(),
            order_id: "o-2".into(),
            requested: 2,
            available: 1,
        }]);
    assert_eq!((state.reserved(), state.available()), (2, 1));
}
// ANCHOR_END: inventory_tests

#[test]
fn reservations_are_released_or_shipped_once() {
    let history = [InventoryEvent::from(received(3)), reserved("o-1", 2).into()];
    Inventory::given(history.clone())
        .when(reserve("o-1", 2))
        .then_no_events();
    let state = Inventory::given(history.clone())
        .when(ReleaseStockV1 {
            sku: "monitor".into(),
            order_id: "o-1".into(),
        })
        .then_events([StockReleased {
            sku: "monitor".into(),
            order_id: "o-1".into(),
            quantity: 2,
        }]);
    assert_eq!(state.available(), 3);
    Inventory::given([received(3)])
        .when(ReleaseStockV1 {
            sku: "monitor".into(),
            order_id: "o-1".into(),
        })
        .then_no_events();

    let state = Inventory::given(history)
        .when(ShipStockV1 {
            sku: "monitor".into(),
            order_id: "o-1".into(),
        })
        .then_events([StockShipped {
            sku: "monitor".into(),
            order_id: "o-1".into(),
            quantity: 2,
        }]);
    assert_eq!((state.on_hand(), state.reserved()), (1, 0));
    Inventory::given([received(3)])
        .when(ShipStockV1 {
            sku: "monitor".into(),
            order_id: "o-9".into(),
        })
        .then_error(InventoryError::NoReservation {
            order_id: "o-9".into(),
        });
}

fn created() -> ShipmentCreated {
    ShipmentCreated {
        order_id: "o-1".into(),
        lines: vec![ShipmentLine {
            sku: "monitor".into(),
            quantity: 1,
        }],
    }
}

fn dispatch() -> DispatchShipmentV1 {
    DispatchShipmentV1 {
        order_id: "o-1".into(),
        carrier: "ups".into(),
    }
}

#[test]
fn a_shipment_leaves_once_and_only_when_created() {
    Shipment::given_no_history()
        .when(dispatch())
        .then_error(ShipmentError::NotCreated);
    Shipment::given_no_history()
        .when(CreateShipmentV1 {
            order_id: "o-1".into(),
            lines: created().lines,
        })
        .then_events([created()]);
    Shipment::given([created()])
        .when(CreateShipmentV1 {
            order_id: "o-1".into(),
            lines: created().lines,
        })
        .then_no_events();
    let dispatched = ShipmentDispatched {
        order_id: "o-1".into(),
        carrier: "ups".into(),
        tracking: "UPS-o-1".into(),
    };
    Shipment::given([created()])
        .when(dispatch())
        .then_events([dispatched.clone()]);
    let history = [ShipmentEvent::from(created()), dispatched.into()];
    Shipment::given(history.clone())
        .when(dispatch())
        .then_error(ShipmentError::AlreadyDispatched);
    Shipment::given(history)
        .when(CancelShipmentV1 {
            order_id: "o-1".into(),
        })
        .then_error(ShipmentError::AlreadyDispatched);
    Shipment::given([
        ShipmentEvent::from(created()),
        ShipmentCancelled {
            order_id: "o-1".into(),
        }
        .into(),
    ])
    .when(dispatch())
    .then_error(ShipmentError::Cancelled);
}

// ANCHOR: fixtures
/// A stored event, as an older version of the application wrote it.
#[derive(Deserialize)]
struct StoredFixture {
    stream: String,
    event_type: String,
    schema_version: u32,
    payload: serde_json::Value,
}

const FIXTURES: [&str; 2] = [
    include_str!("fixtures/order_placed_v1.json"),
    include_str!("fixtures/order_placed_v1_single_line.json"),
];

/// Appends the fixtures to `store`, byte for byte as stored then.
async fn seed_fixtures(store: &MemoryStore) {
    for fixture in FIXTURES {
        let fixture: StoredFixture = serde_json::from_str(fixture).unwrap();
        let event = NewEvent {
            event_id: uuid::Uuid::new_v4(),
            event_type: fixture.event_type,
            schema_version: fixture.schema_version,
            payload: Payload::encode(&fixture.payload).unwrap(),
            metadata: Metadata::new(),
        };
        let stream = StreamId::parse(&fixture.stream).unwrap();
        store
            .append(&stream, factum::ExpectedVersion::NoStream, &[event])
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn stored_v1_order_placed_events_are_read_as_v2_in_euros() {
    let store = MemoryStore::new();
    seed_fixtures(&store).await;

    let orders = Repository::<Order, _>::new(store.clone());
    let order = orders.load("o-0042").await.unwrap().state;
    assert_eq!(order.currency(), "EUR");
    assert_eq!(order.customer_id(), "dora");
    assert_eq!(order.total_cents(), 2 * 4_999 + 1_999);

    // The stored row keeps its version; only reading upcasts it.
    let stream = StreamId::new("order", "o-0043").unwrap();
    let stored = store
        .read_stream(&stream, &factum::store::StreamRead::all())
        .await
        .unwrap();
    assert_eq!(stored[0].schema_version, 1);
    let decoded = OrderPlaced::decode_stored(1, &stored[0].payload).unwrap();
    assert_eq!(
        decoded,
        factum::store::Decoded::One(OrderPlaced {
            order_id: "o-0043".into(),
            customer_id: "erik".into(),
            lines: vec![Line {
                sku: "mouse".into(),
                quantity: 3,
                unit_price_cents: 1_500,
            }],
            currency: "EUR".into(),
            customer_name: None,
        })
    );
}
// ANCHOR_END: fixtures

#[tokio::test]
async fn read_models_show_upcast_orders_in_euros() {
    let store = MemoryStore::new();
    seed_fixtures(&store).await;
    let app = App::in_memory(store, &AppOptions::default());
    app.settle().await.unwrap();
    let order = app.order("o-0042").await.unwrap();
    assert_eq!(
        (order.currency.as_str(), order.total_cents),
        ("EUR", 11_997)
    );
    let customers = app.customers().await.unwrap();
    assert_eq!(customers.len(), 2);
    app.shutdown().await.unwrap();
}

// ANCHOR: snapshots
#[tokio::test]
async fn inventory_snapshots_load_like_a_full_replay() {
    let store = MemoryStore::new();
    let inventory = Repository::<Inventory, _>::new(store.clone());
    inventory
        .execute_on(
            "monitor",
            ReceiveStockV1 {
                sku: "monitor".into(),
                quantity: 100,
            },
            Metadata::new(),
        )
        .await
        .unwrap();
    for n in 0..24 {
        let order_id = format!("o-{n}");
        let command = reserve(&order_id, 1);
        inventory
            .execute_on("monitor", command, Metadata::new())
            .await
            .unwrap();
        if n % 2 == 0 {
            let release = ReleaseStockV1 {
                sku: "monitor".into(),
                order_id,
            };
            inventory
                .execute_on("monitor", release, Metadata::new())
                .await
                .unwrap();
        }
    }
    // 1 receipt + 24 reservations + 12 releases = 37 events: snapshots at 10, 20 and 30.
    let stream = StreamId::new("inventory", "monitor").unwrap();
    let snapshot = store
        .load_snapshot(&stream, 1, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(snapshot.version, 30);

    let loaded = inventory.load("monitor").await.unwrap();
    assert_eq!(loaded.version, 37);
    // A load as of now replays every event, without the snapshot.
    let replayed = inventory
        .load_as_of("monitor", chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(
        format!("{:?}", loaded.state),
        format!("{:?}", replayed.state)
    );
    assert_eq!(
        (loaded.state.reserved(), loaded.state.available()),
        (12, 88)
    );
}
// ANCHOR_END: snapshots

/// The customer's name is declared personal, its subject the customer; an `OrderPlaced` of
/// version 2 stored before the name existed decodes with no name, and one without a name
/// leaves the field out, so that it needs no key.
#[test]
fn the_customer_name_is_personal_and_optional() {
    let schema = order_fulfillment::personal_schema();
    let fields = schema.fields("OrderPlaced", 2);
    assert_eq!(fields.len(), 1);
    assert_eq!(
        (fields[0].field, fields[0].subject),
        ("customer_name", "customer_id")
    );
    assert!(schema.fields("OrderPlaced", 1).is_empty());

    let stored = serde_json::json!({
        "order_id": "o-1",
        "customer_id": "alice",
        "lines": [{"sku": "keyboard", "quantity": 1, "unit_price_cents": 4999}],
        "currency": "EUR"
    });
    let old: OrderPlaced = serde_json::from_value(stored.clone()).unwrap();
    assert_eq!(old.customer_name, None);
    assert_eq!(serde_json::to_value(&old).unwrap(), stored);
}
