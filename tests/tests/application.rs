//! An application without glue: commands routed by their `#[id]`, executed at an expected
//! version, dispatched by a router to the aggregate that accepts them (process managers
//! included, with typed rejections), and the built-in waits.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use factum::prelude::*;
use factum::process::{ManualClock, ProcessOptions};
use factum::projection::ProjectionOptions;
use factum::store::StreamRead;
use factum::{
    Application, ApplicationError, Effects, Error, MemoryCoordination, MemoryStore, Metadata,
    RecordedEvent, Rejection, Repository, Router, StreamId,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

// ANCHOR: domain
#[event]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Deposited {
    pub account: String,
    pub amount: u64,
}

#[event]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Withdrawn {
    pub account: String,
    pub amount: u64,
}

#[command]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DepositV1 {
    #[id]
    pub account: String,
    pub amount: u64,
}

#[command]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WithdrawV1 {
    #[id]
    pub account: String,
    pub amount: u64,
}

/// A command without `#[id]`: it must name its instance with `execute_on`.
#[command]
#[derive(Clone, Debug, PartialEq)]
pub struct AuditV1 {
    pub note: String,
}

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum AccountError {
    #[error("insufficient funds: balance {balance}, asked {asked}")]
    InsufficientFunds { balance: u64, asked: u64 },
}

#[aggregate(category = "account")]
#[derive(Debug, Default)]
pub struct Account {
    balance: u64,
}

#[aggregate]
impl Account {
    #[handle]
    fn deposit(&self, c: DepositV1) -> Result<Deposited, AccountError> {
        Ok(Deposited {
            account: c.account,
            amount: c.amount,
        })
    }

    #[handle]
    fn withdraw(&self, c: WithdrawV1) -> Result<Withdrawn, AccountError> {
        if c.amount > self.balance {
            return Err(AccountError::InsufficientFunds {
                balance: self.balance,
                asked: c.amount,
            });
        }
        Ok(Withdrawn {
            account: c.account,
            amount: c.amount,
        })
    }

    #[handle]
    fn audit(&self, _: AuditV1) -> Result<Vec<Deposited>, AccountError> {
        Ok(Vec::new())
    }

    #[apply]
    fn deposited(&mut self, e: &Deposited) {
        self.balance += e.amount;
    }

    #[apply]
    fn withdrawn(&mut self, e: &Withdrawn) {
        self.balance -= e.amount;
    }
}

#[event]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TransferRequested {
    pub transfer: String,
    pub from: String,
    pub to: String,
    pub amount: u64,
}

#[event]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TransferFailed {
    pub transfer: String,
    pub reason: String,
}

#[command]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestTransferV1 {
    #[id]
    pub transfer: String,
    pub from: String,
    pub to: String,
    pub amount: u64,
}

#[command]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailTransferV1 {
    #[id]
    pub transfer: String,
    pub reason: String,
}

#[aggregate(category = "transfer")]
#[derive(Debug, Default)]
pub struct Transfer {
    failed: bool,
}

#[aggregate]
impl Transfer {
    #[handle]
    fn request(&self, c: RequestTransferV1) -> Result<TransferRequested, std::convert::Infallible> {
        Ok(TransferRequested {
            transfer: c.transfer,
            from: c.from,
            to: c.to,
            amount: c.amount,
        })
    }

    #[handle]
    fn fail(&self, c: FailTransferV1) -> Result<TransferFailed, std::convert::Infallible> {
        Ok(TransferFailed {
            transfer: c.transfer,
            reason: c.reason,
        })
    }

    #[apply]
    fn requested(&mut self, _: &TransferRequested) {}

    #[apply]
    fn failed(&mut self, _: &TransferFailed) {
        self.failed = true;
    }
}

/// The commands the transfer process sends, to two aggregates.
#[command]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum TransferStep {
    Withdraw(WithdrawV1),
    Deposit(DepositV1),
    Fail(FailTransferV1),
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct TransferState {
    transfer: String,
    to: String,
    amount: u64,
}

#[derive(Debug)]
pub struct Transfers;

