//! The application end to end, on the in-memory store and on PostgreSQL: the demo scenario,
//! a failed reservation with compensation, a crash and restart, a rebuild of the read models.

mod common;

use std::time::Duration;

use factum::coordination::{CheckpointStore, ParkReason};
use factum::projection::FailurePolicy;
use factum::store::NewEvent;
use factum::{Coordination, EventStore, ExpectedVersion, MemoryStore};
use factum_postgres::{PgCoordination, PgStore};
use order_fulfillment::app::NewOrder;
use order_fulfillment::domain::Line;
use order_fulfillment::read_model::{
    CUSTOMER_STATS, CustomerStats, DAILY_SALES, DailySales, ORDER_LIST, OrderSummary,
};
use order_fulfillment::{App, AppError, AppOptions, MemoryApp, PgApp, demo};

use common::{all_events, fingerprint, master_key, postgres, read_model_tables, stream_types};

/// Short leases: a restart after a crash takes over the dead process's partitions (on
/// PostgreSQL) within seconds.
fn options() -> AppOptions {
    AppOptions {
        lease_ttl: Duration::from_secs(2),
        ..AppOptions::default()
    }
}

/// Starts the application in memory.
async fn in_memory(store: MemoryStore) -> MemoryApp {
    App::in_memory(store, &options())
}

/// Starts the application on PostgreSQL.
async fn on_postgres(store: PgStore) -> PgApp {
    App::on_postgres(store, master_key(), &options())
        .await
        .unwrap()
}

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
        customer_name: None,
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

async fn stock<S: EventStore, C: Coordination>(app: &App<S, C>, sku: &str) -> (u32, u32, u32) {
    let s = app.stock(sku).await.unwrap();
    (s.on_hand, s.reserved, s.available)
}

/// Runs the demo on `store` and checks every read model it prints; returns the application
/// still running.
async fn the_demo_scenario<S: EventStore, T: EventStore, C: Coordination>(
    store: S,
    start: impl AsyncFn(S) -> App<T, C>,
) -> App<T, C> {
    let app = start(store).await;
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
    app
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_scenario_in_memory() {
    let app = the_demo_scenario(MemoryStore::new(), in_memory).await;
    app.shutdown().await.unwrap();
}

/// Checkpoints of the projections and the process, as saved in the store's database.
async fn checkpoints(store: &PgStore) -> Vec<u64> {
    let coordination = PgCoordination::new(store);
    let mut saved = Vec::new();
    for name in [ORDER_LIST, CUSTOMER_STATS, DAILY_SALES, "order_fulfillment"] {
        saved.push(coordination.load(name, 0).await.unwrap());
    }
    saved
}

/// A copy of `store`'s events, in global order, into a new in-memory store: same ids,
/// streams, versions, types, payloads and metadata.
async fn copy_to_memory<S: EventStore>(store: &S) -> MemoryStore {
    let copy = MemoryStore::new();
    for event in all_events(store).await {
        let new = NewEvent {
            event_id: event.event_id,
            event_type: event.event_type,
            schema_version: event.schema_version,
            payload: event.payload,
            metadata: event.metadata,
        };
        let expected = ExpectedVersion::Exact(event.stream_version - 1);
        copy.append(&event.stream_id, expected, &[new])
            .await
            .unwrap();
    }
    copy
}

/// The read models in tables and in memory are two implementations of one thing: fed the
/// same events, they give the same answers. (The days of the daily sales are left out: the
/// copy records its events today, whatever day the originals were.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_models_agree_on_both_stores() {
    let store = postgres().await;
    let pg = the_demo_scenario(store.clone(), on_postgres).await;
    let copy = copy_to_memory(&store).await;
    let events = fingerprint(&copy).await;
    let memory = in_memory(copy.clone()).await;
    memory.settle().await.unwrap();

    assert_eq!(memory.orders().await.unwrap(), pg.orders().await.unwrap());
    assert_eq!(
        memory.customers().await.unwrap(),
        pg.customers().await.unwrap()
    );
    assert_eq!(
        sales(&memory.daily_sales().await.unwrap()),
        sales(&pg.daily_sales().await.unwrap())
    );
    // The process found every command of the copied history already executed.
    assert_eq!(fingerprint(&copy).await, events);
    memory.shutdown().await.unwrap();
    pg.shutdown().await.unwrap();
}

