//! The worker of one partition: its lease loop and its batches.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::Instrument;

use crate::coordination::{CheckpointStore, CoordinationError, DeadLetterStore, Lease, LeaseStore};
use crate::error::{BoxError, StoreError};
use crate::projection::{ErasedProjection, ProjectionError, ProjectionOptions, WorkerState};
use crate::runtime::lease_loop::{self, Exit, PartitionWorker, next_batch};
use crate::runtime::slot::{Idle, Slot};
use crate::store::EventStore;
use crate::subscription::{Batch, Subscription, SubscriptionOptions};

mod control;
mod delivery;

/// Whether a handler's error is (or wraps) a lost lease.
fn is_fenced(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.downcast_ref::<CoordinationError>()
            .is_some_and(CoordinationError::is_fenced)
        {
            return true;
        }
        current = e.source();
    }
    false
}

pub(super) enum Control {
    /// Pause at the next batch boundary; reply with the lease, or `None` when not holding it.
    Pause(oneshot::Sender<Option<Lease>>),
    /// Resume a paused worker from its stored checkpoint and parked events (which a rebuild
    /// may have reset, all or some of them), reporting progress.
    Resume {
        progress: Option<mpsc::UnboundedSender<(u32, u64)>>,
    },
    /// Look for replay requests now.
    ReplayParked,
}

/// While waiting for its lease, a worker holds no partition to pause: a rebuild is told so.
impl Idle for mpsc::UnboundedReceiver<Control> {
    async fn answer(&mut self) -> bool {
        match self.recv().await {
            Some(Control::Pause(reply)) => {
                let _ = reply.send(None);
                true
            }
            Some(_) => true,
            None => false,
        }
    }
}

/// A failure inside the lease loop.
type Failure = lease_loop::Failure<ProjectionError>;

impl<E: Into<ProjectionError>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Transient(e.into())
    }
}

/// What became of one event.
enum Delivery {
    Handled,
    Parked,
    Interrupted(Exit),
}

/// The outcome of trying a handler per the failure policy.
enum Attempt {
    Handled,
    Failed(BoxError, u32),
    Interrupted(Exit),
}

pub(super) struct Worker<S, C, L, D> {
    pub(super) store: S,
    pub(super) checkpoints: C,
    pub(super) dead_letters: D,
    pub(super) projection: Arc<dyn ErasedProjection>,
    pub(super) slot: Slot<L>,
    pub(super) options: ProjectionOptions,
    pub(super) subscription: SubscriptionOptions,
    pub(super) control: mpsc::UnboundedReceiver<Control>,
    pub(super) progress: Option<mpsc::UnboundedSender<(u32, u64)>>,
    /// Whether batches are still offered to the projection (until it declines one).
    pub(super) batches: bool,
}

impl<S, C, L, D> Worker<S, C, L, D>
where
    S: EventStore,
    C: CheckpointStore,
    L: LeaseStore,
    D: DeadLetterStore,
{
    pub(super) async fn run(mut self) -> Result<(), ProjectionError> {
        let span = tracing::info_span!(
            "projection",
            projection = %self.slot.name,
            partition = self.slot.partition,
            worker = %self.slot.runner.worker_id,
        );
        lease_loop::hold(&mut self).instrument(span).await
    }
}

enum Step {
    Control(Option<Control>),
    Batch(Result<Option<Batch>, StoreError>),
}

enum Paused {
    Resume,
    Exit(Exit),
}

