//! The domain in a bare `factum::Application`: commands routed by their `#[id]`, refusals
//! matched by the aggregate's error type, a command at an expected version, and a read model
//! read after its own write.

use factum::projection::ProjectionOptions;
use factum::{Application, Error, MemoryStore, Metadata};
use order_fulfillment::domain::Line;
use order_fulfillment::domain::order::{CancelOrderV1, Order, OrderError, PlaceOrderV1};
use order_fulfillment::domain::payment::{CapturePaymentV1, Payment, PaymentError};
use order_fulfillment::read_model::{ORDER_LIST, OrderList};

fn place(order_id: &str) -> PlaceOrderV1 {
    PlaceOrderV1 {
        order_id: order_id.into(),
        customer_id: "alice".into(),
        lines: vec![Line {
            sku: "keyboard".into(),
            quantity: 2,
            unit_price_cents: 4_999,
        }],
    }
}

// ANCHOR: application
#[tokio::test]
async fn commands_go_to_the_instance_their_id_names() {
    let orders = OrderList::default();
    let app = Application::builder(MemoryStore::new())
        .aggregate::<Order>()
        .aggregate::<Payment>()
        .projection(orders.clone(), ProjectionOptions::new())
        .start();

    // Each command goes to its aggregate, on the instance its `#[id]` field names.
    let placed = app.dispatch(place("o-1"), Metadata::new()).await.unwrap();
    assert_eq!(
        (placed.stream_id.as_str(), placed.version),
        ("order-o-1", 1)
    );
    let capture = CapturePaymentV1 {
        order_id: "o-1".into(),
        amount_cents: 9_998,
        currency: "EUR".into(),
    };
    let paid = app
        .dispatch(capture.clone(), Metadata::new())
        .await
        .unwrap();
    assert_eq!(paid.stream_id.as_str(), "payment-o-1");

    // A refusal keeps the aggregate's error, to match by type.
    let again = app.dispatch(capture, Metadata::new()).await.unwrap_err();
    let Error::Rejected(rejection) = again else {
        panic!("{again}")
    };
    assert_eq!(
        rejection.downcast_ref::<PaymentError>(),
        Some(&PaymentError::AlreadyCaptured)
    );
    let twice = app
        .dispatch(place("o-1"), Metadata::new())
        .await
        .unwrap_err();
    assert!(
        matches!(&twice, Error::Rejected(r) if r.is::<OrderError>()),
        "{twice}"
    );

    // At an expected version (an HTTP `If-Match`): refused unless the stream is at it.
    let cancel = CancelOrderV1 {
        order_id: "o-1".into(),
        reason: "changed my mind".into(),
    };
    let stale = app
        .dispatch_expecting(cancel.clone(), 0, Metadata::new())
        .await
        .unwrap_err();
    assert!(
        matches!(
            stale,
            Error::VersionMismatch {
                expected: 0,
                actual: 1,
                ..
            }
        ),
        "{stale}"
    );
    let cancelled = app
        .dispatch_expecting(cancel, 1, Metadata::new())
        .await
        .unwrap();

    // Read your writes: wait until the read model has handled the command's events.
    app.wait_for(ORDER_LIST, cancelled.position).await.unwrap();
    let status = orders.read(|rows| rows["o-1"].status.clone());
    assert_eq!(status, "cancelled");
    app.shutdown().await.unwrap();
}
// ANCHOR_END: application
