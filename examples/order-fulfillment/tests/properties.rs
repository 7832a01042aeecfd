//! Property tests on the example's aggregates, on the in-memory store and on PostgreSQL.
//!
//! For random command sequences executed through a [`Repository`]:
//! - the inventory never reserves more than it holds (reserved ≤ on hand after every
//!   command), refuses a reservation exactly when it does not fit the available units, and
//!   ships only what was reserved; folding its stored events gives the state the repository
//!   loads, the state loaded as of every version (latest snapshot at or below it plus the
//!   events after it) equals a full replay up to that version, and the state loaded as of
//!   each event's time equals the fold of the events recorded by then;
//! - an order is placed once, shipped only when paid, never cancelled once shipped and never
//!   changed once cancelled; folding its stored events gives the state the repository loads;
//! - a payment is captured once and refunded at most once, for the amount and currency
//!   captured.
//!
//! And every stored version-1 `OrderPlaced`, generated at random, upcasts to the current
//! type with its fields kept and the currency set to euros, read alone and through both
//! stores.
//!
//! Cases are few on PostgreSQL: each case runs on its own streams of one store per test.

use std::collections::BTreeMap;

use factum::store::{NewEvent, Payload, StreamRead};
use factum::{
    Aggregate, AsOf, EventSet, EventStore, ExpectedVersion, MemoryStore, Metadata, RecordedEvent,
    Repository, StreamId,
};
use factum_postgres::testing::{shared_runtime, shared_store};
use order_fulfillment::domain::inventory::{
    Inventory, InventoryError, InventoryEvent, ReceiveStockV1, ReleaseStockV1, ReserveStockV1,
    ShipStockV1,
};
use order_fulfillment::domain::order::{
    CancelOrderV1, MarkOrderPaidV1, Order, OrderError, OrderEvent, OrderPlaced, PlaceOrderV1,
    PlaceOrderV2, ShipOrderV1,
};
use order_fulfillment::domain::payment::{
    CapturePaymentV1, Payment, PaymentError, PaymentEvent, RefundPaymentV1,
};
use order_fulfillment::domain::{Line, total_cents};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::json;

const MEMORY_CASES: u32 = 64;
const POSTGRES_CASES: u32 = 6;

/// Runs one case's body on the shared runtime (the PostgreSQL store's connections live on
/// it).
fn run<F>(body: F) -> Result<(), TestCaseError>
where
    F: Future<Output = Result<(), TestCaseError>>,
{
    shared_runtime().block_on(body)
}

fn fresh_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

async fn stored<S: EventStore>(store: &S, stream: &StreamId) -> Vec<RecordedEvent> {
    store
        .read_stream(stream, &StreamRead::all())
        .await
        .expect("read_stream")
}

fn decoded<E: EventSet>(stored: &[RecordedEvent]) -> Vec<E> {
    stored
        .iter()
        .flat_map(|e| E::decode_recorded(e).expect("a stored event decodes"))
        .collect()
}

fn fold<A: Aggregate>(events: &[A::Event]) -> A {
    let mut state = A::default();
    for event in events {
        state.apply(event);
    }
    state
}

// ---------------------------------------------------------------------------------------
// The inventory: reserved ≤ on hand.

const ORDERS: [&str; 4] = ["o-1", "o-2", "o-3", "o-4"];

#[derive(Clone, Debug)]
enum StockOp {
    Receive(u32),
    Reserve(usize, u32),
    Release(usize),
    Ship(usize),
}

fn stock_ops() -> impl Strategy<Value = Vec<StockOp>> {
    let order = 0..ORDERS.len();
    let op = prop_oneof![
        (0u32..20).prop_map(StockOp::Receive),
        (order.clone(), 0u32..30).prop_map(|(o, q)| StockOp::Reserve(o, q)),
        order.clone().prop_map(StockOp::Release),
        order.prop_map(StockOp::Ship),
    ];
    prop::collection::vec(op, 1..40)
}

#[derive(Debug, Default)]
struct StockModel {
    on_hand: u32,
    reservations: BTreeMap<&'static str, u32>,
    version: u64,
    snapshot: Option<u64>,
}

impl StockModel {
    fn available(&self) -> u32 {
        self.on_hand - self.reservations.values().sum::<u32>()
    }
}

