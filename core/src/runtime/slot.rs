//! One partition's place in a runner: its lease (taken, renewed, released) and its status cell.

use std::future::Future;
use std::sync::Arc;

use tokio::time::Instant;

use crate::coordination::{Assignment, CoordinationError, Lease, LeaseStore, membership};
use crate::projection::{RunnerOptions, WorkerState};
use crate::runtime::status::{Shared, StatusCell};
use crate::subscription::Shutdown;

/// Makes this runner's worker a member of `name`: returns the task that keeps the membership
/// (to run until `shutdown`) and the assignment of the `partitions` it keeps current.
pub(crate) fn join_members<L: LeaseStore>(
    leases: L,
    name: String,
    runner: &RunnerOptions,
    partitions: u32,
    shutdown: Shutdown,
) -> (impl Future<Output = ()> + Send + use<L>, Assignment) {
    let (view, members) = tokio::sync::watch::channel(Vec::new());
    let task = membership(
        leases,
        name,
        runner.worker_id.clone(),
        runner.lease_ttl,
        view,
        shutdown,
    );
    let assignment = Assignment::new(members, runner.worker_id.clone(), partitions);
    (task, assignment)
}

/// What a worker answers while it waits for its lease.
pub(crate) trait Idle {
    /// Completes when a message came in and was answered; `false` when the worker should
    /// stop (its handle is gone).
    async fn answer(&mut self) -> bool;
}

/// A worker that takes no messages: it only waits.
#[derive(Debug)]
pub(crate) struct NoMessages;

impl Idle for NoMessages {
    async fn answer(&mut self) -> bool {
        std::future::pending().await
    }
}

/// The lease and status of one partition of a projection or process manager, in this runner.
#[derive(Debug)]
pub(crate) struct Slot<L> {
    pub(crate) leases: L,
    pub(crate) name: String,
    pub(crate) partition: u32,
    pub(crate) runner: Arc<RunnerOptions>,
    pub(crate) shutdown: Shutdown,
    pub(crate) shared: Arc<Shared>,
    pub(crate) assignment: Assignment,
    /// When the lease is due for renewal.
    pub(crate) renew_at: Instant,
}

impl<L: LeaseStore> Slot<L> {
    pub(crate) fn new(
        leases: L,
        name: String,
        partition: u32,
        runner: Arc<RunnerOptions>,
        shutdown: Shutdown,
        shared: Arc<Shared>,
        assignment: Assignment,
    ) -> Self {
        Self {
            leases,
            name,
            partition,
            runner,
            shutdown,
            shared,
            assignment,
            renew_at: Instant::now(),
        }
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut StatusCell)) {
        self.shared.update(&self.name, self.partition, f);
    }

    pub(crate) fn set_state(&self, state: WorkerState) {
        self.update(|c| c.state = state);
    }

    /// Records a transient failure in the status and the
    /// `factum_projection_transient_failures_total` counter; returns how many there were in
    /// a row.
    pub(crate) fn failed(&self, error: String) -> u32 {
        let mut failures = 0;
        self.update(|c| failures = c.failed(error));
        #[cfg(feature = "metrics")]
        metrics::counter!(
            "factum_projection_transient_failures_total",
            "projection" => self.name.clone(),
            "partition" => self.partition.to_string(),
        )
        .increment(1);
        failures
    }

    pub(crate) async fn release(&self, lease: &Lease) {
        if let Err(error) = self.leases.release(lease).await {
            tracing::warn!(%error, "could not release the lease; it will expire");
        }
    }

    /// Takes the lease, waiting while someone else holds it or while the partition is
    /// assigned to another worker, and answering `idle` meanwhile; `None` on shutdown.
    pub(crate) async fn acquire(&mut self, idle: &mut impl Idle) -> Option<Lease> {
        loop {
            if self.shutdown.is_triggered() {
                return None;
            }
            if !self.assignment.owns(self.partition) {
                tokio::select! {
                    () = self.shutdown.triggered() => return None,
                    () = self.assignment.changed() => {}
                    () = tokio::time::sleep(self.runner.lease_retry) => {}
                    answered = idle.answer() => if !answered {
                        return None;
                    },
                }
                continue;
            }
            match self
                .leases
                .acquire(
                    &self.name,
                    self.partition,
                    &self.runner.worker_id,
                    self.runner.lease_ttl,
                )
                .await
            {
                Ok(Some(lease)) => {
                    self.renew_at = Instant::now() + self.runner.lease_ttl / 3;
                    return Some(lease);
                }
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, "could not try the lease"),
            }
            let retry = tokio::time::sleep(self.runner.lease_retry);
            tokio::pin!(retry);
            loop {
                tokio::select! {
                    () = self.shutdown.triggered() => return None,
                    () = &mut retry => break,
                    answered = idle.answer() => if !answered {
                        return None;
                    },
                }
            }
        }
    }

    /// Renews the lease when a third of its time has passed; `false` when it was lost.
    pub(crate) async fn renew_if_due(&mut self, lease: &Lease) -> Result<bool, CoordinationError> {
        if Instant::now() < self.renew_at {
            return Ok(true);
        }
        let held = self.leases.renew(lease, self.runner.lease_ttl).await?;
        self.renew_at = Instant::now() + self.runner.lease_ttl / 3;
        Ok(held)
    }
}
