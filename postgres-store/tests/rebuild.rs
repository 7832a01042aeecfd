//! Rebuilding a transactional projection on PostgreSQL: the read model, the parked events and
//! the checkpoints are reset in one transaction, so a failure at any step of it, followed by
//! a crash, leaves the old state whole, and nothing is lost or applied twice.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use factum::coordination::{CheckpointStore, DeadLetterStore};
use factum::projection::{FailurePolicy, ProjectionOptions, RunnerOptions};
use factum::testing::projections::append_tested;
use factum_postgres::{PgCoordination, PgStore};

use common::counts::{Counts, PATIENCE, Running};
use common::{raw_client, schema, store};

/// The projection, and its table.
const NAME: &str = "tally";

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

/// Runs `tally` alone, with two partitions, as `worker`.
fn start(store: &PgStore, tally: &Arc<Counts>, worker: &str) -> Running {
    tally.start(
        store,
        RunnerOptions::new()
            .worker_id(worker)
            .lease_ttl(Duration::from_secs(2))
            .lease_retry(Duration::from_millis(200)),
        ProjectionOptions::new()
            .partitions(2)
            .batch_size(5)
            .poll_interval(Duration::from_millis(50))
            .failure(
                FailurePolicy::park_after(2)
                    .backoff(Duration::from_millis(10), Duration::from_millis(10)),
            ),
    )
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
        let tally = Arc::new(Counts::new(&store, NAME));
        tally.create_table().await;
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
        tally.wait_for(&running, head).await;
        assert_eq!(running.parked(NAME).await.expect("parked").len(), 2);
        assert_eq!(tally.counted().await, old);
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
        assert_eq!(tally.counted().await, old, "{step:?}: the old read model");
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
        tally.wait_for(&running, head).await;
        assert_eq!(
            tally.counted().await,
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
            tally.counted().await,
            every,
            "{step:?}: every event counted once"
        );
        assert!(running.parked(NAME).await.expect("parked").is_empty());
        running.shutdown().await.expect("clean shutdown");
    }
}