async fn inventory_property<S: EventStore>(
    store: S,
    ops: Vec<StockOp>,
) -> Result<(), TestCaseError> {
    let inventory = Repository::<Inventory, _>::new(store.clone());
    let sku = fresh_id();
    let mut model = StockModel::default();
    for op in ops {
        let before = model.version;
        match op {
            StockOp::Receive(quantity) => {
                let command = ReceiveStockV1 {
                    sku: sku.clone(),
                    quantity,
                };
                let result = inventory.execute(command, Metadata::new()).await;
                if quantity == 0 {
                    let invalid = matches!(result, Err(factum::Error::InvalidCommand { .. }));
                    prop_assert!(invalid, "{result:?}");
                } else {
                    prop_assert_eq!(result.unwrap().events.len(), 1);
                    model.on_hand += quantity;
                    model.version += 1;
                }
            }
            StockOp::Reserve(order, quantity) => {
                let order_id = ORDERS[order];
                let command = ReserveStockV1 {
                    sku: sku.clone(),
                    order_id: order_id.into(),
                    quantity,
                };
                let done = inventory.execute(command, Metadata::new()).await.unwrap();
                if model.reservations.contains_key(order_id) {
                    prop_assert!(done.events.is_empty(), "{:?}", done.events);
                } else if quantity <= model.available() {
                    let reserved = matches!(
                        done.events.as_slice(),
                        [InventoryEvent::StockReserved(e)] if e.quantity == quantity
                    );
                    prop_assert!(reserved, "{:?}", done.events);
                    model.reservations.insert(order_id, quantity);
                    model.version += 1;
                } else {
                    let available = model.available();
                    let rejected = matches!(
                        done.events.as_slice(),
                        [InventoryEvent::ReservationRejected(e)]
                            if (e.requested, e.available) == (quantity, available)
                    );
                    prop_assert!(rejected, "{:?}", done.events);
                    model.version += 1;
                }
            }
            StockOp::Release(order) => {
                let order_id = ORDERS[order];
                let command = ReleaseStockV1 {
                    sku: sku.clone(),
                    order_id: order_id.into(),
                };
                let done = inventory.execute(command, Metadata::new()).await.unwrap();
                let released = model.reservations.remove(order_id);
                prop_assert_eq!(done.events.len(), usize::from(released.is_some()));
                model.version += u64::from(released.is_some());
            }
            StockOp::Ship(order) => {
                let order_id = ORDERS[order];
                let command = ShipStockV1 {
                    sku: sku.clone(),
                    order_id: order_id.into(),
                };
                let result = inventory.execute(command, Metadata::new()).await;
                match model.reservations.remove(order_id) {
                    Some(quantity) => {
                        let shipped = matches!(
                            result.unwrap().events.as_slice(),
                            [InventoryEvent::StockShipped(e)] if e.quantity == quantity
                        );
                        prop_assert!(shipped);
                        model.on_hand -= quantity;
                        model.version += 1;
                    }
                    None => {
                        let error = result.unwrap_err();
                        let refusal = InventoryError::NoReservation {
                            order_id: order_id.into(),
                        };
                        prop_assert_eq!(error.rejection(), Some(&refusal));
                    }
                }
            }
        }
        if before / 10 != model.version / 10 {
            model.snapshot = Some(model.version);
        }
        // The invariant, on the state the repository loads after every command.
        let state = inventory.load(&sku).await.unwrap();
        prop_assert_eq!(state.version, model.version);
        prop_assert!(state.state.reserved() <= state.state.on_hand());
        prop_assert_eq!(
            (state.state.on_hand(), state.state.available()),
            (model.on_hand, model.available())
        );
        for order_id in ORDERS {
            let reservation = model.reservations.get(order_id).copied();
            prop_assert_eq!(state.state.reservation(order_id), reservation);
        }
    }

    let stream = StreamId::new(Inventory::CATEGORY, &sku).unwrap();
    let events = stored(&store, &stream).await;
    prop_assert_eq!(events.len() as u64, model.version);
    let loaded = inventory.load(&sku).await.unwrap();
    let folded: Inventory = fold(&decoded::<InventoryEvent>(&events));
    prop_assert_eq!(json(&loaded.state), json(&folded));

    // Snapshots were taken where the policy (every 10 events) says, and snapshot + tail
    // equals a full replay at every version.
    let snapshot = store
        .load_snapshot(&stream, Inventory::STATE_VERSION, None)
        .await
        .unwrap();
    prop_assert_eq!(snapshot.map(|s| s.version), model.snapshot);
    for version in 0..=model.version {
        let at = inventory
            .load_as_of(&sku, AsOf::Version(version))
            .await
            .unwrap();
        prop_assert_eq!(at.version, version);
        let prefix = &events[..usize::try_from(version).unwrap()];
        let replayed: Inventory = fold(&decoded::<InventoryEvent>(prefix));
        prop_assert_eq!(json(&at.state), json(&replayed), "at {}", version);
    }
    // A temporal load as of each event's time is the fold of the events recorded by then.
    for event in &events {
        let by_then: Vec<RecordedEvent> = events
            .iter()
            .filter(|e| e.recorded_at <= event.recorded_at)
            .cloned()
            .collect();
        let at = inventory.load_as_of(&sku, event.recorded_at).await.unwrap();
        prop_assert_eq!(at.version, by_then.last().unwrap().stream_version);
        let replayed: Inventory = fold(&decoded::<InventoryEvent>(&by_then));
        prop_assert_eq!(json(&at.state), json(&replayed));
    }
    Ok(())
}