#[process_manager(name = "transfers")]
impl Transfers {
    #[start(by = transfer)]
    fn requested(&self, s: &mut TransferState, e: &TransferRequested) -> Effects<TransferStep> {
        s.transfer = e.transfer.clone();
        s.to = e.to.clone();
        s.amount = e.amount;
        Effects::none()
            .command(WithdrawV1 {
                account: e.from.clone(),
                amount: e.amount,
            })
            .schedule(
                "deposit",
                Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap(),
            )
    }

    #[stop(by = transfer)]
    fn failed(&self, _: &mut TransferState, _: &TransferFailed) {}

    #[on_timeout]
    fn due(&self, _: &str, s: &mut TransferState, _: &str) -> Effects<TransferStep> {
        Effects::none().command(DepositV1 {
            account: s.to.clone(),
            amount: s.amount,
        })
    }

    // ANCHOR: on_rejected
    #[on_rejected]
    fn rejected(
        &self,
        s: &mut TransferState,
        _: &TransferStep,
        error: &Rejection,
    ) -> Effects<TransferStep> {
        let reason = match error.downcast_ref::<AccountError>() {
            Some(AccountError::InsufficientFunds { balance, .. }) => {
                format!("insufficient funds ({balance} left)")
            }
            None => error.to_string(),
        };
        Effects::none()
            .command(FailTransferV1 {
                transfer: s.transfer.clone(),
                reason,
            })
            .cancel("deposit")
    }
    // ANCHOR_END: on_rejected
}

/// Balances by account, and the position it has handled.
#[derive(Debug, Default)]
pub struct Balances {
    balances: Mutex<BTreeMap<String, i64>>,
}

#[projection(name = "balances")]
impl Balances {
    async fn deposited(&self, e: &Deposited) {
        *self
            .balances
            .lock()
            .unwrap()
            .entry(e.account.clone())
            .or_default() += e.amount as i64;
    }

    async fn withdrawn(&self, e: &Withdrawn) {
        *self
            .balances
            .lock()
            .unwrap()
            .entry(e.account.clone())
            .or_default() -= e.amount as i64;
    }
}

impl Balances {
    fn of(&self, account: &str) -> Option<i64> {
        self.balances.lock().unwrap().get(account).copied()
    }
}
// ANCHOR_END: domain

fn deposit(account: &str, amount: u64) -> DepositV1 {
    DepositV1 {
        account: account.into(),
        amount,
    }
}

async fn events_of(store: &MemoryStore, stream: &str) -> usize {
    let (category, id) = stream.split_once('-').unwrap();
    store
        .read_stream(&StreamId::new(category, id).unwrap(), &StreamRead::all())
        .await
        .unwrap()
        .len()
}

#[tokio::test]
async fn execute_takes_the_instance_from_the_commands_id() {
    let store = MemoryStore::new();
    let accounts = Repository::<Account, _>::new(store.clone());
    let done = accounts
        .execute(deposit("bob", 5), Metadata::new())
        .await
        .unwrap();
    assert_eq!(done.stream_id.as_str(), "account-bob");
    assert_eq!(events_of(&store, "account-bob").await, 1);
    assert_eq!(events_of(&store, "account-alice").await, 0);
}

#[tokio::test]
async fn execute_on_refuses_a_command_whose_id_names_another_instance() {
    let store = MemoryStore::new();
    let accounts = Repository::<Account, _>::new(store.clone());
    let error = accounts
        .execute_on("alice", deposit("bob", 5), Metadata::new())
        .await
        .unwrap_err();
    match error {
        Error::WrongInstance {
            command,
            given,
            named,
        } => {
            assert_eq!(
                (command, given.as_str(), named.as_str()),
                ("Deposit", "alice", "bob")
            );
        }
        other => panic!("expected WrongInstance, got {other:?}"),
    }
    assert_eq!(events_of(&store, "account-alice").await, 0);
    assert_eq!(events_of(&store, "account-bob").await, 0);

    // A command without `#[id]` is executed on the instance named.
    let audited = accounts
        .execute_on("alice", AuditV1 { note: "ok".into() }, Metadata::new())
        .await
        .unwrap();
    assert_eq!(audited.stream_id.as_str(), "account-alice");
}

