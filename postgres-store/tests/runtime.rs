//! The projection and process-manager runtimes against PostgreSQL: `PgStore` with
//! `PgCoordination`, a fresh schema per test, in real time.
//!
//! The generic suites of `factum::testing` run here as they do on the in-memory stores (among
//! them: a crash inside a batch, two workers on one projection with failover, a poison event
//! parked and replayed, a process manager that dies after a dispatch, a timeout that fires
//! after a restart). The tests below add what only a database has: a transactional read model
//! whose backend is killed between handling and commit, and a poison event parked in the
//! `dead_letters` table.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use factum::StreamId;
use factum::coordination::CheckpointStore;
use factum::projection::{FailurePolicy, ProjectionOptions, RunnerOptions};
use factum::testing::process_managers::{ProcessRuntimeStores, process_store_conformance};
use factum::testing::projections::{RuntimeStores, append_tested, eventually};
use factum_postgres::{PgCoordination, PgStore};
use uuid::Uuid;

use common::counts::{Counts, Running};
use common::{process_stores, raw_client, runtime_stores, schema, store};

async fn coordination() -> PgCoordination {
    PgCoordination::new(&store().await)
}

async fn runtime() -> RuntimeStores<PgStore, PgCoordination, PgCoordination, PgCoordination> {
    runtime_stores(store().await)
}

async fn processes() -> ProcessRuntimeStores<PgStore, PgCoordination, PgCoordination, PgCoordination>
{
    process_stores(store().await)
}

factum::coordination_conformance_tests!(coordination, coordination, coordination);

mod projections {
    use super::runtime;

    factum::projection_runtime_tests!(runtime);
}

mod process_managers {
    use super::processes;

    factum::process_manager_tests!(processes);
}

#[tokio::test]
async fn process_store() {
    process_store_conformance(coordination().await).await;
}

/// Runs `counts` alone, with one worker.
fn start_counts(store: &PgStore, counts: &Arc<Counts>) -> Running {
    counts.start(
        store,
        RunnerOptions::new()
            .worker_id("a")
            .lease_ttl(Duration::from_secs(2))
            .lease_retry(Duration::from_millis(200)),
        ProjectionOptions::new()
            .batch_size(10)
            .poll_interval(Duration::from_millis(50))
            .failure(
                FailurePolicy::park_after(3)
                    .backoff(Duration::from_millis(10), Duration::from_millis(40)),
            ),
    )
}

/// The backend of the projection's transaction is terminated between the handler's write and
/// the commit, twice, in the middle of batches: the runner retries on a new connection, and
/// the read model equals the event count (nothing lost, nothing applied twice).
#[tokio::test]
async fn killed_backend_in_the_middle_of_a_batch_repeats_nothing() {
    let store = store().await;
    let counts = Arc::new(Counts::new(&store, "counts").kill_at(&[7, 24]));
    counts.create_table().await;
    let mut head = 0;
    for i in 0..30u64 {
        head = append_tested(&store, &format!("order-{}", i % 3), i)
            .await
            .1;
    }
    let running = start_counts(&store, &counts);
    counts.wait_for(&running, head).await;
    assert_eq!(counts.killed.load(Ordering::SeqCst), 2, "two backends died");
    assert_eq!(
        counts.counted().await,
        [
            ("order-0".to_owned(), 10),
            ("order-1".to_owned(), 10),
            ("order-2".to_owned(), 10)
        ],
        "the read model equals the event count"
    );
    assert!(
        counts.deliveries.load(Ordering::SeqCst) > 30,
        "the events of the lost transactions were handled again"
    );
    assert!(running.parked("counts").await.expect("parked").is_empty());
    running.shutdown().await.expect("clean shutdown");
    let coordination = PgCoordination::new(&store);
    assert_eq!(coordination.load("counts", 0).await.expect("load"), head);
}

