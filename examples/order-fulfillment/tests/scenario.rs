//! The application end to end, on the in-memory store and on PostgreSQL: the demo scenario,
//! a failed reservation with compensation, a crash and restart, a rebuild of the read models.

mod common;

use factum::{EventStore, MemoryStore};
use order_fulfillment::app::NewOrder;
use order_fulfillment::domain::Line;
use order_fulfillment::read_model::{CustomerStats, DailySales, OrderSummary};
use order_fulfillment::{App, AppError, demo};

use common::{all_events, fingerprint, postgres, stream_types};

fn line(sku: &str, quantity: u32, unit_price_cents: u64) -> Line {
    Line {
        sku: sku.into(),
        quantity,
        unit_price_cents,
    }
}

fn new_order(id: &str, customer: &str, lines: Vec<Line>) -> NewOrder {
    NewOrder {
        order_id: Some(id.into()),
        customer_id: customer.into(),
        lines,
        currency: Some("EUR".into()),
    }
}

fn statuses(orders: &[OrderSummary]) -> Vec<(&str, &str)> {
    orders
        .iter()
        .map(|o| (o.order_id.as_str(), o.status.as_str()))
        .collect()
}

/// A customer's id, order count and spending per currency.
type Spent<'a> = (&'a str, u64, Vec<(&'a str, u64)>);

fn spent(customers: &[CustomerStats]) -> Vec<Spent<'_>> {
    customers
        .iter()
        .map(|c| {
            let spent = c
                .total_spent_cents
                .iter()
                .map(|(cur, cents)| (cur.as_str(), *cents))
                .collect();
            (c.customer_id.as_str(), c.order_count, spent)
        })
        .collect()
}

fn sales(days: &[DailySales]) -> Vec<(&str, u64, u64, i64)> {
    days.iter()
        .map(|d| (d.currency.as_str(), d.payments, d.refunds, d.net_cents))
        .collect()
}

async fn stock<S: EventStore>(app: &App<S>, sku: &str) -> (u32, u32, u32) {
    let s = app.stock(sku).await.unwrap();
    (s.on_hand, s.reserved, s.available)
}

