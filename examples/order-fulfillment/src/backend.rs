//! What the application needs from where it runs: the event store, where the read models
//! live, and where the workers keep their checkpoints, leases, parked events and process
//! instances.
//!
//! - On [`MemoryStore`] all of it is in memory, for one process: a new [`App`](crate::App)
//!   rebuilds its read models and the process's state from the first event.
//! - On [`PgStore`] all of it is in the store's database: the read models are tables written
//!   by transactional projections, the rest is [`PgCoordination`]. A restarted application
//!   resumes from its checkpoints, and several processes can share the work.

use std::future::Future;

use factum::coordination::{
    CheckpointStore, DeadLetterStore, LeaseStore, MemoryCheckpointStore, MemoryDeadLetterStore,
    MemoryLeaseStore, MemoryProcessStore, ProcessStore,
};
use factum::process::ProcessManagerRunner;
use factum::projection::{ProjectionOptions, ProjectionRunner, RunnerOptions, RunningProjections};
use factum::{EventStore, MemoryStore};
use factum_postgres::{PgCoordination, PgStore};

use crate::app::AppError;
use crate::pg_read_model::PgReadModels;
use crate::read_model::{MemoryReadModels, ReadModels};

/// The projections' handle of a backend.
pub type Projections<B> = RunningProjections<
    B,
    <B as Backend>::Checkpoints,
    <B as Backend>::Leases,
    <B as Backend>::DeadLetters,
>;

/// An event store together with the read models and coordination stores that go with it.
pub trait Backend: EventStore {
    /// Where the read models live.
    type ReadModels: ReadModels;
    /// Where projections and the process save their checkpoints.
    type Checkpoints: CheckpointStore;
    /// Who holds which partition.
    type Leases: LeaseStore;
    /// Where events whose handler kept failing are parked.
    type DeadLetters: DeadLetterStore;
    /// Where the process instances are kept.
    type Processes: ProcessStore;

    /// Prepares what the read models need (their tables), once per start.
    fn prepare(&self) -> impl Future<Output = Result<(), AppError>> + Send;

    /// Starts the projections of the order list, customer statistics and daily sales.
    fn start_projections(
        &self,
        runner: RunnerOptions,
        options: &ProjectionOptions,
    ) -> (Self::ReadModels, Projections<Self>);

    /// A runner for the process manager, on this backend's stores.
    fn process_runner(
        &self,
    ) -> ProcessManagerRunner<Self, Self::Processes, Self::Checkpoints, Self::Leases>;
}

impl Backend for MemoryStore {
    type ReadModels = MemoryReadModels;
    type Checkpoints = MemoryCheckpointStore;
    type Leases = MemoryLeaseStore;
    type DeadLetters = MemoryDeadLetterStore;
    type Processes = MemoryProcessStore;

    async fn prepare(&self) -> Result<(), AppError> {
        Ok(())
    }

    fn start_projections(
        &self,
        runner: RunnerOptions,
        options: &ProjectionOptions,
    ) -> (MemoryReadModels, Projections<Self>) {
        let read_models = MemoryReadModels::new();
        let (order_list, customer_stats, daily_sales) = read_models.projections();
        let projections = ProjectionRunner::new(self.clone())
            .options(runner)
            .register(order_list, options.clone())
            .register(customer_stats, options.clone())
            .register(daily_sales, options.clone())
            .start();
        (read_models, projections)
    }

    fn process_runner(
        &self,
    ) -> ProcessManagerRunner<Self, MemoryProcessStore, MemoryCheckpointStore, MemoryLeaseStore>
    {
        ProcessManagerRunner::new(
            self.clone(),
            MemoryProcessStore::new(),
            MemoryCheckpointStore::new(),
            MemoryLeaseStore::new(),
        )
    }
}

// ANCHOR: pg_backend
impl Backend for PgStore {
    type ReadModels = PgReadModels;
    type Checkpoints = PgCoordination;
    type Leases = PgCoordination;
    type DeadLetters = PgCoordination;
    type Processes = PgCoordination;

    async fn prepare(&self) -> Result<(), AppError> {
        PgReadModels::new(self)
            .create_tables()
            .await
            .map_err(|e| AppError::Internal(format!("creating the read model tables: {e}")))
    }

    fn start_projections(
        &self,
        runner: RunnerOptions,
        options: &ProjectionOptions,
    ) -> (PgReadModels, Projections<Self>) {
        let read_models = PgReadModels::new(self);
        let (order_list, customer_stats, daily_sales) = read_models.projections(self);
        let coordination = PgCoordination::new(self);
        let projections = ProjectionRunner::new(self.clone())
            .with_checkpoints(coordination.clone())
            .with_leases(coordination.clone())
            .with_dead_letters(coordination)
            .options(runner)
            .register(order_list, options.clone())
            .register(customer_stats, options.clone())
            .register(daily_sales, options.clone())
            .start();
        (read_models, projections)
    }

    fn process_runner(
        &self,
    ) -> ProcessManagerRunner<Self, PgCoordination, PgCoordination, PgCoordination> {
        let coordination = PgCoordination::new(self);
        ProcessManagerRunner::new(
            self.clone(),
            coordination.clone(),
            coordination.clone(),
            coordination,
        )
    }
}
// ANCHOR_END: pg_backend
