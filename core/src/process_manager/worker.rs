//! The worker of one partition of a process manager: its lease loop and its batches.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::Instrument;
use uuid::Uuid;

use crate::coordination::{CheckpointStore, Lease, LeaseStore, partition_of};
use crate::metadata::Metadata;
use crate::process_manager::{
    Clock, CommandDispatcher, Effects, ProcessError, ProcessManager, ProcessOptions, ProcessStore,
};
use crate::projection::WorkerState;
use crate::runtime::lease_loop::{self, Exit, PartitionWorker, next_batch};
use crate::runtime::slot::{NoMessages, Slot};
use crate::store::EventStore;
use crate::subscription::{Subscription, SubscriptionOptions};

mod instance;
mod outbox;

type Failure = lease_loop::Failure<ProcessError>;

impl<E: Into<ProcessError>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Transient(e.into())
    }
}

pub(super) struct PmWorker<S, P, C, L, M, X> {
    pub(super) store: S,
    pub(super) processes: P,
    pub(super) checkpoints: C,
    pub(super) slot: Slot<L>,
    pub(super) manager: Arc<M>,
    pub(super) dispatcher: Arc<X>,
    pub(super) options: ProcessOptions,
    pub(super) subscription: SubscriptionOptions,
    pub(super) clock: Arc<dyn Clock>,
}

/// The effects of one decision, with the message that caused them.
struct Decision<C> {
    effects: Effects<C>,
    cause: Uuid,
    metadata: Metadata,
}

impl<S, P, C, L, M, X> PmWorker<S, P, C, L, M, X>
where
    S: EventStore,
    P: ProcessStore,
    C: CheckpointStore,
    L: LeaseStore,
    M: ProcessManager,
    X: CommandDispatcher<M::Command>,
{
    pub(super) async fn run(mut self) -> Result<(), ProcessError> {
        let span = tracing::info_span!(
            "process_manager",
            process = %self.slot.name,
            partition = self.slot.partition,
            worker = %self.slot.runner.worker_id,
        );
        lease_loop::hold(&mut self).instrument(span).await
    }

    fn mine(&self, key: &str) -> bool {
        partition_of(key, self.options.partitions) == self.slot.partition
    }
}

impl<S, P, C, L, M, X> PartitionWorker for PmWorker<S, P, C, L, M, X>
where
    S: EventStore,
    P: ProcessStore,
    C: CheckpointStore,
    L: LeaseStore,
    M: ProcessManager,
    X: CommandDispatcher<M::Command>,
{
    type Leases = L;
    type Error = ProcessError;

    const KIND: &'static str = "process";

    fn slot(&self) -> &Slot<L> {
        &self.slot
    }

    async fn acquire(&mut self) -> Option<Lease> {
        self.slot.acquire(&mut NoMessages).await
    }

    fn retry_pause(&self) -> Duration {
        self.options.poll_interval
    }

    async fn run_with_lease(&mut self, lease: &Lease) -> Result<Exit, Failure> {
        let mut position = match self.checkpoints.claim(lease).await {
            Ok(position) => position,
            Err(e) if e.is_fenced() => return Ok(Exit::LeaseLost),
            Err(e) => return Err(e.into()),
        };
        let mut saved = position;
        self.slot.update(|c| {
            c.state = WorkerState::Running;
            c.checkpoint = position;
            c.position = position;
            c.error = None;
        });
        // What a crashed holder decided but did not dispatch.
        for key in self.processes.with_pending(&self.slot.name).await? {
            if self.mine(&key) {
                if let Some(instance) = self.processes.load(&self.slot.name, &key).await? {
                    if let Some(exit) = self.dispatch_pending(lease, instance).await? {
                        return Ok(exit);
                    }
                }
            }
        }
        let mut subscription =
            Subscription::new(self.store.clone(), position, self.subscription.clone());
        let mut timeouts_at = Instant::now();
        let mut polled = false;
        loop {
            if !self.slot.renew_if_due(lease).await? {
                return Ok(Exit::LeaseLost);
            }
            if Instant::now() >= timeouts_at {
                if let Some(exit) = self.fire_due(lease).await? {
                    return Ok(exit);
                }
                timeouts_at = Instant::now() + self.options.poll_interval;
            }
            let wake = self.slot.renew_at.min(timeouts_at);
            let batch = tokio::select! {
                biased;
                () = self.slot.shutdown.triggered() => return Ok(Exit::Shutdown),
                () = self.slot.assignment.lost(self.slot.partition) => return Ok(Exit::Handoff),
                () = tokio::time::sleep_until(wake) => continue,
                batch = next_batch(&mut subscription, &self.slot.shutdown, polled) => match batch {
                    // An event that will never decode: the partition stops on it (as on a
                    // handler's error) instead of reading it again forever.
                    Err(error) if error.undecodable_event().is_some() => {
                        tracing::error!(%error, "stopping at an event that cannot be decoded");
                        return Err(Failure::Fatal(ProcessError::Store(error)));
                    }
                    batch => batch?,
                },
            };
            let Some(batch) = batch else {
                return Ok(Exit::Shutdown);
            };
            let head = batch.head;
            self.slot
                .shared
                .update(&self.slot.name, self.slot.partition, |c| {
                    c.head = c.head.max(head)
                });
            let mut interrupted = None;
            for event in &batch.events {
                if self.slot.shutdown.is_triggered() {
                    interrupted = Some(Exit::Shutdown);
                    break;
                }
                if !self.slot.renew_if_due(lease).await? {
                    interrupted = Some(Exit::LeaseLost);
                    break;
                }
                if let Some(exit) = self.process(lease, event).await? {
                    interrupted = Some(exit);
                    break;
                }
                position = event.position;
                let p = position;
                self.slot
                    .shared
                    .update(&self.slot.name, self.slot.partition, |c| c.position = p);
            }
            if matches!(interrupted, Some(Exit::LeaseLost)) {
                return Ok(Exit::LeaseLost);
            }
            if interrupted.is_none() {
                position = batch.scanned_to;
            }
            if position != saved {
                match self.checkpoints.save(lease, position).await {
                    Ok(()) => saved = position,
                    Err(e) if e.is_fenced() => return Ok(Exit::LeaseLost),
                    Err(e) => return Err(e.into()),
                }
            }
            polled = true;
            self.slot.update(|c| {
                c.checkpoint = saved;
                c.position = position;
                c.recovered();
            });
            if let Some(exit) = interrupted {
                return Ok(exit);
            }
        }
    }
}