/// Runs the demo on `store` and checks every read model it prints.
async fn the_demo_scenario<S: EventStore>(store: S) {
    let app = App::start(store);
    let printed = demo::run(&app).await.unwrap();

    let orders = app.orders().await.unwrap();
    assert_eq!(
        statuses(&orders),
        [
            ("o-1001", "shipped"),
            ("o-1002", "shipped"),
            ("o-1003", "cancelled"),
            ("o-1004", "cancelled"),
        ]
    );
    assert_eq!(orders[0].tracking.as_deref(), Some("DHL-o-1001"));
    assert_eq!(orders[1].currency, "USD");
    assert_eq!(
        orders[3].cancel_reason.as_deref(),
        Some("out of stock: monitor (requested 2, available 1)")
    );
    assert_eq!(
        spent(&app.customers().await.unwrap()),
        [
            ("alice", 2, vec![("EUR", 8_997)]),
            ("bob", 1, vec![("USD", 18_900)]),
            ("carol", 1, vec![]),
        ]
    );
    assert_eq!(
        sales(&app.daily_sales().await.unwrap()),
        [("EUR", 2, 1, 8_997), ("USD", 1, 0, 18_900)]
    );
    assert_eq!(stock(&app, "keyboard").await, (9, 0, 9));
    assert_eq!(stock(&app, "monitor").await, (1, 0, 1));
    assert_eq!(stock(&app, "mouse").await, (23, 0, 23));
    assert_eq!(
        stream_types(app.store(), "order-o-1001").await,
        ["OrderPlaced", "OrderPaid", "OrderShipped"]
    );
    assert!(printed.contains("o-1004   carol    cancelled"), "{printed}");
    assert!(printed.contains("#1 OrderPlaced v2 @"), "{printed}");
    assert!(printed.contains("#3 OrderShipped v1 @"), "{printed}");

    // Rebuilt from the first event, the read models come out the same.
    let customers = app.customers().await.unwrap();
    let daily = app.daily_sales().await.unwrap();
    app.rebuild_read_models().await.unwrap();
    assert_eq!(app.orders().await.unwrap(), orders);
    assert_eq!(app.customers().await.unwrap(), customers);
    assert_eq!(app.daily_sales().await.unwrap(), daily);
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_scenario_in_memory() {
    the_demo_scenario(MemoryStore::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_scenario_on_postgres() {
    the_demo_scenario(postgres().await).await;
}

// ANCHOR: compensation
/// An order whose second line cannot be reserved is cancelled, and the first line's stock
/// is released; a payment that raced the cancellation is refunded.
async fn a_failed_reservation_is_compensated<S: EventStore>(store: S) {
    let app = App::start(store);
    app.receive_stock("keyboard", 5, None).await.unwrap();
    app.receive_stock("monitor", 1, None).await.unwrap();
    let order = new_order(
        "o-1",
        "carol",
        vec![line("keyboard", 2, 4_999), line("monitor", 3, 18_900)],
    );
    app.place_order(order, None).await.unwrap();
    // Paying at once races the process: the payment is either refused (the order is already
    // cancelled) or captured, and then refunded.
    let paid = app.pay("o-1", None).await;
    app.settle().await.unwrap();

    let order = app.order("o-1").await.unwrap();
    assert_eq!(order.status, "cancelled");
    assert_eq!(
        order.cancel_reason.as_deref(),
        Some("out of stock: monitor (requested 3, available 1)")
    );
    assert_eq!(
        stream_types(app.store(), "inventory-keyboard").await,
        ["StockReceived", "StockReserved", "StockReleased"]
    );
    assert_eq!(
        stream_types(app.store(), "inventory-monitor").await,
        ["StockReceived", "ReservationRejected"]
    );
    assert_eq!(app.stock("keyboard").await.unwrap().available, 5);
    let payment = stream_types(app.store(), "payment-o-1").await;
    match paid {
        Ok(_) => assert_eq!(payment, ["PaymentCaptured", "PaymentRefunded"]),
        Err(AppError::Conflict(_)) => assert!(payment.is_empty(), "{payment:?}"),
        Err(other) => panic!("unexpected {other:?}"),
    }
    assert!(stream_types(app.store(), "shipment-o-1").await.is_empty());
    let carol = &app.customers().await.unwrap()[0];
    assert_eq!(carol.total_spent_cents.values().sum::<u64>(), 0);
    app.shutdown().await.unwrap();
}
// ANCHOR_END: compensation

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_reservation_is_compensated_in_memory() {
    a_failed_reservation_is_compensated(MemoryStore::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_reservation_is_compensated_on_postgres() {
    a_failed_reservation_is_compensated(postgres().await).await;
}

/// The flow of several orders, with the application dropped (as a crash: its workers are
/// aborted wherever they are) twice in the middle and started again on the same store.
/// Everything completes, and every effect happens exactly once.
async fn a_crash_and_restart_loses_nothing<S: EventStore>(store: S) {
    let first = App::start(store.clone());
    first.receive_stock("keyboard", 10, None).await.unwrap();
    first.receive_stock("monitor", 1, None).await.unwrap();
    for (id, lines) in [
        ("o-1", vec![line("keyboard", 2, 4_999)]),
        (
            "o-2",
            vec![line("keyboard", 1, 4_999), line("monitor", 1, 18_900)],
        ),
        (
            "o-3",
            vec![line("keyboard", 1, 4_999), line("monitor", 1, 18_900)],
        ),
    ] {
        first
            .place_order(new_order(id, "alice", lines), None)
            .await
            .unwrap();
    }
    first.pay("o-1", None).await.unwrap();
    drop(first);

    let second = App::start(store.clone());
    second.pay("o-2", None).await.unwrap();
    drop(second);

    let third = App::start(store.clone());
    third.settle().await.unwrap();
    third.ship("o-1", "dhl", None).await.unwrap();
    third.ship("o-2", "ups", None).await.unwrap();
    third.settle().await.unwrap();

    assert_eq!(
        statuses(&third.orders().await.unwrap()),
        [("o-1", "shipped"), ("o-2", "shipped"), ("o-3", "cancelled")]
    );
    for order in ["o-1", "o-2"] {
        assert_eq!(
            stream_types(third.store(), &format!("order-{order}")).await,
            ["OrderPlaced", "OrderPaid", "OrderShipped"]
        );
        assert_eq!(
            stream_types(third.store(), &format!("shipment-{order}")).await,
            ["ShipmentCreated", "ShipmentDispatched"]
        );
    }
    assert_eq!(
        stream_types(third.store(), "order-o-3").await,
        ["OrderPlaced", "OrderCancelled"]
    );
    // o-1 2 + o-2 1 shipped, o-3's keyboard released: each reservation made once.
    assert_eq!(
        stream_types(third.store(), "inventory-keyboard").await,
        [
            "StockReceived",
            "StockReserved",
            "StockReserved",
            "StockReserved",
            "StockReleased",
            "StockShipped",
            "StockShipped",
        ]
    );
    assert_eq!(stock(&third, "keyboard").await, (7, 0, 7));
    assert_eq!(stock(&third, "monitor").await, (0, 0, 0));
    third.shutdown().await.unwrap();

    // Another start on the same store finds nothing left to do.
    let before = fingerprint(&store).await;
    let fourth = App::start(store.clone());
    fourth.settle().await.unwrap();
    assert_eq!(fingerprint(&store).await, before);
    assert_eq!(all_events(&store).await.len(), before.len());
    fourth.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_and_restart_loses_nothing_in_memory() {
    a_crash_and_restart_loses_nothing(MemoryStore::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_and_restart_loses_nothing_on_postgres() {
    a_crash_and_restart_loses_nothing(postgres().await).await;
}
