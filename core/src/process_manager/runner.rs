//! Registering process managers, starting their workers and the handle on them.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::task::JoinSet;

use crate::coordination::{Coordination, MemoryCoordination};
use crate::process_manager::{
    Clock, CommandDispatcher, ProcessError, ProcessManager, ProcessOptions, SystemClock,
};
use crate::projection::{Health, PartitionStatus, RunnerOptions};
use crate::router::{Routable, Router};
use crate::runtime::head_monitor;
use crate::runtime::slot::{Slot, join_members};
use crate::runtime::status::Shared;
use crate::runtime::tasks::stop_all;
use crate::store::EventStore;
use crate::subscription::{Shutdown, SubscriptionOptions};

use crate::process_manager::worker::PmWorker;

pub(super) type WorkerFuture = BoxFuture<'static, Result<(), ProcessError>>;
pub(super) type Starter = Box<dyn FnOnce(&Shutdown, &Arc<Shared>) -> Vec<WorkerFuture> + Send>;

/// Registers process managers and starts them together.
///
/// Process instances, checkpoints and leases default to memory ([`MemoryCoordination`], one
/// process); give shared ones with [`coordination`](Self::coordination) (PostgreSQL's
/// `PgCoordination`) to resume after a restart and to scale out across processes. Commands go
/// through the [`router`](Self::router), or through a dispatcher of your own
/// ([`register_with`](Self::register_with)).
pub struct ProcessManagerRunner<S, C = MemoryCoordination> {
    store: S,
    coordination: C,
    router: Router,
    options: Arc<RunnerOptions>,
    clock: Arc<dyn Clock>,
    starters: Vec<(String, Starter)>,
}

