//! Rebuilding a transactional projection on PostgreSQL: the read model, the parked events and
//! the checkpoints are reset in one transaction, so a failure at any step of it, followed by
//! a crash, leaves the old state whole, and nothing is lost or applied twice.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use factum::testing::projections::append_tested;
use factum::{
    BoxError, CheckpointStore, DeadLetterStore, FailurePolicy, ProjectionOptions, ProjectionRunner,
    RecordedEvent, RunnerOptions, RunningProjections,
};
use factum_postgres::{PgCoordination, PgProjection, PgStore, Transactional};
use tokio_postgres::Transaction;
use uuid::Uuid;

use common::{raw_client, schema, store};

const NAME: &str = "tally";
const PATIENCE: Duration = Duration::from_secs(120);

/// A read model counting `Tested` events per stream with an upsert that is not idempotent:
/// an event applied twice shows in its count.
struct Tally {
    table: String,
    poisoned: Mutex<HashSet<Uuid>>,
    /// Whether the next reset fails after emptying the table (inside its transaction).
    fail_reset: AtomicBool,
}

impl Tally {
    fn poisoned(&self) -> std::sync::MutexGuard<'_, HashSet<Uuid>> {
        self.poisoned
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

struct TallyProjection(Arc<Tally>);

impl PgProjection for TallyProjection {
    fn name(&self) -> &str {
        NAME
    }

    fn event_types(&self) -> Vec<String> {
        vec!["Tested".to_owned()]
    }

    async fn handle(&self, tx: &Transaction<'_>, event: &RecordedEvent) -> Result<(), BoxError> {
        if self.0.poisoned().contains(&event.event_id) {
            return Err(format!("poisoned event at position {}", event.position).into());
        }
        tx.execute(
            &format!(
                "INSERT INTO {} (stream, events) VALUES ($1, 1) \
                 ON CONFLICT (stream) DO UPDATE SET events = {0}.events + 1",
                self.0.table
            ),
            &[&event.stream_id.as_str()],
        )
        .await?;
        Ok(())
    }

    async fn reset(&self, tx: &Transaction<'_>) -> Result<(), BoxError> {
        tx.execute(&format!("DELETE FROM {}", self.0.table), &[])
            .await?;
        if self.0.fail_reset.swap(false, Ordering::SeqCst) {
            return Err("failure injected after emptying the read model".into());
        }
        Ok(())
    }
}

/// Where the reset's transaction is made to fail.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// The read model's reset, after its `DELETE`.
    Reset,
    /// Removing the parked events.
    DeadLetters,
    /// Setting this partition's checkpoint to 0.
    Checkpoint(u32),
    /// The commit (a deferred constraint trigger).
    Commit,
}

type Running = RunningProjections<PgStore, PgCoordination, PgCoordination, PgCoordination>;

fn start(store: &PgStore, tally: &Arc<Tally>, worker: &str) -> Running {
    let coordination = PgCoordination::new(store);
    ProjectionRunner::new(store.clone())
        .with_checkpoints(coordination.clone())
        .with_leases(coordination.clone())
        .with_dead_letters(coordination)
        .options(
            RunnerOptions::new()
                .worker_id(worker)
                .lease_ttl(Duration::from_secs(2))
                .lease_retry(Duration::from_millis(200)),
        )
        .register(
            Transactional::new(store, TallyProjection(Arc::clone(tally))),
            ProjectionOptions::new()
                .partitions(2)
                .batch_size(5)
                .poll_interval(Duration::from_millis(50))
                .failure(
                    FailurePolicy::park_after(2)
                        .backoff(Duration::from_millis(10), Duration::from_millis(10)),
                ),
        )
        .start()
}

async fn wait_for(running: &Running, position: u64) {
    tokio::time::timeout(PATIENCE, running.wait_for(NAME, position))
        .await
        .expect("caught up in time")
        .expect("running");
}

