//! A bank account written with the macros alone, driven through the repository and the
//! in-memory store, and through the test kit.

use factum::prelude::*;
use factum::{MemoryStore, Metadata, Repository, Speculation};
use serde::{Deserialize, Serialize};

// ANCHOR: events
/// Money came in.
#[event]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Deposited {
    pub amount: u64,
}

/// Money went out.
#[event(name = "Withdrawn", version = 1)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Withdrawn {
    pub amount: u64,
}
// ANCHOR_END: events

// ANCHOR: commands
/// Opens the account or adds money: name `Deposit`, version 1.
#[command]
#[derive(Clone, Debug)]
pub struct DepositV1 {
    #[id]
    pub account: String,
    pub amount: u64,
}

/// Takes money out, if there is enough; amounts of 0 are refused before loading.
#[command(validate = positive_withdrawal)]
#[derive(Clone, Debug)]
pub struct WithdrawV1 {
    #[id]
    pub account: String,
    pub amount: u64,
}

fn positive_withdrawal(command: &WithdrawV1) -> Result<(), String> {
    if command.amount == 0 {
        return Err("the amount must be positive".into());
    }
    Ok(())
}
// ANCHOR_END: commands

// ANCHOR: aggregate
/// Why the account refuses a command.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum AccountError {
    #[error("insufficient funds: balance {balance}, asked {asked}")]
    InsufficientFunds { balance: u64, asked: u64 },
}

/// The account's state.
#[aggregate(category = "account")]
#[derive(Debug, Default)]
pub struct Account {
    balance: u64,
}

#[aggregate]
impl Account {
    #[handle]
    fn deposit(&self, command: DepositV1) -> Result<Deposited, AccountError> {
        Ok(Deposited {
            amount: command.amount,
        })
    }

    #[handle]
    fn withdraw(&self, command: WithdrawV1) -> Result<Withdrawn, AccountError> {
        if command.amount > self.balance {
            return Err(AccountError::InsufficientFunds {
                balance: self.balance,
                asked: command.amount,
            });
        }
        Ok(Withdrawn {
            amount: command.amount,
        })
    }

    #[apply]
    fn deposited(&mut self, event: &Deposited) {
        self.balance += event.amount;
    }

    #[apply]
    fn withdrawn(&mut self, event: &Withdrawn) {
        self.balance -= event.amount;
    }
}
// ANCHOR_END: aggregate

#[test]
fn generated_names_and_versions() {
    assert_eq!(<DepositV1 as Command>::NAME, "Deposit");
    assert_eq!(<DepositV1 as Command>::VERSION, 1);
    assert_eq!(<Deposited as Event>::NAME, "Deposited");
    assert_eq!(<Deposited as Event>::VERSION, 1);
    assert_eq!(Account::CATEGORY, "account");
    assert_eq!(AccountEvent::EVENT_TYPES, ["Deposited", "Withdrawn"]);
    let command = AccountCommand::from(DepositV1 {
        account: "a-1".into(),
        amount: 5,
    });
    assert_eq!(command.aggregate_id(), Some("a-1"));
    assert_eq!(command.command_name(), "Deposit");
}

// ANCHOR: test_kit
#[test]
fn withdrawing_more_than_the_balance_is_refused() {
    Account::given([Deposited { amount: 10 }])
        .when(WithdrawV1 {
            account: "a-1".into(),
            amount: 11,
        })
        .then_error(AccountError::InsufficientFunds {
            balance: 10,
            asked: 11,
        });

    let state = Account::given([Deposited { amount: 10 }])
        .when(WithdrawV1 {
            account: "a-1".into(),
            amount: 4,
        })
        .then_events([Withdrawn { amount: 4 }]);
    assert_eq!(state.balance, 6);
}
// ANCHOR_END: test_kit

