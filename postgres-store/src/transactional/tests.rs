//! A transactional projection against PostgreSQL: a crash inside a batch repeats nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::PgTransaction;
use factum::coordination::{CheckpointStore, DeadLetterStore};
use factum::projection::{FailurePolicy, ProjectionOptions, ProjectionRunner, RunnerOptions};
use factum::testing::projections::append_tested;
use factum::{BoxError, RecordedEvent};
use tokio::sync::watch;

use super::{PgProjection, Transactional};
use crate::PgStore;
use crate::coordination::PgCoordination;
use crate::testing::fresh_store;

/// Inserts each event id into a table whose primary key refuses a second delivery.
struct Inserts {
    table: String,
    hang_at_delivery: Option<u64>,
    deliveries: AtomicU64,
    hung: watch::Sender<bool>,
}

struct Shared(Arc<Inserts>);

impl PgProjection for Shared {
    fn name(&self) -> &str {
        "inserts"
    }

    fn event_types(&self) -> Vec<String> {
        vec!["Tested".to_owned()]
    }

    async fn handle(&self, tx: &PgTransaction<'_>, event: &RecordedEvent) -> Result<(), BoxError> {
        let delivery = self.0.deliveries.fetch_add(1, Ordering::SeqCst) + 1;
        let position = i64::try_from(event.position)?;
        tx.execute(
            &format!(
                "INSERT INTO {} (event_id, position) VALUES ($1, $2)",
                self.0.table
            ),
            &[&event.event_id, &position],
        )
        .await?;
        if self.0.hang_at_delivery == Some(delivery) {
            // Dies inside the transaction: the insert is never committed.
            self.0.hung.send_replace(true);
            std::future::pending::<()>().await;
        }
        Ok(())
    }

    async fn reset(&self, tx: &PgTransaction<'_>) -> Result<(), BoxError> {
        tx.execute(&format!("DELETE FROM {}", self.0.table), &[])
            .await?;
        Ok(())
    }
}

async fn rows(store: &PgStore, table: &str) -> i64 {
    let client = store.pool().get().await.expect("client");
    client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .expect("count")
        .get(0)
}

fn runner(
    store: &PgStore,
    worker: &str,
    inserts: &Arc<Inserts>,
    batched: bool,
) -> factum::projection::RunningProjections<PgStore, PgCoordination> {
    let coordination = PgCoordination::new(store);
    let projection = Transactional::new(store, Shared(Arc::clone(inserts)));
    let projection = if batched {
        projection
    } else {
        projection.per_event_transactions()
    };
    ProjectionRunner::new(store.clone())
        .coordination(coordination)
        .options(
            RunnerOptions::new()
                .worker_id(worker)
                .lease_ttl(Duration::from_secs(2))
                .lease_retry(Duration::from_millis(200)),
        )
        .register(
            projection,
            ProjectionOptions::new()
                .batch_size(10)
                .poll_interval(Duration::from_millis(50))
                .failure(
                    FailurePolicy::park_after(2)
                        .backoff(Duration::from_millis(10), Duration::from_millis(10)),
                ),
        )
        .start()
}

/// One transaction per event: the crash loses the event being handled, the checkpoint moved
/// with each commit inside the batch.
#[tokio::test]
async fn crash_inside_a_batch_repeats_nothing_and_rebuild_matches() {
    crash_inside_a_batch(false).await;
}

/// One transaction per batch: the crash loses the batch being handled, the checkpoint moved
/// with each committed batch.
#[tokio::test]
async fn crash_inside_a_batch_transaction_repeats_nothing_and_rebuild_matches() {
    crash_inside_a_batch(true).await;
}

async fn crash_inside_a_batch(batched: bool) {
    let store = fresh_store().await.expect("test database");
    let table = format!("{}.read_model", store.config().schema.quoted());
    store
        .pool()
        .get()
        .await
        .expect("client")
        .batch_execute(&format!(
            "CREATE TABLE {table} (event_id uuid PRIMARY KEY, position bigint NOT NULL)"
        ))
        .await
        .expect("read model table");
    let mut positions = Vec::new();
    for i in 0..20u64 {
        positions.push(
            append_tested(&store, &format!("order-{}", i % 4), i)
                .await
                .1,
        );
    }
    let head = positions[19];
    let inserts = Arc::new(Inserts {
        table: table.clone(),
        hang_at_delivery: Some(16),
        deliveries: AtomicU64::new(0),
        hung: watch::channel(false).0,
    });
    let running = runner(&store, "a", &inserts, batched);
    let mut hung = inserts.hung.subscribe();
    tokio::time::timeout(Duration::from_secs(60), hung.wait_for(|h| *h))
        .await
        .expect("the handler reaches the crash point")
        .expect("hung");
    drop(running);
    let coordination = PgCoordination::new(&store);
    // The handler hangs at its 16th delivery, the 6th event of the second batch of 10.
    let (committed, redelivered) = if batched { (10, 10) } else { (15, 5) };
    assert_eq!(
        coordination.load("inserts", 0).await.expect("load"),
        positions[committed - 1],
        "the checkpoint moved with each commit"
    );

    let inserts = Arc::new(Inserts {
        table: table.clone(),
        hang_at_delivery: None,
        deliveries: AtomicU64::new(0),
        hung: watch::channel(false).0,
    });
    let running = runner(&store, "b", &inserts, batched);
    tokio::time::timeout(Duration::from_secs(60), running.wait_for("inserts", head))
        .await
        .expect("caught up")
        .expect("running");
    assert_eq!(
        rows(&store, &table).await,
        20,
        "the read model equals the event count"
    );
    assert_eq!(
        inserts.deliveries.load(Ordering::SeqCst),
        redelivered,
        "only the events after the last commit were delivered again"
    );
    assert!(
        coordination
            .list("inserts")
            .await
            .expect("parked")
            .is_empty(),
        "no duplicate insert failed"
    );

    let target = tokio::time::timeout(Duration::from_secs(60), running.rebuild("inserts", |_| {}))
        .await
        .expect("rebuilt")
        .expect("rebuild");
    assert!(target >= head);
    assert_eq!(
        rows(&store, &table).await,
        20,
        "the rebuilt model equals the live one"
    );
    assert!(
        coordination
            .list("inserts")
            .await
            .expect("parked")
            .is_empty()
    );
    running.shutdown().await.expect("clean shutdown");
}
