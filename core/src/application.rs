//! An application: the aggregates, projections and process managers over one event store
//! and one coordination backend, started together.

use std::sync::Arc;
use std::time::Duration;

use crate::aggregate::{Aggregate, Routed};
use crate::coordination::{Coordination, CoordinationError, MemoryCoordination};
use crate::error::StoreError;
use crate::metadata::Metadata;
use crate::process_manager::{
    Clock, ProcessError, ProcessManager, ProcessManagerRunner, ProcessOptions,
    RunningProcessManagers, SystemClock,
};
use crate::projection::{
    Health, HealthProblem, PartitionStatus, Projection, ProjectionError, ProjectionOptions,
    ProjectionRunner, RunnerOptions, RunningProjections,
};
use crate::repository::Repository;
use crate::router::{DispatchResult, Routable, Router};
use crate::store::EventStore;

/// What waiting on an [`Application`] or stopping it reports.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplicationError {
    /// The event store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The coordination backend failed.
    #[error(transparent)]
    Coordination(#[from] CoordinationError),
    /// A projection failed, or is unknown or not running.
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    /// A process manager failed, or is unknown or not running.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// No projection or process manager of this name is registered.
    #[error("no projection or process manager named `{name}` is registered")]
    Unknown {
        /// The name asked for.
        name: String,
    },
}

type PmRegistration<S, C> =
    Box<dyn FnOnce(ProcessManagerRunner<S, C>) -> ProcessManagerRunner<S, C> + Send>;

/// Builds an [`Application`]: see [`Application::builder`].
pub struct ApplicationBuilder<S, C = MemoryCoordination> {
    store: S,
    coordination: C,
    router: Router,
    projections: ProjectionRunner<S, C>,
    process_managers: Vec<(String, PmRegistration<S, C>)>,
    options: RunnerOptions,
    clock: Arc<dyn Clock>,
}

impl<S, C> std::fmt::Debug for ApplicationBuilder<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApplicationBuilder")
            .field("router", &self.router)
            .field(
                "process_managers",
                &self
                    .process_managers
                    .iter()
                    .map(|(n, _)| n)
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl<S, C> ApplicationBuilder<S, C>
where
    S: EventStore,
    C: Coordination,
{
    /// Keeps checkpoints, leases, dead letters and process instances in `coordination`
    /// (e.g. PostgreSQL's `PgCoordination`) instead of memory, so that a restart resumes
    /// where it stopped and several processes share the work.
    ///
    /// # Panics
    ///
    /// When process managers were added already: choose the backend first.
    pub fn coordination<C2: Coordination>(self, coordination: C2) -> ApplicationBuilder<S, C2> {
        assert!(
            self.process_managers.is_empty(),
            "choose the coordination backend before registering process managers"
        );
        ApplicationBuilder {
            projections: self.projections.coordination(coordination.clone()),
            store: self.store,
            coordination,
            router: self.router,
            process_managers: Vec::new(),
            options: self.options,
            clock: self.clock,
        }
    }

    /// Sets the worker id, lease timings and the head-held-back threshold of every
    /// projection and process manager.
    #[must_use]
    pub fn options(mut self, options: RunnerOptions) -> Self {
        self.options = options;
        self
    }

    /// Sets the clock the process managers' timeouts are scheduled and fired by (a
    /// `ManualClock` in tests).
    #[must_use]
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Routes the commands of `A` to a repository of `A` over the store.
    #[must_use]
    pub fn aggregate<A: Aggregate>(self) -> Self {
        let repository = Repository::<A, S>::new(self.store.clone());
        self.repository(repository)
    }

    /// Routes the commands of `A` to `repository` (one configured with
    /// [`with_conflict_retries`](Repository::with_conflict_retries), for example).
    #[must_use]
    pub fn repository<A: Aggregate>(mut self, repository: Repository<A, S>) -> Self {
        self.router = self.router.aggregate(repository);
        self
    }

    /// Adds a projection. A second one with the same name replaces the first.
    #[must_use]
    pub fn projection<P: Projection>(mut self, projection: P, options: ProjectionOptions) -> Self {
        self.projections = self.projections.register(projection, options);
        self
    }

    /// Adds a process manager whose commands go through the application's router. A
    /// second one with the same name replaces the first.
    #[must_use]
    pub fn process_manager<M>(mut self, manager: M, options: ProcessOptions) -> Self
    where
        M: ProcessManager,
        M::Command: Routable,
    {
        let name = manager.name().to_owned();
        self.process_managers.retain(|(n, _)| *n != name);
        self.process_managers.push((
            name,
            Box::new(move |runner: ProcessManagerRunner<S, C>| runner.register(manager, options)),
        ));
        self
    }

    /// Starts every projection and process manager on the current tokio runtime.
    pub fn start(self) -> Application<S, C> {
        let projections = self.projections.options(self.options.clone()).start();
        let mut runner = ProcessManagerRunner::new(self.store.clone())
            .coordination(self.coordination.clone())
            .options(self.options)
            .router(self.router.clone());
        runner = runner.clock(ClockRef(Arc::clone(&self.clock)));
        let mut process_names = Vec::new();
        for (name, register) in self.process_managers {
            runner = register(runner);
            process_names.push(name);
        }
        Application {
            store: self.store,
            coordination: self.coordination,
            router: self.router,
            projections,
            processes: runner.start(),
            process_names,
            clock: self.clock,
        }
    }
}

/// A shared clock, so the application reads the same one its process managers fire by.
struct ClockRef(Arc<dyn Clock>);

impl Clock for ClockRef {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.0.now()
    }
}

