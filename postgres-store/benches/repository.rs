//! Benchmarks of what applications run: `Repository::execute` and `Repository::load` on
//! PostgreSQL, each beside the raw SQL a hand-written application would run on the same
//! schema, in the same run.
//!
//! `cargo bench -p factum-postgres --features testing --bench repository` (uses
//! `DATABASE_URL`, or a throwaway cluster); `BENCH_ONLY=create,command,hot,speculation,load`
//! picks cases.

#![allow(missing_docs, clippy::unwrap_used, reason = "benchmark program")]

mod common;

use std::alloc::System;
use std::future::Future;
use std::time::Duration;

use common::{
    Side, Stop, baseline_store, describe_server, print_header, rate, report, report_cpu, sql,
    throughput, timed, wanted_cases,
};
use factum::__private::Routed;
use factum::prelude::*;
use factum::store::{NewEvent, Payload, Snapshot, StreamRead};
use factum::{ExpectedVersion, Metadata, Repository, SnapshotPolicy, Speculation, StreamId};
use factum_postgres::testing::fresh_store_with;
use factum_postgres::{PgConfig, PgStore};
use peakmem_alloc::{INSTRUMENTED_SYSTEM, PeakMemAlloc, PeakMemAllocTrait};
use serde::{Deserialize, Serialize};
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Json;
use uuid::Uuid;

/// Counts the bytes allocated since its last reset, and their peak, for the memory of a
/// load (`unsafe_code` is forbidden in the workspace, so the allocator comes from a crate).
#[global_allocator]
static ALLOCATOR: &PeakMemAlloc<System> = &INSTRUMENTED_SYSTEM;

/// How long each time-bounded run lasts.
const RUN: Duration = Duration::from_millis(500);
/// Runs per case and side, alternating sides; the medians are reported.
const ROUNDS: usize = 7;
/// Connections on each side.
const POOL: usize = 10;
/// Aggregates that receive commands in one run of the commands case, over all its tasks.
const COMMAND_AGGREGATES: u64 = 512;
const LOAD_EVENTS: u64 = 10_000;
const SNAPSHOT_AT: u64 = 9_900;

// --- The aggregates --------------------------------------------------------------------

/// An account was opened.
#[event]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct AccountOpened {
    owner: String,
}

/// Money came in.
#[event]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Deposited {
    amount: u64,
}

/// Opens an account; refused when it is open already.
#[command]
#[derive(Clone, Debug)]
struct OpenAccount {
    #[id]
    account: String,
    owner: String,
}

/// Adds money to an open account.
#[command]
#[derive(Clone, Debug)]
struct Deposit {
    #[id]
    account: String,
    amount: u64,
}

#[derive(Debug, thiserror::Error)]
enum AccountError {
    #[error("the account is open already")]
    AlreadyOpen,
    #[error("the account is not open")]
    NotOpen,
}

#[aggregate(category = "account")]
#[derive(Debug, Default, Serialize, Deserialize)]
struct Account {
    open: bool,
    balance: u64,
    deposits: u64,
}

#[aggregate]
impl Account {
    #[handle]
    fn open_account(&self, command: OpenAccount) -> Result<AccountOpened, AccountError> {
        if self.open {
            return Err(AccountError::AlreadyOpen);
        }
        Ok(AccountOpened {
            owner: command.owner,
        })
    }

    #[handle]
    fn deposit(&self, command: Deposit) -> Result<Deposited, AccountError> {
        if !self.open {
            return Err(AccountError::NotOpen);
        }
        Ok(Deposited {
            amount: command.amount,
        })
    }

    #[apply]
    fn opened(&mut self, _: &AccountOpened) {
        self.open = true;
    }

    #[apply]
    fn deposited(&mut self, event: &Deposited) {
        self.balance += event.amount;
        self.deposits += 1;
    }
}

/// The account with a snapshot every 1,000 events, for the load from a snapshot.
#[derive(Debug, Default)]
struct SnapshotAccount(Account);