impl<S, C> std::fmt::Debug for ProcessManagerRunner<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessManagerRunner")
            .field("options", &self.options)
            .field("router", &self.router)
            .field(
                "process_managers",
                &self.starters.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl<S: EventStore> ProcessManagerRunner<S> {
    /// A runner over `store`, coordinating in memory, with default options, the system
    /// clock and an empty router. Set the [`router`](Self::router),
    /// [`coordination`](Self::coordination), [`options`](Self::options) and
    /// [`clock`](Self::clock) before registering.
    pub fn new(store: S) -> Self {
        Self {
            store,
            coordination: MemoryCoordination::new(),
            router: Router::new(),
            options: Arc::new(RunnerOptions::new()),
            clock: Arc::new(SystemClock),
            starters: Vec::new(),
        }
    }
}

impl<S, C> ProcessManagerRunner<S, C>
where
    S: EventStore,
    C: Coordination,
{
    /// Keeps process instances, checkpoints and leases in `coordination`. Call it before
    /// registering.
    ///
    /// # Panics
    ///
    /// When process managers were registered already: they keep their instances where the
    /// runner said when they were registered.
    pub fn coordination<C2: Coordination>(self, coordination: C2) -> ProcessManagerRunner<S, C2> {
        assert!(
            self.starters.is_empty(),
            "choose the coordination backend before registering process managers"
        );
        ProcessManagerRunner {
            store: self.store,
            coordination,
            router: self.router,
            options: self.options,
            clock: self.clock,
            starters: Vec::new(),
        }
    }

    /// Dispatches the commands of the process managers registered after this call through
    /// `router`.
    #[must_use]
    pub fn router(mut self, router: Router) -> Self {
        self.router = router;
        self
    }

    /// Sets the worker id and lease timings.
    #[must_use]
    pub fn options(mut self, options: RunnerOptions) -> Self {
        self.options = Arc::new(options);
        self
    }

    /// Sets the clock timeouts are scheduled and fired by.
    #[must_use]
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Adds a process manager whose commands go through the runner's
    /// [`router`](Self::router): each command, or each variant of a `#[command]` enum, to the
    /// aggregate that accepts it. A second process manager with the same name replaces the
    /// first.
    #[must_use]
    pub fn register<M>(self, manager: M, options: ProcessOptions) -> Self
    where
        M: ProcessManager,
        M::Command: Routable,
    {
        let router = self.router.clone();
        self.register_with(manager, router, options)
    }

    /// Adds a process manager whose commands go to `dispatcher`.
    #[must_use]
    pub fn register_with<M, X>(mut self, manager: M, dispatcher: X, options: ProcessOptions) -> Self
    where
        M: ProcessManager,
        X: CommandDispatcher<M::Command>,
    {
        let name = manager.name().to_owned();
        let manager = Arc::new(manager);
        let dispatcher = Arc::new(dispatcher);
        let subscription = SubscriptionOptions::new()
            .batch_size(options.batch_size)
            .poll_interval(options.poll_interval)
            .event_types(manager.event_types());
        let store = self.store.clone();
        let processes = self.coordination.clone();
        let checkpoints = self.coordination.clone();
        let leases = self.coordination.clone();
        let runner = Arc::clone(&self.options);
        let clock = Arc::clone(&self.clock);
        let worker_name = name.clone();
        let starter: Starter = Box::new(move |shutdown, shared| {
            let (members, assignment) = join_members(
                leases.clone(),
                worker_name.clone(),
                &runner,
                options.partitions,
                shutdown.clone(),
            );
            let mut futures: Vec<WorkerFuture> = vec![Box::pin(async move {
                members.await;
                Ok(())
            })];
            futures.extend((0..options.partitions).map(|partition| {
                shared.update(&worker_name, partition, |_| {});
                let worker = PmWorker {
                    store: store.clone(),
                    processes: processes.clone(),
                    checkpoints: checkpoints.clone(),
                    slot: Slot::new(
                        leases.clone(),
                        worker_name.clone(),
                        partition,
                        Arc::clone(&runner),
                        shutdown.clone(),
                        Arc::clone(shared),
                        assignment.clone(),
                    ),
                    manager: Arc::clone(&manager),
                    dispatcher: Arc::clone(&dispatcher),
                    options: options.clone(),
                    subscription: subscription.clone(),
                    clock: Arc::clone(&clock),
                };
                Box::pin(worker.run()) as WorkerFuture
            }));
            futures
        });
        self.starters.retain(|(n, _)| *n != name);
        self.starters.push((name, starter));
        self
    }

    /// Starts a worker for every partition of every registered process manager.
    pub fn start(self) -> RunningProcessManagers {
        let shutdown = Shutdown::new();
        let shared = Arc::new(Shared::default());
        let mut tasks = JoinSet::new();
        let mut names = Vec::new();
        #[cfg(feature = "metrics")]
        tasks.spawn({
            let ticker = Arc::clone(&shared).metrics_ticker(shutdown.clone());
            async move {
                ticker.await;
                Ok(())
            }
        });
        tasks.spawn({
            let watch = head_monitor::watch(
                self.store.clone(),
                Arc::clone(&shared),
                Arc::clone(&self.options),
                shutdown.clone(),
            );
            async move {
                watch.await;
                Ok(())
            }
        });
        for (name, starter) in self.starters {
            for worker in starter(&shutdown, &shared) {
                tasks.spawn(worker);
            }
            names.push(name);
        }
        RunningProcessManagers {
            shutdown,
            shared,
            tasks,
            names,
        }
    }
}

/// The running process managers of a [`ProcessManagerRunner`].
///
/// [`shutdown`](Self::shutdown) stops them gracefully; dropping the handle aborts them as a
/// crash would.
#[derive(Debug)]
pub struct RunningProcessManagers {
    shutdown: Shutdown,
    shared: Arc<Shared>,
    tasks: JoinSet<Result<(), ProcessError>>,
    names: Vec<String>,
}

impl RunningProcessManagers {
    /// Stops every worker gracefully and waits for them; returns the first error a worker
    /// stopped with.
    pub async fn shutdown(mut self) -> Result<(), ProcessError> {
        stop_all(&self.shutdown, &mut self.tasks, "process").await
    }

    /// The state of every partition.
    pub fn status(&self) -> Vec<PartitionStatus> {
        self.shared.snapshot()
    }

    /// Stalled and stopped partitions, and a store head held back, as for projections.
    pub fn health(&self, stalled_after: Duration) -> Health {
        self.shared.health(stalled_after)
    }

    /// Waits until every partition of `name` has saved a checkpoint at or after `position`.
    pub async fn wait_for(&self, name: &str, position: u64) -> Result<(), ProcessError> {
        if !self.names.iter().any(|n| n == name) {
            return Err(ProcessError::Unknown {
                name: name.to_owned(),
            });
        }
        self.shared
            .wait_for(name, position)
            .await
            .map_err(|partition| ProcessError::NotRunning {
                name: name.to_owned(),
                partition,
            })
    }
}