/// The running application: a [`Router`] for its aggregates' commands, and its projections
/// and process managers working in the background over one store and one coordination
/// backend.
///
/// Commands go in with [`dispatch`](Self::dispatch); their outcome's position lets a caller
/// [`wait_for`](Self::wait_for) a read model to include them (read-your-writes), and
/// [`settle`](Self::settle) waits until every projection and process manager has handled
/// everything, the events of the process managers' own commands included.
/// [`shutdown`](Self::shutdown) stops the workers gracefully; dropping the application aborts
/// them, as a crash would.
pub struct Application<S, C = MemoryCoordination> {
    store: S,
    coordination: C,
    router: Router,
    projections: RunningProjections<S, C>,
    processes: RunningProcessManagers,
    process_names: Vec<String>,
    clock: Arc<dyn Clock>,
}

impl<S: EventStore, C: Coordination> std::fmt::Debug for Application<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("router", &self.router)
            .field("projections", &self.projections.names())
            .field("process_managers", &self.process_names)
            .finish_non_exhaustive()
    }
}

impl<S: EventStore> Application<S> {
    /// Starts describing an application over `store`, coordinating in memory: add its
    /// aggregates, projections and process managers, then [`start`](ApplicationBuilder::start)
    /// it.
    pub fn builder(store: S) -> ApplicationBuilder<S> {
        ApplicationBuilder {
            projections: ProjectionRunner::new(store.clone()),
            store,
            coordination: MemoryCoordination::new(),
            router: Router::new(),
            process_managers: Vec::new(),
            options: RunnerOptions::new(),
            clock: Arc::new(SystemClock),
        }
    }
}

/// How often [`Application::settle`] looks again at what the workers still have to do
/// beyond their checkpoints (due timeouts, outboxes, dead-letter replays).
const SETTLE_POLL: Duration = Duration::from_millis(20);