fn json(inventory: &Inventory) -> serde_json::Value {
    serde_json::to_value(inventory).expect("the inventory's state encodes")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(MEMORY_CASES))]

    #[test]
    fn inventory_never_reserves_more_than_it_holds_in_memory(ops in stock_ops()) {
        run(inventory_property(MemoryStore::new(), ops))?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(POSTGRES_CASES))]

    #[test]
    fn inventory_never_reserves_more_than_it_holds_on_postgres(ops in stock_ops()) {
        run(async { inventory_property(shared_store().await, ops).await })?;
    }
}

// ---------------------------------------------------------------------------------------
// The order: shipped only when paid, never cancelled once shipped.

fn text() -> impl Strategy<Value = String> {
    // Letters, digits, SQL metacharacters, non-ASCII and emoji.
    "[a-z0-9 '\";%_\\\\é€😀-]{1,12}"
}

/// Valid lines: distinct non-blank SKUs, positive quantities.
fn lines() -> impl Strategy<Value = Vec<Line>> {
    prop::collection::btree_map("[a-z0-9]{1,6}", (1u32..100, 0u64..100_000), 1..4).prop_map(
        |lines| {
            lines
                .into_iter()
                .map(|(sku, (quantity, unit_price_cents))| Line {
                    sku,
                    quantity,
                    unit_price_cents,
                })
                .collect()
        },
    )
}

#[derive(Clone, Debug)]
enum OrderOp {
    PlaceV1(Vec<Line>),
    PlaceV2(Vec<Line>, String),
    MarkPaid(u64),
    Ship,
    Cancel,
}

fn order_ops() -> impl Strategy<Value = Vec<OrderOp>> {
    let op = prop_oneof![
        lines().prop_map(OrderOp::PlaceV1),
        (lines(), "[A-Z]{3}").prop_map(|(lines, currency)| OrderOp::PlaceV2(lines, currency)),
        (0u64..1_000_000).prop_map(OrderOp::MarkPaid),
        Just(OrderOp::Ship),
        Just(OrderOp::Cancel),
    ];
    prop::collection::vec(op, 1..12)
}

#[derive(Debug, Default)]
struct OrderModel {
    placed: Option<(String, u64)>,
    paid: bool,
    shipped: bool,
    cancelled: bool,
    version: u64,
}

impl OrderModel {
    /// The refusal the order must give to any command but placing, if any.
    fn open(&self) -> Result<(), OrderError> {
        if self.placed.is_none() {
            Err(OrderError::NotPlaced)
        } else if self.cancelled {
            Err(OrderError::Cancelled)
        } else if self.shipped {
            Err(OrderError::AlreadyShipped)
        } else {
            Ok(())
        }
    }

