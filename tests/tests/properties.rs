//! Property tests on the test domains' aggregates (the bank account, the versioned order and
//! the ledger), on the in-memory store and on PostgreSQL.
//!
//! For random command sequences executed through a [`Repository`]:
//! - each aggregate keeps its invariants: an account's balance never goes below zero (a
//!   withdrawal of more than the balance is refused, naming the balance); an order is placed
//!   once, first, and a shipped order is never cancelled; a ledger's every entry was decided
//!   on the total of the entries before it;
//! - folding the stored events gives the state the repository loads;
//! - for the snapshotted order, the state loaded as of every version (latest snapshot at or
//!   below it, plus the events after it) equals a full replay up to that version, and the
//!   state loaded as of each event's time equals the fold of the events recorded by then.
//!
//! And for stored payloads of older versions, generated at random: each upcasts to the
//! current type with the expected field mapping, read alone and through both stores; and
//! random JSON under every stored name and version decodes or fails with a typed error.
//!
//! Cases are few on PostgreSQL: each case runs on its own streams of one store per test.

#[path = "bank_account.rs"]
pub mod bank_account;
#[path = "order.rs"]
pub mod order;

use factum::store::{DecodeError, NewEvent, Payload, StreamRead};
use factum::{
    Aggregate, AsOf, EventSet, EventStore, ExpectedVersion, MemoryStore, Metadata, RecordedEvent,
    Repository, StreamId,
};
use factum_postgres::testing::{shared_runtime, shared_store};
use factum_tests::ledger::{Ledger, LedgerEvent, RecordV1};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{Value, json};

use bank_account::{Account, AccountError, AccountEvent, DepositV1, WithdrawV1};
use order::{
    AddLinesV1, CancelOrderV1, CheckoutOrder, ConfirmOrderV1, Line, LineAdded, Order, OrderError,
    OrderEvent, OrderPaid, OrderPlaced, PlaceOrderV2, ReshipOrderV1, ShipOrderV1,
};

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

/// A new aggregate id for one case.
fn fresh_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

async fn stored<S: EventStore>(store: &S, stream: &StreamId) -> Vec<RecordedEvent> {
    store
        .read_stream(stream, &StreamRead::all())
        .await
        .expect("read_stream")
}

/// The decoded events of `stored`, upcasts applied.
fn decoded<E: EventSet + std::fmt::Debug>(stored: &[RecordedEvent]) -> Vec<E> {
    stored
        .iter()
        .flat_map(|e| E::decode_recorded(e).expect("a stored event decodes"))
        .collect()
}

/// The state after applying `events` to the initial state.
fn fold<A: Aggregate>(events: &[A::Event]) -> A {
    let mut state = A::default();
    for event in events {
        state.apply(event);
    }
    state
}

// ---------------------------------------------------------------------------------------
// The bank account: the balance never goes below zero.

#[derive(Clone, Debug)]
enum AccountOp {
    Deposit(u64),
    Withdraw(u64),
}

fn account_ops() -> impl Strategy<Value = Vec<AccountOp>> {
    let op = prop_oneof![
        (0u64..1_000).prop_map(AccountOp::Deposit),
        (0u64..1_500).prop_map(AccountOp::Withdraw),
    ];
    prop::collection::vec(op, 1..30)
}