#[tokio::test]
async fn execute_expecting_a_version_answers_a_typed_mismatch_without_retrying() {
    let store = MemoryStore::new();
    let accounts = Repository::<Account, _>::new(store.clone());
    accounts
        .execute(deposit("a", 10), Metadata::new())
        .await
        .unwrap();

    let stale = accounts
        .execute_expecting(deposit("a", 1), 0, Metadata::new())
        .await
        .unwrap_err();
    match stale {
        Error::VersionMismatch {
            stream,
            expected,
            actual,
        } => assert_eq!((stream.as_str(), expected, actual), ("account-a", 0, 1)),
        other => panic!("expected VersionMismatch, got {other:?}"),
    }
    assert_eq!(events_of(&store, "account-a").await, 1);

    // At the right version it executes; a retry of the same request (same command id)
    // gets the first answer even though the stream has moved on since.
    let key = Metadata::new().command_id(Uuid::now_v7());
    let first = accounts
        .execute_expecting(deposit("a", 2), 1, key.clone())
        .await
        .unwrap();
    assert_eq!(first.version, 2);
    let again = accounts
        .execute_expecting(deposit("a", 2), 1, key)
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.version, 2);
    assert_eq!(events_of(&store, "account-a").await, 2);
}

#[tokio::test]
async fn a_router_dispatches_by_command_type_and_keeps_rejections_typed() {
    let store = MemoryStore::new();
    let router = Router::new()
        .aggregate(Repository::<Account, _>::new(store.clone()))
        .aggregate(Repository::<Transfer, _>::new(store.clone()));
    assert!(router.routes::<DepositV1>() && router.routes::<FailTransferV1>());

    let done = router
        .dispatch(deposit("c", 3), Metadata::new())
        .await
        .unwrap();
    assert_eq!(done.stream_id.as_str(), "account-c");
    assert_eq!(done.event_types, ["Deposited"]);
    assert!(done.position > 0);

    let refused = router
        .dispatch(
            WithdrawV1 {
                account: "c".into(),
                amount: 4,
            },
            Metadata::new(),
        )
        .await
        .unwrap_err();
    let Error::Rejected(rejection) = refused else {
        panic!("expected a rejection, got {refused:?}");
    };
    assert_eq!(
        rejection.downcast_ref::<AccountError>(),
        Some(&AccountError::InsufficientFunds {
            balance: 3,
            asked: 4
        })
    );

    let mismatch = router
        .dispatch_expecting(deposit("c", 1), 7, Metadata::new())
        .await
        .unwrap_err();
    assert!(
        matches!(
            mismatch,
            Error::VersionMismatch {
                expected: 7,
                actual: 1,
                ..
            }
        ),
        "{mismatch:?}"
    );

    let unrouted = Router::new()
        .aggregate(Repository::<Transfer, _>::new(store.clone()))
        .dispatch(deposit("c", 1), Metadata::new())
        .await
        .unwrap_err();
    assert!(
        matches!(
            unrouted,
            Error::NotRouted {
                command: "Deposit",
                version: 1
            }
        ),
        "{unrouted:?}"
    );
}

#[test]
#[should_panic(expected = "command `Deposit` (version 1) is accepted by two aggregates")]
fn a_command_type_routes_to_one_aggregate() {
    let store = MemoryStore::new();
    let _ = Router::new()
        .aggregate(Repository::<Account, _>::new(store.clone()))
        .aggregate(Repository::<Account, _>::new(store));
}

#[tokio::test]
async fn a_command_enum_converts_from_its_commands_and_dispatches_each() {
    let store = MemoryStore::new();
    let router = Router::new().aggregate(Repository::<Account, _>::new(store.clone()));
    let command = TransferStep::from(deposit("d", 9));
    assert_eq!(command, TransferStep::Deposit(deposit("d", 9)));
    let done = factum::Routable::dispatch_through(&command, &router, Metadata::new())
        .await
        .unwrap();
    assert_eq!(done.stream_id.as_str(), "account-d");
    let unrouted = factum::Routable::dispatch_through(
        &TransferStep::Fail(FailTransferV1 {
            transfer: "t".into(),
            reason: "r".into(),
        }),
        &router,
        Metadata::new(),
    )
    .await
    .unwrap_err();
    assert!(matches!(
        unrouted,
        Error::NotRouted {
            command: "FailTransfer",
            ..
        }
    ));
}

fn quick() -> ProjectionOptions {
    ProjectionOptions::new().poll_interval(Duration::from_millis(10))
}