/// A poison event of a transactional projection is parked in the `dead_letters` table after
/// its retries, with the later events of its stream behind it; other streams flow; after a
/// fix, a replay applies them in order, exactly once.
#[tokio::test]
async fn poison_event_parked_in_postgres_and_replayed() {
    let store = store().await;
    let counts = Arc::new(Counts::new(&store, "counts"));
    counts.create_table().await;
    append_tested(&store, "order-a", 1).await;
    let (poison, poison_position) = append_tested(&store, "order-a", 2).await;
    append_tested(&store, "order-b", 1).await;
    let (_, waiting_position) = append_tested(&store, "order-a", 3).await;
    let (_, head) = append_tested(&store, "order-b", 2).await;
    counts.poisoned().insert(poison);

    let running = start_counts(&store, &counts);
    counts.wait_for(&running, head).await;
    assert_eq!(
        counts.counted().await,
        [("order-a".to_owned(), 1), ("order-b".to_owned(), 2)],
        "other streams flow; the poisoned stream waits"
    );
    let rows = raw_client()
        .await
        .query(
            &format!(
                "SELECT position, event_id, stream_id, reason::text FROM {}.dead_letters \
                 WHERE name = 'counts' ORDER BY position",
                schema(&store)
            ),
            &[],
        )
        .await
        .expect("dead letters");
    let parked: Vec<(i64, Uuid, String, serde_json::Value)> = rows
        .iter()
        .map(|row| {
            let reason: String = row.get(3);
            (
                row.get(0),
                row.get(1),
                row.get(2),
                serde_json::from_str(&reason).expect("reason"),
            )
        })
        .collect();
    assert_eq!(parked.len(), 2, "{parked:?}");
    assert_eq!(parked[0].0, i64::try_from(poison_position).expect("i64"));
    assert_eq!((parked[0].1, parked[0].2.as_str()), (poison, "order-a"));
    assert_eq!(parked[0].3["Failed"]["attempts"], 3);
    assert!(
        parked[0].3["Failed"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("poisoned")),
        "{:?}",
        parked[0].3
    );
    assert_eq!(parked[1].0, i64::try_from(waiting_position).expect("i64"));
    assert_eq!(
        parked[1].3["Waiting"]["behind"],
        serde_json::json!(poison_position)
    );

    counts.poisoned().clear();
    let stream = StreamId::parse("order-a").expect("stream");
    assert_eq!(
        running
            .replay_parked("counts", Some(&stream))
            .await
            .expect("replay"),
        2
    );
    eventually("the replay", || async {
        running.parked("counts").await.expect("parked").is_empty()
    })
    .await;
    assert_eq!(
        counts.counted().await,
        [("order-a".to_owned(), 3), ("order-b".to_owned(), 2)],
        "the replayed events were applied once"
    );
    let (_, head) = append_tested(&store, "order-a", 4).await;
    counts.wait_for(&running, head).await;
    assert_eq!(
        counts.counted().await,
        [("order-a".to_owned(), 4), ("order-b".to_owned(), 2)],
        "the stream is unblocked"
    );
    running.shutdown().await.expect("clean shutdown");
}

/// A `#[projection(..., transactional)]` read model: the macro generates the `PgProjection`,
/// run through `Transactional`.
mod transactional_macro {
    use std::time::Duration;

    use factum::coordination::ParkReason;
    use factum::projection::{FailurePolicy, ProjectionOptions, ProjectionRunner, RunnerOptions};
    use factum::store::{NewEvent, Payload};
    use factum::{
        BoxError, EventStore, ExpectedVersion, Metadata, RecordedEvent, StreamId, event, projection,
    };
    use factum_postgres::PgTransaction;
    use factum_postgres::{PgCoordination, PgProjection, PgStore, Transactional};
    use serde::{Deserialize, Serialize};
    use uuid::Uuid;

    use super::common::{raw_client, schema, store};

    /// The first version, in euros.
    #[event(name = "Deposited", version = 1, upcast_to = Deposited)]
    #[derive(Debug, Deserialize)]
    pub(crate) struct DepositedV1 {
        pub(crate) account: String,
        pub(crate) euros: i64,
    }

    impl From<DepositedV1> for Deposited {
        fn from(v1: DepositedV1) -> Self {
            Self {
                account: v1.account,
                cents: v1.euros * 100,
            }
        }
    }

    #[event(version = 2, previous = DepositedV1)]
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub(crate) struct Deposited {
        pub(crate) account: String,
        pub(crate) cents: i64,
    }

    #[event]
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub(crate) struct Withdrawn {
        pub(crate) account: String,
        pub(crate) cents: i64,
    }

    /// Balances per account, in the store's database.
    pub(crate) struct Balances {
        upsert: String,
        clear: String,
    }

    impl Balances {
        fn new(store: &PgStore) -> Self {
            let table = format!("{}.balances", schema(store));
            Self {
                upsert: format!(
                    "INSERT INTO {table} (account, cents) VALUES ($1, $2) \
                     ON CONFLICT (account) DO UPDATE SET cents = balances.cents + $2"
                ),
                clear: format!("DELETE FROM {table}"),
            }
        }
    }

    #[projection(name = "balances", categories = ["account"], transactional)]
    impl Balances {
        async fn deposited(
            &self,
            tx: &PgTransaction<'_>,
            event: &Deposited,
        ) -> Result<(), tokio_postgres::Error> {
            tx.execute(&self.upsert, &[&event.account, &event.cents])
                .await
                .map(drop)
        }

        async fn withdrawn(
            &self,
            tx: &PgTransaction<'_>,
            event: &Withdrawn,
            recorded: &RecordedEvent,
        ) -> Result<(), BoxError> {
            if event.cents < 0 {
                return Err(
                    format!("negative withdrawal at position {}", recorded.position).into(),
                );
            }
            tx.execute(&self.upsert, &[&event.account, &-event.cents])
                .await?;
            Ok(())
        }