    fn status(&self) -> &'static str {
        match (
            self.placed.is_some(),
            self.paid,
            self.shipped,
            self.cancelled,
        ) {
            (_, _, _, true) => "cancelled",
            (_, _, true, _) => "shipped",
            (_, true, _, _) => "paid",
            (true, _, _, _) => "placed",
            _ => "new",
        }
    }
}

async fn order_property<S: EventStore>(
    store: S,
    customer: String,
    ops: Vec<OrderOp>,
) -> Result<(), TestCaseError> {
    let orders = Repository::<Order, _>::new(store.clone());
    let id = fresh_id();
    let mut model = OrderModel::default();
    for op in ops {
        let (expected, result) = match op.clone() {
            OrderOp::PlaceV1(lines) | OrderOp::PlaceV2(lines, _) => {
                let (currency, result) = match &op {
                    OrderOp::PlaceV2(_, currency) => {
                        let command = PlaceOrderV2 {
                            order_id: id.clone(),
                            customer_id: customer.clone(),
                            lines: lines.clone(),
                            currency: currency.clone(),
                            customer_name: None,
                        };
                        (
                            currency.clone(),
                            orders.execute(command, Metadata::new()).await,
                        )
                    }
                    _ => {
                        let command = PlaceOrderV1 {
                            order_id: id.clone(),
                            customer_id: customer.clone(),
                            lines: lines.clone(),
                        };
                        ("EUR".into(), orders.execute(command, Metadata::new()).await)
                    }
                };
                let expected = if model.placed.is_some() {
                    Err(OrderError::AlreadyPlaced)
                } else {
                    model.placed = Some((currency, total_cents(&lines)));
                    Ok(1)
                };
                (expected, result)
            }
            OrderOp::MarkPaid(amount_cents) => {
                let command = MarkOrderPaidV1 {
                    order_id: id.clone(),
                    amount_cents,
                };
                let expected = model.open().map(|()| usize::from(!model.paid));
                model.paid |= expected.is_ok();
                (expected, orders.execute(command, Metadata::new()).await)
            }
            OrderOp::Ship => {
                let command = ShipOrderV1 {
                    order_id: id.clone(),
                    carrier: "post".into(),
                    tracking: "t-1".into(),
                };
                let paid = if model.paid {
                    Ok(1)
                } else {
                    Err(OrderError::PaymentRequired)
                };
                let expected = model.open().and(paid);
                model.shipped |= expected.is_ok();
                (expected, orders.execute(command, Metadata::new()).await)
            }
            OrderOp::Cancel => {
                let command = CancelOrderV1 {
                    order_id: id.clone(),
                    reason: "changed my mind".into(),
                };
                let expected = model.open().map(|()| 1);
                model.cancelled |= expected.is_ok();
                (expected, orders.execute(command, Metadata::new()).await)
            }
        };
        match (expected, result) {
            (Ok(count), Ok(done)) => {
                prop_assert_eq!(done.events.len(), count, "{:?}", op);
                model.version += count as u64;
                prop_assert_eq!(done.version, model.version);
            }
            (Err(refusal), Err(error)) => {
                prop_assert_eq!(error.rejection(), Some(&refusal), "{:?}", op);
            }
            (expected, result) => {
                let message = format!("{op:?}: expected {expected:?}, got {result:?}");
                return Err(TestCaseError::fail(message));
            }
        }
    }

    let stream = StreamId::new(Order::CATEGORY, &id).unwrap();
    let events = stored(&store, &stream).await;
    prop_assert_eq!(events.len() as u64, model.version);
    let history: Vec<OrderEvent> = decoded(&events);
    // Shipped only after paid; nothing after a cancellation or a shipment.
    let at = |wanted: fn(&OrderEvent) -> bool| history.iter().position(wanted);
    let paid = at(|e| matches!(e, OrderEvent::OrderPaid(_)));
    if let Some(shipped) = at(|e| matches!(e, OrderEvent::OrderShipped(_))) {
        prop_assert!(paid.is_some_and(|paid| paid < shipped), "{history:?}");
        prop_assert_eq!(shipped, history.len() - 1, "{:?}", history);
    }
    if let Some(cancelled) = at(|e| matches!(e, OrderEvent::OrderCancelled(_))) {
        prop_assert_eq!(cancelled, history.len() - 1, "{:?}", history);
    }

    let loaded = orders.load(&id).await.unwrap();
    let folded: Order = fold(&history);
    prop_assert_eq!(loaded.version, model.version);
    for state in [&loaded.state, &folded] {
        prop_assert_eq!(state.status(), model.status());
        let placed = state
            .is_placed()
            .then(|| (state.currency().to_owned(), state.total_cents()));
        prop_assert_eq!(&placed, &model.placed);
        if placed.is_some() {
            prop_assert_eq!(state.customer_id(), customer.as_str());
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(MEMORY_CASES))]

    #[test]
    fn order_is_shipped_only_when_paid_and_never_cancelled_after_in_memory(
        customer in text().prop_map(|t| format!("c-{t}")),
        ops in order_ops(),
    ) {
        run(order_property(MemoryStore::new(), customer, ops))?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(POSTGRES_CASES))]

    #[test]
    fn order_is_shipped_only_when_paid_and_never_cancelled_after_on_postgres(
        customer in text().prop_map(|t| format!("c-{t}")),
        ops in order_ops(),
    ) {
        run(async { order_property(shared_store().await, customer, ops).await })?;
    }
}