impl Aggregate for SnapshotAccount {
    const CATEGORY: &'static str = Account::CATEGORY;
    const SNAPSHOT: SnapshotPolicy = SnapshotPolicy::Every(1_000);
    type Event = AccountEvent;
    type Command = AccountCommand;
    type Error = AccountError;

    fn handle(&self, command: AccountCommand) -> Result<Vec<AccountEvent>, AccountError> {
        self.0.handle(command)
    }

    fn apply(&mut self, event: &AccountEvent) {
        self.0.apply(event);
    }

    fn encode_state(&self) -> Option<Result<Payload, serde_json::Error>> {
        Some(Payload::encode(&self.0))
    }

    fn decode_state(state: &Payload) -> Option<Result<Self, serde_json::Error>> {
        Some(state.decode().map(Self))
    }
}

/// Something counted.
#[event]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Counted {
    by: u64,
}

/// Counts one more: accepted on any state, the initial one included, so that a speculative
/// append on an existing tally is always wasted.
#[command]
#[derive(Clone, Debug)]
struct Count {
    #[id]
    tally: String,
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

#[aggregate(category = "tally")]
#[derive(Debug, Default)]
struct Tally {
    count: u64,
}

#[aggregate]
impl Tally {
    #[handle]
    fn count(&self, _: Count) -> Result<Counted, Never> {
        Ok(Counted { by: 1 })
    }

    #[apply]
    fn counted(&mut self, event: &Counted) {
        self.count += event.by;
    }
}

// --- The raw side ----------------------------------------------------------------------

/// What a hand-written application does with its aggregate: fold the rows of
/// `sql/baseline_load.sql` (version, type, schema version, payload) with `serde`, and decide
/// the one event a command appends.
trait RawAggregate: Default {
    /// Applies one row.
    fn apply_row(&mut self, row: &Row);

    /// The command's event on this state: its type and payload text.
    fn decide(&self) -> (&'static str, String);
}

impl RawAggregate for Account {
    fn apply_row(&mut self, row: &Row) {
        let (event_type, schema_version): (&str, i32) = (row.get(1), row.get(2));
        assert_eq!(schema_version, 1);
        match event_type {
            AccountOpened::NAME => self.opened(&row.get::<_, Json<AccountOpened>>(3).0),
            Deposited::NAME => self.deposited(&row.get::<_, Json<Deposited>>(3).0),
            other => panic!("unknown event type {other}"),
        }
    }

    fn decide(&self) -> (&'static str, String) {
        let deposit = Deposit {
            account: String::new(),
            amount: 1,
        };
        let event = self.deposit(deposit).unwrap();
        (Deposited::NAME, serde_json::to_string(&event).unwrap())
    }
}

impl RawAggregate for Tally {
    fn apply_row(&mut self, row: &Row) {
        let (event_type, schema_version): (&str, i32) = (row.get(1), row.get(2));
        assert!(event_type == Counted::NAME && schema_version == 1);
        self.counted(&row.get::<_, Json<Counted>>(3).0);
    }

    fn decide(&self) -> (&'static str, String) {
        let event = self.count(Count {
            tally: String::new(),
        });
        (
            Counted::NAME,
            serde_json::to_string(&event.unwrap()).unwrap(),
        )
    }
}

/// The raw side's connections and statements.
#[derive(Clone)]
struct Raw {
    base: PgStore,
    insert: String,
    load: String,
}

impl Raw {
    fn new(base: &PgStore) -> Self {
        Self {
            base: base.clone(),
            insert: sql(include_str!("sql/baseline_insert.sql"), base),
            load: sql(include_str!("sql/baseline_load.sql"), base),
        }
    }

    /// The metadata text of one command's event: what the repository writes (an actor and
    /// the command as cause).
    fn metadata() -> String {
        serde_json::to_string(&Metadata::new().actor("bench").caused_by(Uuid::now_v7())).unwrap()
    }