async fn account_property<S: EventStore>(
    store: S,
    ops: Vec<AccountOp>,
    cache: bool,
) -> Result<(), TestCaseError> {
    let accounts =
        Repository::<Account, _>::new(store.clone()).with_cache(if cache { 100 } else { 0 });
    let id = fresh_id();
    let mut balance: u64 = 0;
    let mut version = 0;
    for op in ops {
        match op {
            AccountOp::Deposit(amount) => {
                let command = DepositV1 {
                    account: id.clone(),
                    amount,
                };
                let done = accounts.execute(command, Metadata::new()).await.unwrap();
                balance += amount;
                version += 1;
                prop_assert_eq!(done.version, version);
            }
            AccountOp::Withdraw(amount) => {
                let command = WithdrawV1 {
                    account: id.clone(),
                    amount,
                };
                let result = accounts.execute(command, Metadata::new()).await;
                if amount == 0 {
                    let invalid = matches!(result, Err(factum::Error::InvalidCommand { .. }));
                    prop_assert!(invalid, "{result:?}");
                } else if amount > balance {
                    let refused = AccountError::InsufficientFunds {
                        balance,
                        asked: amount,
                    };
                    let error = result.unwrap_err();
                    prop_assert_eq!(error.rejection(), Some(&refused));
                } else {
                    let done = result.unwrap();
                    balance -= amount;
                    version += 1;
                    prop_assert_eq!(done.version, version);
                }
            }
        }
    }

    let stream = StreamId::new(Account::CATEGORY, &id).unwrap();
    let events = stored(&store, &stream).await;
    prop_assert_eq!(events.len() as u64, version);
    // The invariant on the stored history itself, in arithmetic that cannot wrap.
    let mut running: i128 = 0;
    for event in decoded::<AccountEvent>(&events) {
        match event {
            AccountEvent::Deposited(e) => running += i128::from(e.amount),
            AccountEvent::Withdrawn(e) => running -= i128::from(e.amount),
        }
        prop_assert!(running >= 0, "the balance went to {running}");
    }
    prop_assert_eq!(running, i128::from(balance));

    let loaded = accounts.load(&id).await.unwrap();
    let folded: Account = fold(&decoded::<AccountEvent>(&events));
    prop_assert_eq!(loaded.version, version);
    prop_assert_eq!(format!("{:?}", loaded.state), format!("{folded:?}"));
    prop_assert_eq!(
        format!("{folded:?}"),
        format!("Account {{ balance: {balance} }}")
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(MEMORY_CASES))]

    #[test]
    fn account_balance_never_negative_in_memory(ops in account_ops(), cache: bool) {
        run(account_property(MemoryStore::new(), ops, cache))?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(POSTGRES_CASES))]

    #[test]
    fn account_balance_never_negative_on_postgres(ops in account_ops(), cache: bool) {
        run(async { account_property(shared_store().await, ops, cache).await })?;
    }
}

// ---------------------------------------------------------------------------------------
// The order: placed once and first; a shipped order is never cancelled; snapshots.

#[derive(Clone, Debug)]
enum OrderOp {
    Place(String),
    AddLines(Vec<Line>),
    Checkout(u64),
    Ship,
    Cancel,
    Confirm,
    Reship,
}

fn text() -> impl Strategy<Value = String> {
    // Letters, digits, SQL metacharacters, non-ASCII and emoji.
    "[a-z0-9 '\";%_\\\\é€😀-]{0,12}"
}

fn lines() -> impl Strategy<Value = Vec<Line>> {
    prop::collection::vec(
        (text(), any::<u32>()).prop_map(|(sku, quantity)| Line { sku, quantity }),
        0..4,
    )
}

fn order_ops() -> impl Strategy<Value = Vec<OrderOp>> {
    let op = prop_oneof![
        2 => text().prop_map(OrderOp::Place),
        3 => lines().prop_map(OrderOp::AddLines),
        1 => (0u64..1_000_000).prop_map(OrderOp::Checkout),
        1 => Just(OrderOp::Ship),
        1 => Just(OrderOp::Cancel),
        1 => Just(OrderOp::Confirm),
        1 => Just(OrderOp::Reship),
    ];
    prop::collection::vec(op, 1..25)
}

/// What the model of an order expects of one command: how many events, or which refusal.
fn expect_order(model: &OrderModel, op: &OrderOp) -> Result<usize, OrderError> {
    if let OrderOp::Place(_) = op {
        return if model.placed {
            Err(OrderError::AlreadyPlaced)
        } else {
            Ok(1)
        };
    }
    if !model.placed {
        return Err(OrderError::NotPlaced);
    }
    Ok(match op {
        OrderOp::Place(_) => unreachable!(),
        OrderOp::AddLines(lines) => lines.len(),
        OrderOp::Checkout(_) => 2,
        OrderOp::Ship => usize::from(!model.shipped),
        OrderOp::Cancel if model.shipped => return Err(OrderError::AlreadyShipped),
        OrderOp::Cancel => 1,
        OrderOp::Confirm => 0,
        OrderOp::Reship => usize::from(model.shipped),
    })
}

#[derive(Debug, Default)]
struct OrderModel {
    placed: bool,
    shipped: bool,
    paid_cents: u64,
    version: u64,
    /// The version of the last snapshot the policy (every 2 events) asked for.
    snapshot: Option<u64>,
}