// ANCHOR: repository
#[tokio::test]
async fn deposits_and_withdrawals_through_the_repository() {
    let accounts = Repository::<Account, _>::new(MemoryStore::new());
    let deposit = DepositV1 {
        account: "a-1".into(),
        amount: 100,
    };
    accounts.execute(deposit, Metadata::new()).await.unwrap();
    let withdraw = WithdrawV1 {
        account: "a-1".into(),
        amount: 30,
    };
    let executed = accounts.execute(withdraw, Metadata::new()).await.unwrap();
    assert_eq!(
        executed.events,
        [AccountEvent::from(Withdrawn { amount: 30 })]
    );
    assert_eq!(executed.version, 2);

    let loaded = accounts.load("a-1").await.unwrap();
    assert_eq!(loaded.state.balance, 70);
    assert_eq!(loaded.version, 2);
}
// ANCHOR_END: repository

#[tokio::test]
async fn rejections_and_invalid_commands_are_typed_errors() {
    let accounts = Repository::<Account, _>::new(MemoryStore::new());
    let too_much = WithdrawV1 {
        account: "a-2".into(),
        amount: 1,
    };
    let error = accounts
        .execute(too_much, Metadata::new())
        .await
        .unwrap_err();
    assert_eq!(
        error.rejection(),
        Some(&AccountError::InsufficientFunds {
            balance: 0,
            asked: 1
        })
    );

    let zero = WithdrawV1 {
        account: "a-2".into(),
        amount: 0,
    };
    match accounts.execute(zero, Metadata::new()).await {
        Err(factum::Error::InvalidCommand { command, message }) => {
            assert_eq!(command, "Withdraw");
            assert_eq!(message, "the amount must be positive");
        }
        other => panic!("expected an invalid command, got {other:?}"),
    }
    assert!(accounts.store().is_empty());
}

#[tokio::test]
async fn the_cache_holds_the_accounts_that_received_commands() {
    let store = MemoryStore::new();
    // ANCHOR: cache
    let accounts = Repository::<Account, _>::new(store.clone())
        // Keep up to 10,000 accounts between commands (0 turns the cache off).
        .with_cache(10_000)
        // Decide commands on uncached accounts on the initial state first, while that pays.
        .with_speculation(Speculation::Adaptive);
    // ANCHOR_END: cache
    for account in ["a-1", "a-2", "a-3"] {
        let deposit = DepositV1 {
            account: account.into(),
            amount: 10,
        };
        accounts.execute(deposit, Metadata::new()).await.unwrap();
    }
    assert_eq!(accounts.cached(), 3);

    let uncached = Repository::<Account, _>::new(store).with_cache(0);
    let deposit = DepositV1 {
        account: "a-1".into(),
        amount: 5,
    };
    let executed = uncached.execute(deposit, Metadata::new()).await.unwrap();
    assert_eq!((executed.version, uncached.cached()), (2, 0));
    assert_eq!(accounts.load("a-1").await.unwrap().state.balance, 15);
}

#[tokio::test]
async fn commands_decided_again_are_counted_by_reason() {
    let capture = factum_tests::counters::Capture::default();
    let values = std::sync::Arc::clone(&capture.0);
    let _guard = metrics::set_default_local_recorder(&capture);
    let store = MemoryStore::new();
    let a = Repository::<Account, _>::new(store.clone());
    let b = Repository::<Account, _>::new(store.clone());
    let deposit = |amount| DepositV1 {
        account: "a-1".into(),
        amount,
    };
    a.execute(deposit(10), Metadata::new()).await.unwrap();
    // `b` has not seen the account: a deposit on the initial state is accepted, and its
    // append as the stream's first event fails.
    b.execute(deposit(5), Metadata::new()).await.unwrap();
    // `a` decides on its cached state at version 1; the stream is at 2.
    let done = a.execute(deposit(1), Metadata::new()).await.unwrap();
    assert_eq!(done.version, 3);
    assert_eq!(a.load("a-1").await.unwrap().state.balance, 16);
    let values = values.lock().unwrap();
    let counted = |reason: &str| {
        values
            .get(&format!(
                "factum_commands_redecided_total{{category=account,reason={reason}}}"
            ))
            .copied()
    };
    assert_eq!(
        (
            counted("speculation"),
            counted("stale_cache"),
            counted("conflict")
        ),
        (Some(1), Some(1), None)
    );
}
