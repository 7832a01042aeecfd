//! The fulfillment process's decisions, event by event, without a runtime: its handlers are
//! plain functions of an instance's state and a recorded event.

use factum::process::Route;
use factum::store::Payload;
use factum::{Effects, Event, Metadata, ProcessManager, RecordedEvent, StreamId};
use order_fulfillment::domain::Line;
use order_fulfillment::domain::inventory::{
    ReleaseStockV1, ReservationRejected, ReserveStockV1, StockReserved,
};
use order_fulfillment::domain::order::{
    CancelOrderV1, MarkOrderPaidV1, OrderCancelled, OrderPlaced,
};
use order_fulfillment::domain::payment::{PaymentCaptured, RefundPaymentV1};
use order_fulfillment::domain::shipment::{CreateShipmentV1, ShipmentLine};
use order_fulfillment::fulfillment::{FulfillmentCommand, FulfillmentState, OrderFulfillment};

/// `event` as the store would hand it over, from the stream `{category}-{id}`.
fn recorded<E: Event>(category: &str, id: &str, event: &E) -> RecordedEvent {
    RecordedEvent {
        event_id: uuid::Uuid::new_v4(),
        stream_id: StreamId::new(category, id).unwrap(),
        stream_version: 1,
        position: 1,
        event_type: E::NAME.to_owned(),
        schema_version: E::VERSION,
        payload: Payload::encode(event).unwrap(),
        metadata: Metadata::new(),
        recorded_at: chrono::Utc::now(),
    }
}

fn line(sku: &str, quantity: u32) -> Line {
    Line {
        sku: sku.into(),
        quantity,
        unit_price_cents: 1_000,
    }
}

fn placed() -> RecordedEvent {
    let event = OrderPlaced {
        order_id: "o-1".into(),
        customer_id: "carol".into(),
        lines: vec![line("keyboard", 1), line("monitor", 2)],
        currency: "EUR".into(),
        customer_name: None,
    };
    recorded("order", "o-1", &event)
}

fn reserved(sku: &str, quantity: u32) -> RecordedEvent {
    let event = StockReserved {
        sku: sku.into(),
        order_id: "o-1".into(),
        quantity,
    };
    recorded("inventory", sku, &event)
}

fn captured() -> RecordedEvent {
    let event = PaymentCaptured {
        order_id: "o-1".into(),
        amount_cents: 3_000,
        currency: "EUR".into(),
    };
    recorded("payment", "o-1", &event)
}

fn commands(effects: Effects<FulfillmentCommand>) -> Vec<FulfillmentCommand> {
    effects.commands
}

fn step(state: &mut FulfillmentState, event: &RecordedEvent) -> Vec<FulfillmentCommand> {
    commands(OrderFulfillment.handle(state, event).unwrap())
}

#[test]
fn events_route_by_the_order_id() {
    let process = OrderFulfillment;
    assert_eq!(
        process.route(&placed()).unwrap(),
        Route::StartStrict("o-1".into())
    );
    assert_eq!(
        process.route(&reserved("monitor", 2)).unwrap(),
        Route::Continue("o-1".into())
    );
    // An event that names no order is an error, never silently ignored.
    let mut corrupt = placed();
    corrupt.payload = Payload::encode(&serde_json::json!({"customer_id": "carol"})).unwrap();
    let error = process.route(&corrupt).unwrap_err().to_string();
    assert!(error.contains("`OrderPlaced` version 2"), "{error}");
    assert!(error.contains("`order_id`"), "{error}");
    assert!(
        error.contains(&format!("position {}", corrupt.position)),
        "{error}"
    );
    assert!(error.contains("order-o-1"), "{error}");
}

#[test]
fn lines_are_reserved_one_by_one_then_the_paid_order_is_shipped() {
    let mut state = FulfillmentState::default();
    assert_eq!(
        step(&mut state, &placed()),
        [FulfillmentCommand::ReserveStock(ReserveStockV1 {
            sku: "keyboard".into(),
            order_id: "o-1".into(),
            quantity: 1,
        })]
    );
    assert_eq!(
        step(&mut state, &reserved("keyboard", 1)),
        [FulfillmentCommand::ReserveStock(ReserveStockV1 {
            sku: "monitor".into(),
            order_id: "o-1".into(),
            quantity: 2,
        })]
    );
    assert_eq!(
        step(&mut state, &captured()),
        [FulfillmentCommand::MarkOrderPaid(MarkOrderPaidV1 {
            order_id: "o-1".into(),
            amount_cents: 3_000,
        })]
    );
    assert_eq!(
        step(&mut state, &reserved("monitor", 2)),
        [FulfillmentCommand::CreateShipment(CreateShipmentV1 {
            order_id: "o-1".into(),
            lines: vec![
                ShipmentLine {
                    sku: "keyboard".into(),
                    quantity: 1,
                },
                ShipmentLine {
                    sku: "monitor".into(),
                    quantity: 2,
                },
            ],
        })]
    );
}

// ANCHOR: compensation
#[test]
fn a_rejected_reservation_cancels_and_the_cancellation_compensates() {
    let mut state = FulfillmentState::default();
    step(&mut state, &placed());
    step(&mut state, &reserved("keyboard", 1));
    step(&mut state, &captured());
    let rejected = ReservationRejected {
        sku: "monitor".into(),
        order_id: "o-1".into(),
        requested: 2,
        available: 1,
    };
    assert_eq!(
        step(&mut state, &recorded("inventory", "monitor", &rejected)),
        [FulfillmentCommand::CancelOrder(CancelOrderV1 {
            order_id: "o-1".into(),
            reason: "out of stock: monitor (requested 2, available 1)".into(),
        })]
    );
    let cancelled = OrderCancelled {
        order_id: "o-1".into(),
        reason: "out of stock: monitor (requested 2, available 1)".into(),
    };
    let effects = OrderFulfillment
        .handle(&mut state, &recorded("order", "o-1", &cancelled))
        .unwrap();
    assert_eq!(
        effects.commands,
        [
            FulfillmentCommand::ReleaseStock(ReleaseStockV1 {
                sku: "keyboard".into(),
                order_id: "o-1".into(),
            }),
            FulfillmentCommand::RefundPayment(RefundPaymentV1 {
                order_id: "o-1".into(),
                reason: "order cancelled".into(),
            }),
        ]
    );
    // The instance stays a day, for payments that raced the cancellation.
    assert_eq!(effects.schedule.len(), 1);
    assert!(!effects.complete);
}
// ANCHOR_END: compensation