    /// A blind single-row `INSERT` of an account's first event.
    async fn create(&self, stream: &str) {
        let client = self.base.pool().get().await.unwrap();
        let insert = client.prepare_cached(&self.insert).await.unwrap();
        let payload = serde_json::to_string(&AccountOpened {
            owner: "bench".into(),
        })
        .unwrap();
        let metadata = Self::metadata();
        client
            .execute(
                &insert,
                &[
                    &Uuid::now_v7(),
                    &stream,
                    &1i64,
                    &AccountOpened::NAME,
                    &1i32,
                    &payload,
                    &metadata,
                ],
            )
            .await
            .unwrap();
    }

    /// A command on an existing aggregate in one transaction: `SELECT` its events, decode and
    /// fold them, decide, `INSERT` the event at the next version, `COMMIT`. A unique
    /// violation (another writer took that version) rolls back and runs it again.
    async fn command<A: RawAggregate>(&self, stream: &str) {
        let mut client = self.base.pool().get().await.unwrap();
        let load = client.prepare_cached(&self.load).await.unwrap();
        let insert = client.prepare_cached(&self.insert).await.unwrap();
        loop {
            let tx = client.transaction().await.unwrap();
            let mut state = A::default();
            let mut version = 0i64;
            for row in tx.query(&load, &[&stream, &0i64]).await.unwrap() {
                version = row.get(0);
                state.apply_row(&row);
            }
            let (event_type, payload) = state.decide();
            let metadata = Self::metadata();
            let next = version + 1;
            let inserted = tx
                .execute(
                    &insert,
                    &[
                        &Uuid::now_v7(),
                        &stream,
                        &next,
                        &event_type,
                        &1i32,
                        &payload,
                        &metadata,
                    ],
                )
                .await;
            match inserted {
                Ok(_) => return tx.commit().await.unwrap(),
                Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => continue,
                Err(e) => panic!("raw command on {stream}: {e}"),
            }
        }
    }

    /// The rows of `stream`'s events, without decoding them.
    async fn rows(&self, stream: &str) -> u64 {
        let client = self.base.pool().get().await.unwrap();
        let statement = client.prepare_cached(&self.load).await.unwrap();
        let rows = client.query(&statement, &[&stream, &0i64]).await.unwrap();
        rows.len() as u64
    }

    /// The state and version of `stream` from the snapshot row (when `snapshot_sql` is given)
    /// and the events after it.
    async fn load(&self, stream: &str, snapshot_sql: Option<&str>) -> (Account, i64) {
        let client = self.base.pool().get().await.unwrap();
        let (mut state, mut version) = (Account::default(), 0i64);
        if let Some(snapshot_sql) = snapshot_sql {
            let statement = client.prepare_cached(snapshot_sql).await.unwrap();
            let row = client
                .query_one(&statement, &[&stream, &1i32])
                .await
                .unwrap();
            version = row.get(0);
            state = row.get::<_, Json<Account>>(1).0;
        }
        let statement = client.prepare_cached(&self.load).await.unwrap();
        for row in client
            .query(&statement, &[&stream, &version])
            .await
            .unwrap()
        {
            version = row.get(0);
            state.apply_row(&row);
        }
        (state, version)
    }
}

// --- Helpers ---------------------------------------------------------------------------

fn metadata() -> Metadata {
    Metadata::new().actor("bench")
}

fn deposit(account: String) -> Deposit {
    Deposit { account, amount: 1 }
}

fn new_event<E: Event + Serialize>(event: &E) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: E::NAME.into(),
        schema_version: E::VERSION,
        payload: Payload::encode(event).unwrap(),
        metadata: metadata(),
    }
}