async fn order_property<S: EventStore>(
    store: S,
    ops: Vec<OrderOp>,
    cache: bool,
) -> Result<(), TestCaseError> {
    let orders = Repository::<Order, _>::new(store.clone()).with_cache(if cache { 100 } else { 0 });
    let id = fresh_id();
    let mut model = OrderModel::default();
    for op in ops {
        let expected = expect_order(&model, &op);
        let order_id = id.clone();
        let result = match op.clone() {
            OrderOp::Place(customer_id) => {
                let command = PlaceOrderV2 {
                    order_id,
                    customer_id,
                    channel: "app".into(),
                };
                orders.execute(command, Metadata::new()).await
            }
            OrderOp::AddLines(lines) => {
                let command = AddLinesV1 { order_id, lines };
                orders.execute(command, Metadata::new()).await
            }
            OrderOp::Checkout(cents) => {
                let command = CheckoutOrder(order_id, cents);
                orders.execute(command, Metadata::new()).await
            }
            OrderOp::Ship => {
                orders
                    .execute(ShipOrderV1 { order_id }, Metadata::new())
                    .await
            }
            OrderOp::Cancel => {
                let command = CancelOrderV1 {
                    order_id,
                    reason: "changed my mind".into(),
                };
                orders.execute(command, Metadata::new()).await
            }
            OrderOp::Confirm => {
                let command = ConfirmOrderV1 { order_id };
                orders.execute(command, Metadata::new()).await
            }
            OrderOp::Reship => {
                let command = ReshipOrderV1 { order_id };
                orders.execute(command, Metadata::new()).await
            }
        };
        match (expected, result) {
            (Ok(count), Ok(done)) => {
                prop_assert_eq!(done.events.len(), count, "{:?}", op);
                let before = model.version;
                model.version += count as u64;
                prop_assert_eq!(done.version, model.version);
                if before / 2 != model.version / 2 {
                    model.snapshot = Some(model.version);
                }
                match op {
                    OrderOp::Place(_) => model.placed = true,
                    OrderOp::Checkout(cents) => {
                        model.paid_cents += cents;
                        model.shipped = true;
                    }
                    OrderOp::Ship => model.shipped = true,
                    _ => {}
                }
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
    let placed = history
        .iter()
        .filter(|e| matches!(e, OrderEvent::OrderPlaced(_)))
        .count();
    prop_assert_eq!(placed, usize::from(model.placed));
    if model.placed {
        prop_assert!(matches!(history[0], OrderEvent::OrderPlaced(_)));
    }
    let shipped_at = history
        .iter()
        .position(|e| matches!(e, OrderEvent::OrderShipped(_)));
    if let Some(shipped_at) = shipped_at {
        let cancelled_after = history[shipped_at..]
            .iter()
            .any(|e| matches!(e, OrderEvent::OrderCancelled(_)));
        prop_assert!(!cancelled_after, "{history:?}");
    }
    let paid: u64 = history
        .iter()
        .map(|e| match e {
            OrderEvent::OrderPaid(p) => p.amount_cents,
            _ => 0,
        })
        .sum();
    prop_assert_eq!(paid, model.paid_cents);

    // The repository's state is the fold of the stored events.
    let loaded = orders.load(&id).await.unwrap();
    prop_assert_eq!(loaded.version, model.version);
    let folded: Order = fold(&history);
    prop_assert_eq!(state_json(&loaded.state), state_json(&folded));

    // Snapshots were taken where the policy says, and snapshot + tail equals a full replay
    // at every version.
    let snapshot = store.load_snapshot(&stream, 1, None).await.unwrap();
    prop_assert_eq!(snapshot.map(|s| s.version), model.snapshot);
    for version in 0..=model.version {
        let at = orders
            .load_as_of(&id, AsOf::Version(version))
            .await
            .unwrap();
        prop_assert_eq!(at.version, version);
        let prefix = &events[..usize::try_from(version).unwrap()];
        let replayed: Order = fold(&decoded::<OrderEvent>(prefix));
        prop_assert_eq!(
            state_json(&at.state),
            state_json(&replayed),
            "at {}",
            version
        );
    }
    // A temporal load as of each event's time is the fold of the events recorded by then.
    for event in &events {
        let by_then: Vec<RecordedEvent> = events
            .iter()
            .filter(|e| e.recorded_at <= event.recorded_at)
            .cloned()
            .collect();
        let at = orders.load_as_of(&id, event.recorded_at).await.unwrap();
        prop_assert_eq!(at.version, by_then.last().unwrap().stream_version);
        let replayed: Order = fold(&decoded::<OrderEvent>(&by_then));
        prop_assert_eq!(state_json(&at.state), state_json(&replayed));
    }
    Ok(())
}

fn state_json(order: &Order) -> Value {
    serde_json::to_value(order).expect("an order's state encodes")
}

// ANCHOR: order_properties
proptest! {
    #![proptest_config(ProptestConfig::with_cases(MEMORY_CASES))]

    #[test]
    fn order_invariants_and_snapshots_in_memory(ops in order_ops(), cache: bool) {
        run(order_property(MemoryStore::new(), ops, cache))?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(POSTGRES_CASES))]

    #[test]
    fn order_invariants_and_snapshots_on_postgres(ops in order_ops(), cache: bool) {
        run(async { order_property(shared_store().await, ops, cache).await })?;
    }
}
// ANCHOR_END: order_properties

// ---------------------------------------------------------------------------------------
// The ledger: every entry is decided on the total of the entries before it.

async fn ledger_property<S: EventStore>(store: S, amounts: Vec<u64>) -> Result<(), TestCaseError> {
    let ledgers = Repository::<Ledger, _>::new(store.clone());
    let id = fresh_id();
    for by in &amounts {
        let command = RecordV1 {
            ledger: id.clone(),
            by: *by,
        };
        ledgers.execute(command, Metadata::new()).await.unwrap();
    }
    let stream = StreamId::new(Ledger::CATEGORY, &id).unwrap();
    let history: Vec<LedgerEvent> = decoded(&stored(&store, &stream).await);
    prop_assert_eq!(history.len(), amounts.len());
    let mut total = 0;
    for (event, by) in history.iter().zip(&amounts) {
        let LedgerEvent::Recorded(recorded) = event;
        prop_assert_eq!((recorded.by, recorded.total_before), (*by, total));
        total += by;
    }
    let loaded = ledgers.load(&id).await.unwrap();
    prop_assert_eq!(loaded.state.total, total);
    prop_assert_eq!(fold::<Ledger>(&history).total, total);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(MEMORY_CASES))]

    #[test]
    fn ledger_entries_decided_on_the_current_total_in_memory(
        amounts in prop::collection::vec(0u64..1_000_000, 1..20)
    ) {
        run(ledger_property(MemoryStore::new(), amounts))?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(POSTGRES_CASES))]

    #[test]
    fn ledger_entries_decided_on_the_current_total_on_postgres(
        amounts in prop::collection::vec(0u64..1_000_000, 1..20)
    ) {
        run(async { ledger_property(shared_store().await, amounts).await })?;
    }
}