impl<S, C> Application<S, C>
where
    S: EventStore,
    C: Coordination,
{
    /// The event store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The coordination backend.
    pub fn coordination(&self) -> &C {
        &self.coordination
    }

    /// The router of the registered aggregates.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// A repository of `A` over the store, for loads.
    pub fn repository<A: Aggregate>(&self) -> Repository<A, S> {
        Repository::new(self.store.clone())
    }

    /// Executes `command` on the instance its `#[id]` names: see [`Router::dispatch`].
    pub async fn dispatch<K: Routed>(&self, command: K, metadata: Metadata) -> DispatchResult {
        self.router.dispatch(command, metadata).await
    }

    /// Executes `command` only if its instance is at version `expected`: see
    /// [`Router::dispatch_expecting`].
    pub async fn dispatch_expecting<K: Routed>(
        &self,
        command: K,
        expected: u64,
        metadata: Metadata,
    ) -> DispatchResult {
        self.router
            .dispatch_expecting(command, expected, metadata)
            .await
    }

    /// The projections, to rebuild them or manage their parked events.
    pub fn projections(&self) -> &RunningProjections<S, C> {
        &self.projections
    }

    /// The process managers.
    pub fn process_managers(&self) -> &RunningProcessManagers {
        &self.processes
    }

    /// Waits until the projection or process manager `name` has handled every event up to
    /// `position`, such as a dispatched command's [`position`](crate::Dispatched::position):
    /// a read model then shows that command's writes.
    pub async fn wait_for(&self, name: &str, position: u64) -> Result<(), ApplicationError> {
        if self.process_names.iter().any(|n| n == name) {
            return Ok(self.processes.wait_for(name, position).await?);
        }
        match self.projections.wait_for(name, position).await {
            Err(ProjectionError::UnknownProjection { .. }) => Err(ApplicationError::Unknown {
                name: name.to_owned(),
            }),
            other => Ok(other?),
        }
    }

    /// Waits until every projection and process manager has handled every event in the
    /// store, including the events that the process managers' commands append, the timeouts
    /// due by the application's clock have fired, and the parked events marked for replay
    /// have been handled again. Fails when a worker stopped.
    pub async fn settle(&self) -> Result<(), ApplicationError> {
        loop {
            let head = self.store.head_position().await?;
            for name in &self.process_names {
                self.processes.wait_for(name, head).await?;
            }
            for name in self.projections.names() {
                self.projections.wait_for(&name, head).await?;
            }
            let idle = self.background_idle().await?;
            if idle && self.store.head_position().await? == head {
                return Ok(());
            }
            if !idle {
                self.fail_if_stopped()?;
                tokio::time::sleep(SETTLE_POLL).await;
            }
        }
    }

    /// Whether no process manager has a due timeout or an undispatched command, and no
    /// projection has a parked event waiting to be replayed.
    async fn background_idle(&self) -> Result<bool, ApplicationError> {
        let now = self.clock.now();
        for name in &self.process_names {
            if !self.coordination.due(name, now, 1).await?.is_empty()
                || !self.coordination.with_pending(name).await?.is_empty()
            {
                return Ok(false);
            }
        }
        for name in self.projections.names() {
            if self
                .coordination
                .list(&name)
                .await?
                .iter()
                .any(|p| p.replay_requested)
            {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn fail_if_stopped(&self) -> Result<(), ApplicationError> {
        let stopped = self
            .status()
            .into_iter()
            .find(|p| p.state == crate::projection::WorkerState::Stopped);
        match stopped {
            Some(p) if self.process_names.contains(&p.name) => Err(ProcessError::NotRunning {
                name: p.name,
                partition: p.partition,
            }
            .into()),
            Some(p) => Err(ProjectionError::NotRunning {
                name: p.name,
                partition: p.partition,
            }
            .into()),
            None => Ok(()),
        }
    }

    /// The state of every partition of every projection and process manager.
    pub fn status(&self) -> Vec<PartitionStatus> {
        let mut status = self.projections.status();
        status.extend(self.processes.status());
        status
    }

    /// What is wrong with the projections and process managers: stopped, stalled for
    /// `stalled_after`, failing, or the store's head held back (reported once).
    pub fn health(&self, stalled_after: Duration) -> Health {
        let mut health = self.projections.health(stalled_after);
        let processes = self.processes.health(stalled_after);
        let head_reported = health
            .problems
            .iter()
            .any(|p| matches!(p, HealthProblem::HeadHeldBack { .. }));
        health.partitions.extend(processes.partitions);
        health.problems.extend(
            processes
                .problems
                .into_iter()
                .filter(|p| !(head_reported && matches!(p, HealthProblem::HeadHeldBack { .. }))),
        );
        health
    }

    /// Stops every projection and process manager gracefully; returns the first error one
    /// stopped with.
    pub async fn shutdown(self) -> Result<(), ApplicationError> {
        let projections = self.projections.shutdown().await;
        let processes = self.processes.shutdown().await;
        projections?;
        processes?;
        Ok(())
    }
}