fn start(
    store: &MemoryStore,
    clock: &ManualClock,
) -> (Application<MemoryStore>, std::sync::Arc<Balances>) {
    let balances = std::sync::Arc::new(Balances::default());
    let app = Application::builder(store.clone())
        .aggregate::<Account>()
        .aggregate::<Transfer>()
        .projection(std::sync::Arc::clone(&balances), quick())
        .process_manager(
            Transfers,
            ProcessOptions::new().poll_interval(Duration::from_millis(10)),
        )
        .clock(clock.clone())
        .start();
    (app, balances)
}

#[tokio::test]
async fn wait_for_gives_read_your_writes() {
    let store = MemoryStore::new();
    let (app, balances) = start(&store, &ManualClock::new(Utc::now()));
    let done = app
        .dispatch(deposit("e", 12), Metadata::new())
        .await
        .unwrap();
    app.wait_for("balances", done.position).await.unwrap();
    assert_eq!(balances.of("e"), Some(12));
    assert!(matches!(
        app.wait_for("nothing", 1).await,
        Err(ApplicationError::Unknown { name }) if name == "nothing"
    ));
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn settle_waits_for_process_commands_rejections_and_due_timeouts() {
    let store = MemoryStore::new();
    let clock = ManualClock::new(Utc.with_ymd_and_hms(2029, 12, 31, 0, 0, 0).unwrap());
    let (app, balances) = start(&store, &clock);
    app.dispatch(deposit("from", 10), Metadata::new())
        .await
        .unwrap();

    // The process withdraws: its command's event reaches the read model once settled.
    app.dispatch(
        RequestTransferV1 {
            transfer: "t-1".into(),
            from: "from".into(),
            to: "to".into(),
            amount: 4,
        },
        Metadata::new(),
    )
    .await
    .unwrap();
    app.settle().await.unwrap();
    assert_eq!(balances.of("from"), Some(6));
    assert_eq!(balances.of("to"), None);

    // The deposit waits for its timeout: moving the clock past it, settle waits until the
    // timeout fired and its command's event is in the read model.
    clock.advance(Duration::from_secs(2 * 24 * 3600));
    app.settle().await.unwrap();
    assert_eq!(balances.of("to"), Some(4));

    // A rejected withdrawal: the process matches the account's error and fails the
    // transfer, whose event is stored once settled.
    app.dispatch(
        RequestTransferV1 {
            transfer: "t-2".into(),
            from: "from".into(),
            to: "to".into(),
            amount: 100,
        },
        Metadata::new(),
    )
    .await
    .unwrap();
    app.settle().await.unwrap();
    let failed = store
        .read_stream(
            &StreamId::new("transfer", "t-2").unwrap(),
            &StreamRead::all(),
        )
        .await
        .unwrap();
    let reason = failed
        .iter()
        .find(|e| e.event_type == "TransferFailed")
        .map(|e: &RecordedEvent| e.payload.to_value().unwrap()["reason"].clone());
    assert_eq!(reason, Some("insufficient funds (6 left)".into()));
    assert!(app.health(Duration::from_secs(60)).is_healthy());
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_application_on_explicit_coordination_resumes_from_its_checkpoints() {
    let store = MemoryStore::new();
    let coordination = MemoryCoordination::new();
    let first = std::sync::Arc::new(Balances::default());
    let app = Application::builder(store.clone())
        .coordination(coordination.clone())
        .aggregate::<Account>()
        .projection(std::sync::Arc::clone(&first), quick())
        .start();
    app.dispatch(deposit("f", 1), Metadata::new())
        .await
        .unwrap();
    app.settle().await.unwrap();
    assert_eq!(first.of("f"), Some(1));
    app.shutdown().await.unwrap();

    // A second start on the same coordination resumes after the checkpoint: the new read
    // model sees only what came after.
    let second = std::sync::Arc::new(Balances::default());
    let app = Application::builder(store.clone())
        .coordination(coordination)
        .aggregate::<Account>()
        .projection(std::sync::Arc::clone(&second), quick())
        .start();
    let done = app
        .dispatch(deposit("g", 2), Metadata::new())
        .await
        .unwrap();
    app.wait_for("balances", done.position).await.unwrap();
    assert_eq!(second.of("g"), Some(2));
    assert_eq!(second.of("f"), None);
    app.shutdown().await.unwrap();
}