// ANCHOR: pg_rebuild
/// On PostgreSQL the read models are tables in the store's schema, each row written in the
/// transaction that moved its projection's checkpoint; rebuilt from the first event, the
/// tables come out row for row the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_scenario_on_postgres() {
    let store = postgres().await;
    let app = the_demo_scenario(store.clone(), on_postgres).await;
    let head = EventStore::head_position(&store).await.unwrap();
    assert_eq!(checkpoints(&store).await, [head; 4].to_vec());

    let tables = read_model_tables(&store).await;
    let count = |table: &str| tables.iter().filter(|(t, _)| t == table).count();
    assert_eq!(count("order_list"), 4);
    assert_eq!(count("customer_stats"), 3);
    assert_eq!(count("customer_orders"), 4);
    assert_eq!(count("daily_sales"), 2);

    app.rebuild_read_models().await.unwrap();
    assert_eq!(read_model_tables(&store).await, tables);
    app.shutdown().await.unwrap();

    // A restart resumes from the checkpoints: nothing is applied twice.
    let again = on_postgres(store.clone()).await;
    again.settle().await.unwrap();
    assert_eq!(read_model_tables(&store).await, tables);
    again.shutdown().await.unwrap();
}
// ANCHOR_END: pg_rebuild

// ANCHOR: compensation
/// An order whose second line cannot be reserved is cancelled, and the first line's stock
/// is released; a payment that raced the cancellation is refunded.
async fn a_failed_reservation_is_compensated<S: EventStore, T: EventStore, C: Coordination>(
    store: S,
    start: impl AsyncFn(S) -> App<T, C>,
) {
    let app = start(store).await;
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
    let paid = app.pay("o-1", None, None).await;
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
    a_failed_reservation_is_compensated(MemoryStore::new(), in_memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_reservation_is_compensated_on_postgres() {
    a_failed_reservation_is_compensated(postgres().await, on_postgres).await;
}

/// The flow of several orders, with the application dropped (as a crash: its workers are
/// aborted wherever they are) twice in the middle and started again on the same store.
/// Everything completes, and every effect happens exactly once.
async fn a_crash_and_restart_loses_nothing<S: EventStore, T: EventStore, C: Coordination>(
    store: S,
    start: impl AsyncFn(S) -> App<T, C>,
) {
    let first = start(store.clone()).await;
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
    first.pay("o-1", None, None).await.unwrap();
    drop(first);

    let second = start(store.clone()).await;
    second.pay("o-2", None, None).await.unwrap();
    drop(second);

    let third = start(store.clone()).await;
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
    // Each event counted once in the read models, whichever process applied it.
    let orders = third.orders().await.unwrap();
    assert_eq!(
        spent(&third.customers().await.unwrap()),
        [("alice", 3, vec![("EUR", 4_999 * 2 + 4_999 + 18_900)])]
    );
    let daily = third.daily_sales().await.unwrap();
    assert_eq!(sales(&daily), [("EUR", 2, 0, 4_999 * 3 + 18_900)]);
    third.shutdown().await.unwrap();

    // Another start on the same store finds nothing left to do, and its read models (rebuilt
    // in memory, resumed from their checkpoints on PostgreSQL) are the same.
    let before = fingerprint(&store).await;
    let fourth = start(store.clone()).await;
    fourth.settle().await.unwrap();
    assert_eq!(fingerprint(&store).await, before);
    assert_eq!(all_events(&store).await.len(), before.len());
    assert_eq!(fourth.orders().await.unwrap(), orders);
    assert_eq!(fourth.daily_sales().await.unwrap(), daily);
    fourth.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_and_restart_loses_nothing_in_memory() {
    a_crash_and_restart_loses_nothing(MemoryStore::new(), in_memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_and_restart_loses_nothing_on_postgres() {
    let store = postgres().await;
    a_crash_and_restart_loses_nothing(store.clone(), on_postgres).await;
    let head = EventStore::head_position(&store).await.unwrap();
    assert_eq!(checkpoints(&store).await, [head; 4].to_vec());
    // Workers aborted inside their transactions left nothing behind on the pooled
    // connections.
    assert_pool_is_clean(&store).await;
}

/// Holds every connection of the pool at once and checks that none carries an open
/// transaction, an advisory lock, a `LISTEN` or a session setting.
async fn assert_pool_is_clean(store: &PgStore) {
    let size = store.pool().status().size;
    let mut clients = Vec::new();
    for _ in 0..size {
        clients.push(store.pool().get().await.unwrap());
    }
    for client in &clients {
        let row = client
            .query_one(include_str!("leaks.sql"), &[])
            .await
            .unwrap();
        let leaks: (i64, i64, i64, bool) = (row.get(0), row.get(1), row.get(2), row.get(3));
        assert_eq!(
            leaks,
            (0, 0, 0, true),
            "advisory locks, LISTEN, settings, no transaction"
        );
    }
}

/// Polls `check` until it returns `Some`, for at most a minute.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ANCHOR: pg_dead_letters
/// The order list's table goes missing (a botched migration): the projection retries, parks
/// the event as a dead letter, and moves on; the other read models and the process carry on.
/// Once the table is back, a replay applies the parked events, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_parked_and_replayed_on_postgres() {
    let store = postgres().await;
    let options = AppOptions {
        failure: FailurePolicy::park_after(2)
            .backoff(Duration::from_millis(10), Duration::from_millis(50)),
        ..AppOptions::default()
    };
    let app = App::on_postgres(store.clone(), master_key(), &options)
        .await
        .unwrap();
    app.receive_stock("keyboard", 5, None).await.unwrap();
    let schema = store.config().schema.quoted();
    let client = store.pool().get().await.unwrap();
    client
        .batch_execute(&format!(
            "ALTER TABLE {schema}.order_list RENAME TO order_list_away"
        ))
        .await
        .unwrap();

    let order = new_order("o-1", "alice", vec![line("keyboard", 1, 4_999)]);
    app.place_order(order, None).await.unwrap();
    app.pay("o-1", None, None).await.unwrap();
    app.settle().await.unwrap();
    let parked = app.dead_letters().await.unwrap();
    let parked: Vec<_> = parked
        .iter()
        .map(|p| (p.name.as_str(), p.event_type.as_str(), &p.reason))
        .collect();
    assert!(
        matches!(
            parked.as_slice(),
            [
                ("order_list", "OrderPlaced", ParkReason::Failed { .. }),
                ("order_list", "OrderPaid", ParkReason::Waiting { .. }),
            ]
        ),
        "{parked:?}"
    );
    // The rest went on: the customer's statistics and the fulfillment.
    assert_eq!(
        spent(&app.customers().await.unwrap()),
        [("alice", 1, vec![("EUR", 4_999)])]
    );
    assert_eq!(
        stream_types(&store, "shipment-o-1").await,
        ["ShipmentCreated"]
    );

    client
        .batch_execute(&format!(
            "ALTER TABLE {schema}.order_list_away RENAME TO order_list"
        ))
        .await
        .unwrap();
    assert_eq!(app.replay_dead_letters().await.unwrap(), 2);
    eventually("the replay", || async {
        app.dead_letters().await.unwrap().is_empty().then_some(())
    })
    .await;
    assert_eq!(statuses(&app.orders().await.unwrap()), [("o-1", "paid")]);
    app.shutdown().await.unwrap();
}
// ANCHOR_END: pg_dead_letters