        #[reset]
        async fn clear(&self, tx: &PgTransaction<'_>) -> Result<(), tokio_postgres::Error> {
            tx.execute(&self.clear, &[]).await.map(drop)
        }
    }

    fn stored(event_type: &str, version: u32, json: serde_json::Value) -> NewEvent {
        NewEvent {
            event_id: Uuid::now_v7(),
            event_type: event_type.into(),
            schema_version: version,
            payload: Payload::encode(&json).expect("payload"),
            metadata: Metadata::new(),
        }
    }

    async fn append(store: &PgStore, stream: &str, events: &[NewEvent]) -> u64 {
        store
            .append(
                &StreamId::parse(stream).expect("stream"),
                ExpectedVersion::Any,
                events,
            )
            .await
            .expect("append")
            .last_position
    }

    async fn balances(store: &PgStore) -> Vec<(String, i64)> {
        raw_client()
            .await
            .query(
                &format!(
                    "SELECT account, cents FROM {}.balances ORDER BY account",
                    schema(store)
                ),
                &[],
            )
            .await
            .expect("balances")
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect()
    }

    /// Upcast old versions, a handler with the recorded event, categories, a failing handler
    /// parked, and a rebuild through the generated `reset`, on PostgreSQL.
    #[tokio::test]
    async fn generated_pg_projection_runs_transactionally() {
        let store = store().await;
        raw_client()
            .await
            .batch_execute(&format!(
                "CREATE TABLE {}.balances (account text PRIMARY KEY, cents bigint NOT NULL)",
                schema(&store)
            ))
            .await
            .expect("read model table");
        let balances_model = Balances::new(&store);
        assert_eq!(balances_model.name(), "balances");
        assert_eq!(balances_model.event_types(), ["Deposited", "Withdrawn"]);
        assert_eq!(balances_model.categories(), ["account"]);

        append(
            &store,
            "account-a",
            &[
                stored(
                    "Deposited",
                    1,
                    serde_json::json!({"account": "a", "euros": 1}),
                ),
                stored(
                    "Deposited",
                    2,
                    serde_json::json!({"account": "a", "cents": 250}),
                ),
                stored(
                    "Withdrawn",
                    1,
                    serde_json::json!({"account": "a", "cents": 50}),
                ),
            ],
        )
        .await;
        append(
            &store,
            "account-b",
            &[stored(
                "Deposited",
                2,
                serde_json::json!({"account": "b", "cents": 100}),
            )],
        )
        .await;
        let poison = append(
            &store,
            "account-b",
            &[stored(
                "Withdrawn",
                1,
                serde_json::json!({"account": "b", "cents": -5}),
            )],
        )
        .await;
        append(
            &store,
            "account-b",
            &[stored(
                "Deposited",
                2,
                serde_json::json!({"account": "b", "cents": 10}),
            )],
        )
        .await;
        let head = append(
            &store,
            "ledger-x",
            &[stored(
                "Deposited",
                2,
                serde_json::json!({"account": "x", "cents": 999}),
            )],
        )
        .await;

        let coordination = PgCoordination::new(&store);
        let running = ProjectionRunner::new(store.clone())
            .coordination(coordination)
            .options(
                RunnerOptions::new()
                    .worker_id("a")
                    .lease_ttl(Duration::from_secs(2))
                    .lease_retry(Duration::from_millis(200)),
            )
            .register(
                Transactional::new(&store, balances_model),
                ProjectionOptions::new()
                    .poll_interval(Duration::from_millis(50))
                    .failure(
                        FailurePolicy::park_after(2)
                            .backoff(Duration::from_millis(10), Duration::from_millis(10)),
                    ),
            )
            .start();
        tokio::time::timeout(Duration::from_secs(120), running.wait_for("balances", head))
            .await
            .expect("caught up in time")
            .expect("running");
        let expected = [("a".to_owned(), 300), ("b".to_owned(), 100)];
        assert_eq!(
            balances(&store).await,
            expected,
            "the old version was upcast, the other category ignored, the poisoned stream waits"
        );
        let parked = running.parked("balances").await.expect("parked");
        assert_eq!(parked.len(), 2);
        assert_eq!(parked[0].position, poison);
        assert!(
            matches!(&parked[0].reason, ParkReason::Failed { error, .. }
                if error.contains(&format!("negative withdrawal at position {poison}"))),
            "{:?}",
            parked[0].reason
        );

        tokio::time::timeout(
            Duration::from_secs(120),
            running.rebuild("balances", |_| {}),
        )
        .await
        .expect("rebuilt in time")
        .expect("rebuild");
        assert_eq!(
            balances(&store).await,
            expected,
            "the generated reset emptied the read model before the replay"
        );
        running.shutdown().await.expect("clean shutdown");
    }
}