// ---------------------------------------------------------------------------------------
// Stored payloads of older versions.

/// One stored event of an older version, as raw JSON, with the current events it must read
/// as.
#[derive(Clone, Debug)]
struct Old {
    event_type: &'static str,
    version: u32,
    payload: Value,
    current: Vec<OrderEvent>,
}

fn placed_v1() -> impl Strategy<Value = Old> {
    (text(), text()).prop_map(|(order_id, customer_id)| Old {
        event_type: "OrderPlaced",
        version: 1,
        payload: json!({"order_id": order_id, "customer_id": customer_id}),
        current: vec![
            OrderPlaced {
                order_id,
                customer_id,
                currency: "EUR".into(),
                channel: "web".into(),
            }
            .into(),
        ],
    })
}

fn placed_v2() -> impl Strategy<Value = Old> {
    (text(), text(), "[A-Z]{3}").prop_map(|(order_id, customer_id, currency)| Old {
        event_type: "OrderPlaced",
        version: 2,
        payload: json!({"order_id": order_id, "customer_id": customer_id, "currency": currency}),
        current: vec![
            OrderPlaced {
                order_id,
                customer_id,
                currency,
                channel: "web".into(),
            }
            .into(),
        ],
    })
}

fn lines_v1() -> impl Strategy<Value = Old> {
    lines().prop_map(|lines| Old {
        event_type: "LinesAdded",
        version: 1,
        payload: json!({ "lines": lines }),
        current: lines
            .into_iter()
            .map(|line| LineAdded { line }.into())
            .collect(),
    })
}

/// Amounts up to `max_euros`: the whole range the upcaster accepts, or amounts small enough
/// for an order's total to hold their sum.
fn paid_v1(max_euros: u64) -> impl Strategy<Value = Old> {
    (0..=max_euros).prop_map(|euros| Old {
        event_type: "OrderPaid",
        version: 1,
        payload: json!({ "amount": euros }),
        current: vec![
            OrderPaid {
                amount_cents: euros * 100,
                method: "card".into(),
            }
            .into(),
        ],
    })
}

fn paid_v2(max_cents: u64) -> impl Strategy<Value = Old> {
    (0..=max_cents).prop_map(|cents| Old {
        event_type: "OrderPaid",
        version: 2,
        payload: json!({ "amount_cents": cents }),
        current: vec![
            OrderPaid {
                amount_cents: cents,
                method: "card".into(),
            }
            .into(),
        ],
    })
}

