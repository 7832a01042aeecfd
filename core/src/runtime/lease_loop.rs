//! The lease loop of a partition's worker: take the lease, work while holding it, hand it
//! over, retry after a transient failure, stop after a fatal one.

use std::time::Duration;

use crate::coordination::{Lease, LeaseStore};
use crate::error::StoreError;
use crate::projection::WorkerState;
use crate::runtime::backoff;
use crate::runtime::slot::Slot;
use crate::runtime::status::{FAILING_AFTER, StatusCell};
use crate::store::EventStore;
use crate::subscription::{Batch, Shutdown, Subscription};

/// Why a worker left its work under a lease.
pub(crate) enum Exit {
    Shutdown,
    LeaseLost,
    /// The members changed and another worker should hold the partition.
    Handoff,
}

/// A failure inside the lease loop.
pub(crate) enum Failure<E> {
    /// Retried after a pause (store unavailable, and so on).
    Transient(E),
    /// Ends the worker (a failure policy that stops, a handler that cannot go on).
    Fatal(E),
}

/// The worker of one partition, as [`hold`] runs it.
pub(crate) trait PartitionWorker {
    type Leases: LeaseStore;
    type Error: std::fmt::Display;

    /// What the worker runs, in log messages ("projection", "process").
    const KIND: &'static str;

    fn slot(&self) -> &Slot<Self::Leases>;

    /// Takes the partition's lease; `None` on shutdown.
    async fn acquire(&mut self) -> Option<Lease>;

    /// Works while holding `lease`.
    async fn run_with_lease(&mut self, lease: &Lease) -> Result<Exit, Failure<Self::Error>>;

    /// How long to wait after a first transient failure before taking the lease again; the
    /// waits after further failures in a row double (with jitter) up to the runner's
    /// `lease_retry`.
    fn retry_pause(&self) -> Duration;
}

/// Runs `worker` until shutdown (`Ok`) or a fatal failure (`Err`, with the partition marked
/// stopped).
pub(crate) async fn hold<W: PartitionWorker>(worker: &mut W) -> Result<(), W::Error> {
    let mut pauses = None;
    loop {
        worker.slot().set_state(WorkerState::WaitingForLease);
        let Some(lease) = worker.acquire().await else {
            worker.slot().set_state(WorkerState::Finished);
            return Ok(());
        };
        let run = worker.run_with_lease(&lease).await;
        if run.is_ok() {
            worker.slot().update(StatusCell::recovered);
        }
        match run {
            Ok(Exit::Shutdown) => {
                worker.slot().release(&lease).await;
                worker.slot().set_state(WorkerState::Finished);
                return Ok(());
            }
            Ok(Exit::LeaseLost) => tracing::warn!(fence = lease.fence, "lease lost"),
            Ok(Exit::Handoff) => {
                tracing::info!(fence = lease.fence, "handing the partition over");
                worker.slot().release(&lease).await;
            }
            Err(Failure::Transient(error)) => {
                let failures = worker.slot().failed(error.to_string());
                let first = worker.retry_pause();
                if failures == 1 {
                    pauses = None;
                }
                let pause = pauses
                    .get_or_insert_with(|| {
                        backoff::jittered(first, worker.slot().runner.lease_retry)
                    })
                    .next()
                    .unwrap_or(first);
                if failures >= FAILING_AFTER {
                    tracing::error!(
                        %error,
                        failures,
                        ?pause,
                        "{} partition keeps failing; retrying",
                        W::KIND
                    );
                } else {
                    tracing::warn!(%error, ?pause, "{} partition interrupted; retrying", W::KIND);
                }
                tokio::select! {
                    () = worker.slot().shutdown.triggered() => {}
                    () = tokio::time::sleep(pause) => {}
                }
            }
            Err(Failure::Fatal(error)) => {
                tracing::error!(%error, "{} partition stopped", W::KIND);
                worker.slot().release(&lease).await;
                let message = error.to_string();
                worker.slot().update(|c| {
                    c.state = WorkerState::Stopped;
                    c.error = Some(message);
                });
                return Err(error);
            }
        }
    }
}

/// A worker's next batch: read at once when `polled` is false (its first read under a
/// lease, so that a worker retrying after a failure finds out at once whether it gets
/// through, even with no new events), else waiting for new events.
pub(crate) async fn next_batch<S: EventStore>(
    subscription: &mut Subscription<S>,
    shutdown: &Shutdown,
    polled: bool,
) -> Result<Option<Batch>, StoreError> {
    if polled {
        subscription.next(shutdown).await
    } else {
        subscription.poll().await.map(Some)
    }
}