// ---------------------------------------------------------------------------------------
// The payment: captured once, refunded at most once, for the amount captured.

#[derive(Clone, Debug)]
enum PaymentOp {
    Capture(u64, String),
    Refund,
}

fn payment_ops() -> impl Strategy<Value = Vec<PaymentOp>> {
    let op = prop_oneof![
        (0u64..100_000, "[A-Z]{3}")
            .prop_map(|(cents, currency)| PaymentOp::Capture(cents, currency)),
        Just(PaymentOp::Refund),
    ];
    prop::collection::vec(op, 1..8)
}

async fn payment_property<S: EventStore>(
    store: S,
    ops: Vec<PaymentOp>,
) -> Result<(), TestCaseError> {
    let payments = Repository::<Payment, _>::new(store.clone());
    let id = fresh_id();
    let mut captured: Option<(u64, String)> = None;
    let mut refunded = false;
    let mut version = 0;
    for op in ops {
        match op {
            PaymentOp::Capture(amount_cents, currency) => {
                let command = CapturePaymentV1 {
                    order_id: id.clone(),
                    amount_cents,
                    currency: currency.clone(),
                };
                let result = payments.execute(command, Metadata::new()).await;
                if amount_cents == 0 {
                    let invalid = matches!(result, Err(factum::Error::InvalidCommand { .. }));
                    prop_assert!(invalid, "{result:?}");
                } else if captured.is_some() {
                    let error = result.unwrap_err();
                    prop_assert_eq!(error.rejection(), Some(&PaymentError::AlreadyCaptured));
                } else {
                    prop_assert_eq!(result.unwrap().events.len(), 1);
                    captured = Some((amount_cents, currency));
                    version += 1;
                }
            }
            PaymentOp::Refund => {
                let command = RefundPaymentV1 {
                    order_id: id.clone(),
                    reason: "returned".into(),
                };
                let result = payments.execute(command, Metadata::new()).await;
                match &captured {
                    None => {
                        let error = result.unwrap_err();
                        prop_assert_eq!(error.rejection(), Some(&PaymentError::NotCaptured));
                    }
                    Some((amount, currency)) => {
                        let done = result.unwrap();
                        if refunded {
                            prop_assert!(done.events.is_empty(), "{:?}", done.events);
                        } else {
                            let refund = matches!(
                                done.events.as_slice(),
                                [PaymentEvent::PaymentRefunded(e)]
                                    if (e.amount_cents, &e.currency) == (*amount, currency)
                            );
                            prop_assert!(refund, "{:?}", done.events);
                            refunded = true;
                            version += 1;
                        }
                    }
                }
            }
        }
    }

    let stream = StreamId::new(Payment::CATEGORY, &id).unwrap();
    let history: Vec<PaymentEvent> = decoded(&stored(&store, &stream).await);
    prop_assert_eq!(history.len() as u64, version);
    // At most one capture, first; at most one refund, after it.
    let kinds: Vec<&str> = history
        .iter()
        .map(|e| match e {
            PaymentEvent::PaymentCaptured(_) => "captured",
            PaymentEvent::PaymentRefunded(_) => "refunded",
        })
        .collect();
    let allowed: [&[&str]; 3] = [&[], &["captured"], &["captured", "refunded"]];
    prop_assert!(allowed.contains(&kinds.as_slice()), "{:?}", kinds);

    let loaded = payments.load(&id).await.unwrap();
    let folded: Payment = fold(&history);
    prop_assert_eq!(loaded.version, version);
    for state in [&loaded.state, &folded] {
        prop_assert_eq!(
            (state.is_captured(), state.is_refunded()),
            (captured.is_some(), refunded)
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(MEMORY_CASES))]

    #[test]
    fn payment_is_captured_once_and_refunded_at_most_once_in_memory(ops in payment_ops()) {
        run(payment_property(MemoryStore::new(), ops))?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(POSTGRES_CASES))]

    #[test]
    fn payment_is_captured_once_and_refunded_at_most_once_on_postgres(ops in payment_ops()) {
        run(async { payment_property(shared_store().await, ops).await })?;
    }
}

