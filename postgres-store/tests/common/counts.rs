//! A transactional read model counting `Tested` events per stream, with failures to inject:
//! poisoned events, a backend killed before the commit, a failing reset.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use factum::projection::{ProjectionOptions, ProjectionRunner, RunnerOptions, RunningProjections};
use factum::{BoxError, RecordedEvent};
use factum_postgres::PgTransaction;
use factum_postgres::{PgCoordination, PgProjection, PgStore, Transactional};
use uuid::Uuid;

use super::{raw_client, schema};

/// How long a test waits for a projection to catch up or a rebuild to end.
pub const PATIENCE: Duration = Duration::from_secs(120);

/// Projections running on PostgreSQL, with `PgCoordination` for everything else.
pub type Running = RunningProjections<PgStore, PgCoordination>;

/// A transactional read model counting `Tested` events per stream with an upsert that is not
/// idempotent: a second application of an event would show in the count.
///
/// The projection and its table (in the store's schema) have the same name.
pub struct Counts {
    name: String,
    table: String,
    /// Deliveries (1-based) at which the handler kills its own backend after its upsert,
    /// before the commit.
    kill_at: HashSet<u64>,
    /// Events whose handler fails until healed.
    poisoned: Mutex<HashSet<Uuid>>,
    /// Whether the next reset fails after emptying the table (inside its transaction).
    pub fail_reset: AtomicBool,
    /// Deliveries to the handler of events that are not poisoned.
    pub deliveries: AtomicU64,
    /// Backends the handler terminated.
    pub killed: AtomicU64,
}

impl Counts {
    /// The projection `name` over the table `name` of `store`'s schema (not created: see
    /// [`Counts::create_table`]), with no failure injected.
    pub fn new(store: &PgStore, name: &str) -> Self {
        Self {
            name: name.to_owned(),
            table: format!("{}.{name}", schema(store)),
            kill_at: HashSet::new(),
            poisoned: Mutex::default(),
            fail_reset: AtomicBool::new(false),
            deliveries: AtomicU64::new(0),
            killed: AtomicU64::new(0),
        }
    }

    /// Kills the handler's backend at these deliveries (1-based), after its upsert.
    pub fn kill_at(mut self, deliveries: &[u64]) -> Self {
        self.kill_at = deliveries.iter().copied().collect();
        self
    }

    /// Events whose handler fails until removed from the set.
    pub fn poisoned(&self) -> MutexGuard<'_, HashSet<Uuid>> {
        self.poisoned.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Creates the read model's table.
    pub async fn create_table(&self) {
        raw_client()
            .await
            .batch_execute(&format!(
                "CREATE TABLE {} (stream text PRIMARY KEY, events bigint NOT NULL)",
                self.table
            ))
            .await
            .expect("read model table");
    }

    /// The read model: the count per stream, by stream.
    pub async fn counted(&self) -> Vec<(String, i64)> {
        raw_client()
            .await
            .query(
                &format!("SELECT stream, events FROM {} ORDER BY stream", self.table),
                &[],
            )
            .await
            .expect("counts")
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect()
    }

    /// Runs the projection alone on `store`, with `PgCoordination` for checkpoints, leases and
    /// dead letters.
    pub fn start(
        self: &Arc<Self>,
        store: &PgStore,
        runner: RunnerOptions,
        options: ProjectionOptions,
    ) -> Running {
        let coordination = PgCoordination::new(store);
        ProjectionRunner::new(store.clone())
            .coordination(coordination)
            .options(runner)
            .register(
                Transactional::new(store, CountsProjection(Arc::clone(self))),
                options,
            )
            .start()
    }

    /// Waits, at most [`PATIENCE`], for the projection to reach `position`.
    pub async fn wait_for(&self, running: &Running, position: u64) {
        tokio::time::timeout(PATIENCE, running.wait_for(&self.name, position))
            .await
            .expect("caught up in time")
            .expect("running");
    }
}

/// The [`PgProjection`] of [`Counts`].
struct CountsProjection(Arc<Counts>);

impl PgProjection for CountsProjection {
    fn name(&self) -> &str {
        &self.0.name
    }

    fn event_types(&self) -> Vec<String> {
        vec!["Tested".to_owned()]
    }

    async fn handle(&self, tx: &PgTransaction<'_>, event: &RecordedEvent) -> Result<(), BoxError> {
        let counts = &self.0;
        if counts.poisoned().contains(&event.event_id) {
            return Err(format!("poisoned event at position {}", event.position).into());
        }
        let delivery = counts.deliveries.fetch_add(1, Ordering::SeqCst) + 1;
        tx.execute(
            &format!(
                "INSERT INTO {} (stream, events) VALUES ($1, 1) \
                 ON CONFLICT (stream) DO UPDATE SET events = {0}.events + 1",
                counts.table
            ),
            &[&event.stream_id.as_str()],
        )
        .await?;
        if counts.kill_at.contains(&delivery) {
            // The backend dies after the read model was written and before the checkpoint
            // and the commit: the transaction is lost as a whole.
            let pid: i32 = tx.query_one("SELECT pg_backend_pid()", &[]).await?.get(0);
            let killed: bool = raw_client()
                .await
                .query_one("SELECT pg_terminate_backend($1)", &[&pid])
                .await?
                .get(0);
            if killed {
                counts.killed.fetch_add(1, Ordering::SeqCst);
            }
        }
        Ok(())
    }

    async fn reset(&self, tx: &PgTransaction<'_>) -> Result<(), BoxError> {
        tx.execute(&format!("DELETE FROM {}", self.0.table), &[])
            .await?;
        if self.0.fail_reset.swap(false, Ordering::SeqCst) {
            return Err("failure injected after emptying the read model".into());
        }
        Ok(())
    }
}
