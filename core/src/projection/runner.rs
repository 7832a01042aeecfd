//! Registering projections and starting their workers.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::FutureExt;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::coordination::{Coordination, MemoryCoordination};
use crate::projection::running::RunningProjections;
use crate::projection::worker::{Control, Worker};
use crate::projection::{ErasedProjection, Projection, ProjectionOptions, RunnerOptions};
use crate::runtime::head_monitor;
use crate::runtime::slot::{Slot, join_members};
use crate::runtime::status::Shared;
use crate::store::EventStore;
use crate::subscription::{Shutdown, SubscriptionOptions};

/// Registers projections and starts them together.
///
/// Checkpoints, leases and dead letters default to memory ([`MemoryCoordination`], one
/// process); give shared ones with [`coordination`](Self::coordination) (PostgreSQL's
/// `PgCoordination`) to resume after a restart and to scale out across processes.
#[derive(Debug)]
pub struct ProjectionRunner<S, C = MemoryCoordination> {
    store: S,
    coordination: C,
    options: RunnerOptions,
    projections: Vec<Registered>,
}

pub(super) struct Registered {
    pub(super) name: String,
    pub(super) projection: Arc<dyn ErasedProjection>,
    pub(super) subscription: SubscriptionOptions,
    pub(super) options: ProjectionOptions,
}

impl std::fmt::Debug for Registered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registered")
            .field("name", &self.name)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl<S: EventStore> ProjectionRunner<S> {
    /// A runner over `store`, coordinating in memory.
    pub fn new(store: S) -> Self {
        Self {
            store,
            coordination: MemoryCoordination::new(),
            options: RunnerOptions::new(),
            projections: Vec::new(),
        }
    }
}

impl<S, C> ProjectionRunner<S, C>
where
    S: EventStore,
    C: Coordination,
{
    /// Keeps checkpoints, leases and dead letters in `coordination`.
    pub fn coordination<C2: Coordination>(self, coordination: C2) -> ProjectionRunner<S, C2> {
        ProjectionRunner {
            store: self.store,
            coordination,
            options: self.options,
            projections: self.projections,
        }
    }

    /// Sets the runner's options.
    #[must_use]
    pub fn options(mut self, options: RunnerOptions) -> Self {
        self.options = options;
        self
    }

    /// Adds a projection. A second projection with the same name replaces the first.
    #[must_use]
    pub fn register<P: Projection>(mut self, projection: P, options: ProjectionOptions) -> Self {
        let name = projection.name().to_owned();
        let subscription = SubscriptionOptions::new()
            .batch_size(options.batch_size)
            .poll_interval(options.poll_interval)
            .event_types(projection.event_types())
            .categories(projection.categories());
        self.projections.retain(|r| r.name != name);
        self.projections.push(Registered {
            name,
            projection: Arc::new(projection),
            subscription,
            options,
        });
        self
    }

    /// Starts a worker for every partition of every registered projection, on the current
    /// tokio runtime.
    pub fn start(self) -> RunningProjections<S, C> {
        let shutdown = Shutdown::new();
        let shared = Arc::new(Shared::default());
        let options = Arc::new(self.options);
        let mut tasks = JoinSet::new();
        let mut projections = HashMap::new();
        #[cfg(feature = "metrics")]
        tasks.spawn(Arc::clone(&shared).metrics_ticker(shutdown.clone()).map(Ok));
        tasks.spawn(
            head_monitor::watch(
                self.store.clone(),
                Arc::clone(&shared),
                Arc::clone(&options),
                shutdown.clone(),
            )
            .map(Ok),
        );
        for registered in self.projections {
            let (members, assignment) = join_members(
                self.coordination.clone(),
                registered.name.clone(),
                &options,
                registered.options.partitions,
                shutdown.clone(),
            );
            tasks.spawn(members.map(Ok));
            let mut controls = Vec::new();
            for partition in 0..registered.options.partitions {
                let (tx, rx) = mpsc::unbounded_channel();
                controls.push(tx);
                shared.update(&registered.name, partition, |_| {});
                let worker = Worker {
                    store: self.store.clone(),
                    checkpoints: self.coordination.clone(),
                    dead_letters: self.coordination.clone(),
                    projection: Arc::clone(&registered.projection),
                    slot: Slot::new(
                        self.coordination.clone(),
                        registered.name.clone(),
                        partition,
                        Arc::clone(&options),
                        shutdown.clone(),
                        Arc::clone(&shared),
                        assignment.clone(),
                    ),
                    options: registered.options.clone(),
                    subscription: partition_read(
                        &registered.subscription,
                        partition,
                        registered.options.partitions,
                    ),
                    control: rx,
                    progress: None,
                    batches: true,
                };
                tasks.spawn(worker.run());
            }
            projections.insert(
                registered.name.clone(),
                RunningProjection {
                    projection: registered.projection,
                    controls,
                },
            );
        }
        RunningProjections {
            store: self.store,
            coordination: self.coordination,
            shutdown,
            shared,
            tasks,
            projections,
        }
    }
}

pub(super) struct RunningProjection {
    pub(super) projection: Arc<dyn ErasedProjection>,
    pub(super) controls: Vec<mpsc::UnboundedSender<Control>>,
}

impl std::fmt::Debug for RunningProjection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningProjection")
            .field("partitions", &self.controls.len())
            .finish_non_exhaustive()
    }
}

/// What partition `index` of `count` reads: only its own streams when the projection is
/// split, so that the partitions read the log once in total rather than once each.
fn partition_read(
    subscription: &SubscriptionOptions,
    index: u32,
    count: u32,
) -> SubscriptionOptions {
    match crate::store::StreamPartition::new(index, count) {
        Ok(partition) if count > 1 => subscription.clone().partition(partition),
        _ => subscription.clone(),
    }
}