impl<S, C, L, D> PartitionWorker for Worker<S, C, L, D>
where
    S: EventStore,
    C: CheckpointStore,
    L: LeaseStore,
    D: DeadLetterStore,
{
    type Leases = L;
    type Error = ProjectionError;

    const KIND: &'static str = "projection";

    fn slot(&self) -> &Slot<L> {
        &self.slot
    }

    async fn acquire(&mut self) -> Option<Lease> {
        let lease = self.slot.acquire(&mut self.control).await?;
        tracing::info!(fence = lease.fence, "lease acquired");
        Some(lease)
    }

    fn retry_pause(&self) -> Duration {
        self.slot.runner.lease_retry.min(self.options.poll_interval)
    }

    async fn run_with_lease(&mut self, lease: &Lease) -> Result<Exit, Failure> {
        let mut position = match self.checkpoints.claim(lease).await {
            Ok(position) => position,
            Err(e) if e.is_fenced() => return Ok(Exit::LeaseLost),
            Err(e) => return Err(e.into()),
        };
        let mut saved = position;
        let mut blocked = self.load_blocked().await?;
        let mut subscription =
            Subscription::new(self.store.clone(), position, self.subscription.clone());
        self.slot.update(|c| {
            c.state = WorkerState::Running;
            c.checkpoint = position;
            c.position = position;
            c.error = None;
        });
        let mut replay_check = Instant::now();
        // The first read does not wait for new events, so that a worker retrying after a
        // failure finds out at once whether it gets through.
        let mut polled = false;
        loop {
            if !self.slot.renew_if_due(lease).await? {
                return Ok(Exit::LeaseLost);
            }
            if Instant::now() >= replay_check {
                if let Some(exit) = self.replay_requested(lease, &mut blocked).await? {
                    return Ok(exit);
                }
                replay_check = Instant::now() + self.options.poll_interval;
            }
            let next = tokio::select! {
                biased;
                () = self.slot.shutdown.triggered() => return Ok(Exit::Shutdown),
                control = self.control.recv() => Step::Control(control),
                () = self.slot.assignment.lost(self.slot.partition) => return Ok(Exit::Handoff),
                () = tokio::time::sleep_until(self.slot.renew_at) => continue,
                batch = next_batch(&mut subscription, &self.slot.shutdown, polled) => {
                    Step::Batch(batch)
                }
            };
            let batch = match next {
                Step::Control(None) => return Ok(Exit::Shutdown),
                Step::Control(Some(Control::ReplayParked)) => {
                    replay_check = Instant::now();
                    continue;
                }
                Step::Control(Some(Control::Resume { .. })) => continue,
                Step::Control(Some(Control::Pause(reply))) => {
                    let _ = reply.send(Some(lease.clone()));
                    match self.paused(lease).await? {
                        Paused::Resume => {
                            // As after a restart: whatever a rebuild changed before it ended
                            // or failed, the worker goes on from what is stored.
                            position = match self.checkpoints.claim(lease).await {
                                Ok(position) => position,
                                Err(e) if e.is_fenced() => return Ok(Exit::LeaseLost),
                                Err(e) => return Err(e.into()),
                            };
                            saved = position;
                            blocked = self.load_blocked().await?;
                            subscription.seek(position);
                            self.slot.update(|c| {
                                c.state = WorkerState::Running;
                                c.checkpoint = saved;
                                c.position = position;
                            });
                            self.report_progress(position);
                            continue;
                        }
                        Paused::Exit(exit) => return Ok(exit),
                    }
                }
                Step::Batch(batch) => match batch? {
                    Some(batch) => batch,
                    None => return Ok(Exit::Shutdown),
                },
            };
            let head = batch.head;
            self.slot.update(|c| c.head = c.head.max(head));
            let span = tracing::debug_span!(
                "batch",
                projection = %self.slot.name,
                partition = self.slot.partition,
                from_position = batch.events.first().map_or(0, |e| e.position),
                to_position = batch.events.last().map_or(0, |e| e.position),
                events = batch.events.len(),
                head,
            );
            let interrupted = self
                .handle_batch(lease, &batch.events, &mut position, &mut blocked)
                .instrument(span)
                .await?;
            if interrupted.is_none() {
                position = batch.scanned_to;
            }
            if matches!(interrupted, Some(Exit::LeaseLost)) {
                return Ok(Exit::LeaseLost);
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
            self.report_progress(position);
            if let Some(exit) = interrupted {
                return Ok(exit);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fenced() -> CoordinationError {
        CoordinationError::Fenced {
            name: "p".into(),
            partition: 0,
            fence: 1,
            current: 2,
        }
    }

    #[derive(Debug, thiserror::Error)]
    #[error("the transaction failed")]
    struct Wrapped(#[source] CoordinationError);

    #[test]
    fn lost_leases_are_recognised_in_handler_errors() {
        let direct: BoxError = Box::new(fenced());
        assert!(is_fenced(&*direct));
        let wrapped: BoxError = Box::new(Wrapped(fenced()));
        assert!(is_fenced(&*wrapped));
        let other: BoxError = "boom".into();
        assert!(!is_fenced(&*other));
        let backend: BoxError = Box::new(CoordinationError::Backend("down".into()));
        assert!(!is_fenced(&*backend));
    }
}