// ---------------------------------------------------------------------------------------
// Stored version-1 `OrderPlaced` payloads.

/// A stored `OrderPlaced` of version 1, as raw JSON (any lines, valid or not: history is
/// what it is), and the current event it must read as.
fn placed_v1() -> impl Strategy<Value = (serde_json::Value, OrderPlaced)> {
    let line = (text(), any::<u32>(), any::<u64>()).prop_map(|(sku, quantity, price)| Line {
        sku,
        quantity,
        unit_price_cents: price,
    });
    (text(), text(), prop::collection::vec(line, 0..4)).prop_map(
        |(order_id, customer_id, lines)| {
            let raw = json!({
                "order_id": order_id,
                "customer_id": customer_id,
                "lines": lines
                    .iter()
                    .map(|l| json!({
                        "sku": l.sku,
                        "quantity": l.quantity,
                        "unit_price_cents": l.unit_price_cents,
                    }))
                    .collect::<Vec<_>>(),
            });
            let current = OrderPlaced {
                order_id,
                customer_id,
                lines,
                currency: "EUR".into(),
                customer_name: None,
            };
            (raw, current)
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn stored_v1_order_placed_upcasts_to_the_current_type((raw, current) in placed_v1()) {
        let payload = Payload::encode(&raw).unwrap();
        let decoded = OrderEvent::decode("OrderPlaced", 1, &payload)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(decoded.into_iter().collect::<Vec<_>>(), vec![current.into()]);
    }
}

async fn v1_through_store<S: EventStore>(
    store: S,
    raw: serde_json::Value,
    current: OrderPlaced,
) -> Result<(), TestCaseError> {
    let id = fresh_id();
    let stream = StreamId::new(Order::CATEGORY, &id).unwrap();
    let old = NewEvent {
        event_id: uuid::Uuid::now_v7(),
        event_type: "OrderPlaced".into(),
        schema_version: 1,
        payload: Payload::encode(&raw).unwrap(),
        metadata: Metadata::new(),
    };
    store
        .append(&stream, ExpectedVersion::NoStream, &[old])
        .await
        .unwrap();
    let read: Vec<OrderEvent> = decoded(&stored(&store, &stream).await);
    prop_assert_eq!(read, vec![OrderEvent::from(current.clone())]);
    let loaded = Repository::<Order, _>::new(store).load(&id).await.unwrap();
    prop_assert_eq!(
        (
            loaded.state.status(),
            loaded.state.customer_id(),
            loaded.state.currency(),
            loaded.state.total_cents()
        ),
        (
            "placed",
            current.customer_id.as_str(),
            "EUR",
            total_cents(&current.lines)
        )
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(MEMORY_CASES))]

    #[test]
    fn stored_v1_order_placed_loads_through_the_memory_store((raw, current) in placed_v1()) {
        run(v1_through_store(MemoryStore::new(), raw, current))?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(POSTGRES_CASES))]

    #[test]
    fn stored_v1_order_placed_loads_through_postgres((raw, current) in placed_v1()) {
        run(async { v1_through_store(shared_store().await, raw, current).await })?;
    }
}