async fn tallied(store: &PgStore) -> Vec<(String, i64)> {
    raw_client()
        .await
        .query(
            &format!(
                "SELECT stream, events FROM {}.tally ORDER BY stream",
                schema(store)
            ),
            &[],
        )
        .await
        .expect("tally")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

/// Makes `step` of the reset transaction fail (except `Reset`, which the projection does).
async fn inject(store: &PgStore, step: Step) {
    let schema = schema(store);
    let fail = format!(
        "CREATE FUNCTION {schema}.injected() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'failure injected by the test'; END $$;"
    );
    let trigger = match step {
        Step::Reset => return,
        Step::DeadLetters => format!(
            "CREATE TRIGGER injected BEFORE DELETE ON {schema}.dead_letters \
             FOR EACH STATEMENT EXECUTE FUNCTION {schema}.injected()"
        ),
        Step::Checkpoint(partition) => format!(
            "CREATE TRIGGER injected BEFORE UPDATE ON {schema}.checkpoints FOR EACH ROW \
             WHEN (NEW.position = 0 AND OLD.position <> 0 AND NEW.partition = {partition}) \
             EXECUTE FUNCTION {schema}.injected()"
        ),
        Step::Commit => format!(
            "CREATE CONSTRAINT TRIGGER injected AFTER UPDATE ON {schema}.checkpoints \
             DEFERRABLE INITIALLY DEFERRED FOR EACH ROW \
             WHEN (NEW.position = 0 AND OLD.position <> 0) \
             EXECUTE FUNCTION {schema}.injected()"
        ),
    };
    raw_client()
        .await
        .batch_execute(&format!("{fail} {trigger}"))
        .await
        .expect("inject a failure");
}

async fn remove_injection(store: &PgStore) {
    let schema = schema(store);
    raw_client()
        .await
        .batch_execute(&format!(
            "DROP TRIGGER IF EXISTS injected ON {schema}.dead_letters; \
             DROP TRIGGER IF EXISTS injected ON {schema}.checkpoints; \
             DROP FUNCTION IF EXISTS {schema}.injected();"
        ))
        .await
        .expect("remove the injected failure");
}

/// A failure at every step of a transactional projection's reset, then a crash: the read
/// model, its checkpoints and its parked events are all as before (the transaction rolled
/// back), a restart carries on from them, and a second rebuild counts every event once.
#[tokio::test]
async fn a_failure_at_any_step_of_a_rebuild_keeps_the_old_state() {
    let steps = [
        Step::Reset,
        Step::DeadLetters,
        Step::Checkpoint(0),
        Step::Checkpoint(1),
        Step::Commit,
    ];
    for step in steps {
        let store = store().await;
        raw_client()
            .await
            .batch_execute(&format!(
                "CREATE TABLE {}.tally (stream text PRIMARY KEY, events bigint NOT NULL)",
                schema(&store)
            ))
            .await
            .expect("read model table");
        let tally = Arc::new(Tally {
            table: format!("{}.tally", schema(&store)),
            poisoned: Mutex::default(),
            fail_reset: AtomicBool::new(false),
        });
        for i in 0..12u64 {
            append_tested(&store, &format!("order-{}", i % 4), i).await;
        }
        let (poison, _) = append_tested(&store, "order-p", 1).await;
        tally.poisoned().insert(poison);
        append_tested(&store, "order-p", 2).await;
        let mut head = 0;
        for i in 12..16u64 {
            head = append_tested(&store, &format!("order-{}", i % 4), i)
                .await
                .1;
        }
        let old: Vec<(String, i64)> = (0..4).map(|s| (format!("order-{s}"), 4)).collect();
        let running = start(&store, &tally, "a");
        wait_for(&running, head).await;
        assert_eq!(running.parked(NAME).await.expect("parked").len(), 2);
        assert_eq!(tallied(&store).await, old);
        tally.poisoned().clear();

        inject(&store, step).await;
        tally
            .fail_reset
            .store(matches!(step, Step::Reset), Ordering::SeqCst);
        let failed = tokio::time::timeout(PATIENCE, running.rebuild(NAME, |_| {}))
            .await
            .expect("the rebuild ends");
        assert!(failed.is_err(), "{step:?}: the failure is reported");
        drop(running); // the process dies right after the failure
        remove_injection(&store).await;

        let coordination = PgCoordination::new(&store);
        assert_eq!(tallied(&store).await, old, "{step:?}: the old read model");
        assert_eq!(
            coordination.list(NAME).await.expect("parked").len(),
            2,
            "{step:?}: the old parked events"
        );
        for partition in 0..2 {
            assert_eq!(
                coordination.load(NAME, partition).await.expect("load"),
                head,
                "{step:?}: the old checkpoint of partition {partition}"
            );
        }

        let running = start(&store, &tally, "b");
        wait_for(&running, head).await;
        assert_eq!(
            tallied(&store).await,
            old,
            "{step:?}: nothing applied twice"
        );
        let target = tokio::time::timeout(PATIENCE, running.rebuild(NAME, |_| {}))
            .await
            .expect("the second rebuild ends")
            .expect("the second rebuild");
        assert_eq!(target, head);
        let mut every = old.clone();
        every.push(("order-p".to_owned(), 2));
        assert_eq!(
            tallied(&store).await,
            every,
            "{step:?}: every event counted once"
        );
        assert!(running.parked(NAME).await.expect("parked").is_empty());
        running.shutdown().await.expect("clean shutdown");
    }
}