/// An older stored event; its amounts fit an order's total when `small`.
fn old_event(small: bool) -> impl Strategy<Value = Old> {
    let (euros, cents) = if small {
        (1_000_000_000, 100_000_000_000)
    } else {
        (u64::MAX / 100, u64::MAX)
    };
    prop_oneof![
        placed_v1(),
        placed_v2(),
        lines_v1(),
        paid_v1(euros),
        paid_v2(cents)
    ]
}

/// Random JSON, its object keys drawn mostly from the order's field names.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        text().prop_map(Value::from),
    ];
    let key = prop_oneof![
        prop::sample::select(vec![
            "order_id",
            "customer_id",
            "currency",
            "channel",
            "lines",
            "line",
            "sku",
            "quantity",
            "amount",
            "amount_cents",
            "method",
            "carrier",
            "reason",
        ])
        .prop_map(String::from),
        "[a-z]{1,3}",
    ];
    leaf.prop_recursive(3, 24, 4, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..5)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Every older stored version reads as the current type, with its fields mapped.
    #[test]
    fn stored_old_versions_upcast_to_the_current_type(old in old_event(false)) {
        let payload = Payload::encode(&old.payload).unwrap();
        let decoded = OrderEvent::decode(old.event_type, old.version, &payload)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(decoded.into_iter().collect::<Vec<_>>(), old.current);
    }

    /// An amount in euros too large for cents is refused by the upcaster, not wrapped.
    #[test]
    fn stored_amounts_too_large_for_cents_are_refused(euros in u64::MAX / 100 + 1..) {
        let payload = Payload::encode(&json!({ "amount": euros })).unwrap();
        match OrderEvent::decode("OrderPaid", 1, &payload) {
            Err(DecodeError::Upcast { event_type, version, .. }) => {
                prop_assert_eq!((event_type.as_str(), version), ("OrderPaid", 1));
            }
            other => {
                return Err(TestCaseError::fail(format!("expected an upcast error, got {other:?}")));
            }
        }
    }

    /// Random JSON under every stored name and version of the order's events decodes, and
    /// survives being stored again, or fails with a typed error naming the type and version.
    #[test]
    fn random_json_under_every_stored_version_decodes_or_is_refused(value in json_value()) {
        let text = serde_json::to_string(&value).unwrap();
        let outcome = factum_tests::fuzzing::upcast::<OrderEvent>(text.as_bytes());
        prop_assert_ne!(outcome, factum_tests::fuzzing::Outcome::Skipped);
    }
}

/// Appends `old` to the stream as an older version of the application wrote it, then loads
/// the order: its state is the fold of the current events each one upcasts to.
async fn upcast_through_store<S: EventStore>(
    store: S,
    olds: Vec<Old>,
) -> Result<(), TestCaseError> {
    let id = fresh_id();
    let stream = StreamId::new(Order::CATEGORY, &id).unwrap();
    let new: Vec<NewEvent> = olds
        .iter()
        .map(|old| NewEvent {
            event_id: uuid::Uuid::now_v7(),
            event_type: old.event_type.to_owned(),
            schema_version: old.version,
            payload: Payload::encode(&old.payload).unwrap(),
            metadata: Metadata::new(),
        })
        .collect();
    store
        .append(&stream, ExpectedVersion::NoStream, &new)
        .await
        .unwrap();
    let expected: Vec<OrderEvent> = olds.into_iter().flat_map(|old| old.current).collect();
    let orders = Repository::<Order, _>::new(store.clone());
    let loaded = orders.load(&id).await.unwrap();
    prop_assert_eq!(loaded.version, new.len() as u64);
    prop_assert_eq!(
        state_json(&loaded.state),
        state_json(&fold::<Order>(&expected))
    );
    let read: Vec<OrderEvent> = decoded(&stored(&store, &stream).await);
    prop_assert_eq!(read, expected);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(MEMORY_CASES))]

    #[test]
    fn stored_old_versions_load_through_the_memory_store(
        olds in prop::collection::vec(old_event(true), 1..8)
    ) {
        run(upcast_through_store(MemoryStore::new(), olds))?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(POSTGRES_CASES))]

    #[test]
    fn stored_old_versions_load_through_postgres(
        olds in prop::collection::vec(old_event(true), 1..8)
    ) {
        run(async { upcast_through_store(shared_store().await, olds).await })?;
    }
}