/// Appends `events` events to each of the streams `{category}-{id}`, as the raw side and
/// the repository would have written them: an `AccountOpened` (accounts) and deposits, or
/// counts (tallies).
async fn seed(store: &PgStore, category: &'static str, ids: Vec<String>, events: u64) {
    let history = move || -> Vec<NewEvent> {
        (0..events)
            .map(|i| match (category, i) {
                ("account", 0) => new_event(&AccountOpened {
                    owner: "bench".into(),
                }),
                ("account", _) => new_event(&Deposited { amount: 1 }),
                _ => new_event(&Counted { by: 1 }),
            })
            .collect()
    };
    let ids = std::sync::Arc::new(ids);
    let tasks: Vec<_> = (0..4)
        .map(|t| {
            let (store, ids) = (store.clone(), ids.clone());
            tokio::spawn(async move {
                for id in ids.iter().skip(t).step_by(4) {
                    let stream = StreamId::new(category, id).unwrap();
                    for (chunk, events) in history().chunks(1000).enumerate() {
                        let at = ExpectedVersion::Exact(chunk as u64 * 1000);
                        store.append(&stream, at, events).await.unwrap();
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

/// A run of `tasks` tasks until `stop`, each executing through `repo` the commands that
/// `command(task, i)` makes; returns commands per second.
fn executing<A, C, F>(
    repo: &Repository<A, PgStore>,
    tasks: u64,
    stop: Stop,
    command: F,
) -> impl Future<Output = f64> + use<A, C, F>
where
    A: Aggregate + Send + Sync + 'static,
    A::Command: Send + Sync,
    A::Event: Send + Sync,
    C: Routed + Into<A::Command> + Send + 'static,
    F: Fn(u64, u64) -> C + Send + Sync + 'static,
{
    let repo = repo.clone();
    timed(tasks, stop, move |task, i| {
        let (repo, command) = (repo.clone(), command(task, i));
        async move {
            repo.execute(command, metadata()).await.unwrap();
        }
    })
}

/// The ids of the aggregates task `task` of `tasks` sends commands to, `per_task` of them.
fn set(prefix: &str, task: u64, per_task: u64) -> Vec<String> {
    (0..per_task)
        .map(|k| format!("{prefix}-{task}-{k}"))
        .collect()
}

/// The ids of all the aggregates of a set, over its tasks.
fn all(prefix: &str, tasks: u64, per_task: u64) -> Vec<String> {
    (0..tasks).flat_map(|t| set(prefix, t, per_task)).collect()
}

// --- Cases -----------------------------------------------------------------------------

/// Commands creating an account on distinct ids, beside blind `INSERT`s.
/// `warm_up`: an untimed run on ids of its own.
async fn creates(store: &PgStore, raw: &Raw, tasks: u64, rounds: usize, warm_up: bool) {
    let tag = if warm_up { "w" } else { "" };
    let speculating = Repository::<Account, _>::new(store.clone());
    let loading = Repository::<Account, _>::new(store.clone()).with_speculation(Speculation::Never);
    let (mut raw_runs, mut spec_runs, mut load_runs) = <(Side, Side, Side)>::default();
    let mut store_runs = Side::default();
    for r in 0..rounds {
        let raw = raw.clone();
        raw_runs
            .measure(throughput(tasks, RUN, move |task, i| {
                let raw = raw.clone();
                async move {
                    raw.create(&format!("account-{tag}r{r}-{tasks}-{task}-{i}"))
                        .await
                }
            }))
            .await;
        for (repo, side, runs) in [
            (&speculating, "s", &mut spec_runs),
            (&loading, "n", &mut load_runs),
        ] {
            let open = move |task, i| OpenAccount {
                account: format!("{tag}{side}{r}-{tasks}-{task}-{i}"),
                owner: "bench".into(),
            };
            runs.measure(executing(repo, tasks, Stop::After(RUN), open))
                .await;
        }
        let store = store.clone();
        store_runs
            .measure(throughput(tasks, RUN, move |task, i| {
                let store = store.clone();
                let stream = format!("{tag}a{r}-{tasks}-{task}-{i}");
                async move {
                    let stream = StreamId::new("account", &stream).unwrap();
                    let opened = new_event(&AccountOpened {
                        owner: "bench".into(),
                    });
                    let at = ExpectedVersion::NoStream;
                    store.append(&stream, at, &[opened]).await.unwrap();
                }
            }))
            .await;
    }
    if !warm_up {
        let case = format!("create, {tasks} tasks");
        report(&case, "cmds/s", &spec_runs.runs, &raw_runs.runs, Some(0.8));
        report_cpu(&spec_runs, &raw_runs);
        let case = format!("create, {tasks} tasks, Speculation::Never");
        report(&case, "cmds/s", &load_runs.runs, &raw_runs.runs, None);
        report_cpu(&load_runs, &raw_runs);
        let case = format!("  {tasks} tasks, PgStore::append alone");
        report(&case, "appends/s", &store_runs.runs, &raw_runs.runs, None);
        report_cpu(&store_runs, &raw_runs);
    }
}

/// One `Deposit` on each aggregate of a task's set per run, on aggregates of `events`
/// events: the repository without and with its cache, beside the raw transaction.
async fn commands(store: &PgStore, raw: &Raw, events: u64, tasks: u64) {
    let per_task = COMMAND_AGGREGATES / tasks;
    let prefix = |side: &str| format!("c{events}{side}{tasks}");
    for (target, side) in [(store, "f"), (store, "c"), (&raw.base, "r")] {
        seed(
            target,
            "account",
            all(&prefix(side), tasks, per_task),
            events,
        )
        .await;
    }
    let cold = Repository::<Account, _>::new(store.clone()).with_cache(0);
    let cached = Repository::<Account, _>::new(store.clone());
    let on_sets = |repo: &Repository<Account, PgStore>, side: &str| {
        let prefix = prefix(side);
        executing(repo, tasks, Stop::Ops(per_task), move |task, i| {
            deposit(format!("{prefix}-{task}-{i}"))
        })
    };
    // Warms the cache: one command on each aggregate.
    on_sets(&cached, "c").await;
    let filled = cached.cached();
    let (mut raw_runs, mut cold_runs, mut cached_runs) = <(Side, Side, Side)>::default();
    for _ in 0..ROUNDS {
        let (raw, prefix) = (raw.clone(), prefix("r"));
        raw_runs
            .measure(timed(tasks, Stop::Ops(per_task), move |task, i| {
                let (raw, prefix) = (raw.clone(), prefix.clone());
                async move {
                    raw.command::<Account>(&format!("account-{prefix}-{task}-{i}"))
                        .await
                }
            }))
            .await;
        cold_runs.measure(on_sets(&cold, "f")).await;
        cached_runs.measure(on_sets(&cached, "c")).await;
    }
    let case = format!("command, {events}-event aggregates, {tasks} tasks");
    report(
        &format!("{case}, cold"),
        "cmds/s",
        &cold_runs.runs,
        &raw_runs.runs,
        Some(0.9),
    );
    report_cpu(&cold_runs, &raw_runs);
    report(
        &format!("{case}, cached"),
        "cmds/s",
        &cached_runs.runs,
        &raw_runs.runs,
        Some(1.0),
    );
    report_cpu(&cached_runs, &raw_runs);
    if filled < COMMAND_AGGREGATES as usize {
        println!(
            "{:<44} (the cache held {filled} of {COMMAND_AGGREGATES})",
            ""
        );
    }
}

/// 8 tasks sending `Deposit`s to `aggregates` aggregates (task `t` to aggregate
/// `t % aggregates`) for a run, on fresh aggregates each run.
async fn hot(store: &PgStore, raw: &Raw, aggregates: u64) {
    const TASKS: u64 = 8;
    // Commands on a shared aggregate lose append races: retried until they land, as the raw
    // side's are.
    let cold = Repository::<Account, _>::new(store.clone())
        .with_cache(0)
        .with_conflict_retries(1_000);
    let cached = Repository::<Account, _>::new(store.clone()).with_conflict_retries(1_000);
    let (mut raw_runs, mut cold_runs, mut cached_runs) = (vec![], vec![], vec![]);
    for r in 0..ROUNDS {
        let ids = |side: &str| -> Vec<String> {
            (0..aggregates)
                .map(|k| format!("h{aggregates}{side}{r}-{k}"))
                .collect()
        };
        seed(&raw.base, "account", ids("r"), 1).await;
        seed(store, "account", ids("f"), 1).await;
        seed(store, "account", ids("c"), 1).await;
        let raw = raw.clone();
        raw_runs.push(
            throughput(TASKS, RUN, move |task, _| {
                let raw = raw.clone();
                let stream = format!("account-h{aggregates}r{r}-{}", task % aggregates);
                async move { raw.command::<Account>(&stream).await }
            })
            .await,
        );
        for (repo, side, runs) in [
            (&cold, "f", &mut cold_runs),
            (&cached, "c", &mut cached_runs),
        ] {
            let command =
                move |task, _| deposit(format!("h{aggregates}{side}{r}-{}", task % aggregates));
            runs.push(executing(repo, TASKS, Stop::After(RUN), command).await);
        }
    }
    let case = format!("hot: 8 tasks on {aggregates} aggregate(s)");
    report(
        &format!("{case}, cold"),
        "cmds/s",
        &cold_runs,
        &raw_runs,
        None,
    );
    report(
        &format!("{case}, cached"),
        "cmds/s",
        &cached_runs,
        &raw_runs,
        None,
    );
}

/// `Count` on existing tallies of 10 events, the cache off, so that every speculative append
/// conflicts: each speculation mode beside the raw transaction. A fresh repository each run,
/// so that adaptive speculation starts speculating and must learn to stop.
async fn speculation(store: &PgStore, raw: &Raw) {
    const TASKS: u64 = 8;
    let per_task = COMMAND_AGGREGATES / TASKS;
    let modes = [
        (Speculation::Always, "a"),
        (Speculation::Adaptive, "d"),
        (Speculation::Never, "n"),
    ];
    seed(&raw.base, "tally", all("sr", TASKS, per_task), 10).await;
    for (_, side) in modes {
        seed(
            store,
            "tally",
            all(&format!("s{side}"), TASKS, per_task),
            10,
        )
        .await;
    }
    let mut raw_runs = vec![];
    let mut mode_runs = vec![vec![]; modes.len()];
    for _ in 0..ROUNDS {
        let raw = raw.clone();
        raw_runs.push(
            timed(TASKS, Stop::Ops(per_task), move |task, i| {
                let raw = raw.clone();
                async move { raw.command::<Tally>(&format!("tally-sr-{task}-{i}")).await }
            })
            .await,
        );
        for (&(mode, side), runs) in modes.iter().zip(&mut mode_runs) {
            let repo = Repository::<Tally, _>::new(store.clone())
                .with_cache(0)
                .with_speculation(mode);
            let count = move |task, i| Count {
                tally: format!("s{side}-{task}-{i}"),
            };
            runs.push(executing(&repo, TASKS, Stop::Ops(per_task), count).await);
        }
    }
    for ((mode, _), runs) in modes.iter().zip(&mode_runs) {
        let case = format!("command on existing, Speculation::{mode:?}");
        report(&case, "cmds/s", runs, &raw_runs, None);
    }
}

/// Loads of a 10,000-event account, without and with a snapshot at 9,900, and the peak
/// memory of one load.
async fn loads(store: &PgStore) {
    seed(store, "account", vec!["big".into()], LOAD_EVENTS).await;
    let stream = StreamId::new("account", "big").unwrap();
    let at_snapshot = Account {
        open: true,
        balance: SNAPSHOT_AT - 1,
        deposits: SNAPSHOT_AT - 1,
    };
    store
        .save_snapshot(&Snapshot {
            stream_id: stream.clone(),
            version: SNAPSHOT_AT,
            schema_version: SnapshotAccount::STATE_VERSION,
            state: Payload::encode(&at_snapshot).unwrap(),
            taken_at: chrono::Utc::now(),
        })
        .await
        .unwrap();
    let raw = Raw::new(store);
    let snapshot_sql = sql(include_str!("sql/baseline_snapshot.sql"), store);
    let replaying = Repository::<Account, _>::new(store.clone());
    let snapshotted = Repository::<SnapshotAccount, _>::new(store.clone());
    let check = |state: &Account, version: u64| {
        assert_eq!((state.deposits + 1, version), (LOAD_EVENTS, LOAD_EVENTS));
    };
    let raw_load = |snapshot: bool| {
        let (raw, snapshot_sql) = (raw.clone(), snapshot_sql.clone());
        async move {
            let snapshot_sql = snapshot.then_some(snapshot_sql.as_str());
            let (state, version) = raw.load("account-big", snapshot_sql).await;
            check(&state, version as u64);
        }
    };
    let factum_load = |snapshot: bool| {
        let (replaying, snapshotted) = (replaying.clone(), snapshotted.clone());
        async move {
            if snapshot {
                let loaded = snapshotted.load("big").await.unwrap();
                check(&loaded.state.0, loaded.version);
            } else {
                let loaded = replaying.load("big").await.unwrap();
                check(&loaded.state, loaded.version);
            }
        }
    };
    for (snapshot, times, case) in [
        (false, 10, "load 10,000 events, no snapshot"),
        (true, 200, "load 10,000 events, snapshot + 100"),
    ] {
        let (mut raw_runs, mut factum_runs) = <(Side, Side)>::default();
        for _ in 0..ROUNDS {
            raw_runs.measure(rate(times, || raw_load(snapshot))).await;
            factum_runs
                .measure(rate(times, || factum_load(snapshot)))
                .await;
        }
        report(
            case,
            "loads/s",
            &factum_runs.runs,
            &raw_runs.runs,
            Some(0.9),
        );
        report_cpu(&factum_runs, &raw_runs);
        let raw_peak = peak(|| raw_load(snapshot)).await;
        let factum_peak = peak(|| factum_load(snapshot)).await;
        println!(
            "{:<44} {:>12} {:>12} {:<9} {:>6.3}x",
            "  peak memory of one load",
            factum_peak / 1024,
            raw_peak / 1024,
            "KiB",
            factum_peak as f64 / raw_peak as f64
        );
    }
    // The first phase of a load alone: the rows read and turned into values, not decoded.
    let (mut raw_runs, mut factum_runs) = <(Side, Side)>::default();
    for _ in 0..ROUNDS {
        let raw_rows = || async { assert_eq!(raw.rows("account-big").await, LOAD_EVENTS) };
        raw_runs.measure(rate(10, raw_rows)).await;
        let factum_rows = || async {
            let events = store.replay_stream(&stream, &StreamRead::all()).await;
            assert_eq!(events.unwrap().len() as u64, LOAD_EVENTS);
        };
        factum_runs.measure(rate(10, factum_rows)).await;
    }
    let case = "  rows only (replay_stream, SELECT)";
    report(case, "reads/s", &factum_runs.runs, &raw_runs.runs, None);
    report_cpu(&factum_runs, &raw_runs);
}

/// The most bytes allocated at once above what was allocated before, during `op` (the
/// smallest of three runs: nothing else runs meanwhile, but a connection's buffers may
/// grow the first time).
async fn peak<F, Fut>(mut op: F) -> usize
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut peaks = vec![];
    for _ in 0..3 {
        ALLOCATOR.reset_peak_memory();
        op().await;
        peaks.push(ALLOCATOR.get_peak_memory());
    }
    peaks.into_iter().min().unwrap()
}

async fn run() {
    let config = PgConfig::default().pool_size(POOL);
    let store = fresh_store_with(config.clone()).await.unwrap();
    let raw = Raw::new(&baseline_store(config).await);
    describe_server(&store).await;
    print_header();
    let wanted = wanted_cases();
    // Untimed: a new cluster first creates WAL segments and connections, which would slow
    // whichever case runs first.
    creates(&store, &raw, 8, 2, true).await;
    if wanted("create") {
        for tasks in [1, 8, 32] {
            creates(&store, &raw, tasks, ROUNDS, false).await;
        }
    }
    if wanted("command") {
        for events in [10, 100] {
            for tasks in [1, 8] {
                commands(&store, &raw, events, tasks).await;
            }
        }
    }
    if wanted("hot") {
        for aggregates in [8, 1] {
            hot(&store, &raw, aggregates).await;
        }
    }
    if wanted("speculation") {
        speculation(&store, &raw).await;
    }
    if wanted("load") {
        loads(&store).await;
    }
}

fn main() {
    common::block_on(run());
}
