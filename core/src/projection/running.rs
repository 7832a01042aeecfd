//! The handle on running projections: status, waiting, parked events, rebuilds.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use crate::coordination::{
    CheckpointStore, Coordination, CoordinationError, Lease, MemoryCoordination, ParkedEvent,
};
use crate::error::BoxError;
use crate::projection::runner::RunningProjection;
use crate::projection::worker::Control;
use crate::projection::{Health, PartitionStatus, ProjectionError, RebuildProgress, ResetContext};
use crate::runtime::status::Shared;
use crate::runtime::tasks::stop_all;
use crate::store::EventStore;
use crate::stream::StreamId;
use crate::subscription::Shutdown;

/// The running projections of a [`ProjectionRunner`](super::ProjectionRunner).
///
/// [`shutdown`](Self::shutdown) stops them gracefully (each partition saves its checkpoint
/// and releases its lease). Dropping the handle aborts the workers where they are, as a crash
/// would: their leases then expire, and the events after the last saved checkpoints are
/// delivered again.
#[derive(Debug)]
pub struct RunningProjections<S, C = MemoryCoordination> {
    pub(super) store: S,
    pub(super) coordination: C,
    pub(super) shutdown: Shutdown,
    pub(super) shared: Arc<Shared>,
    pub(super) tasks: JoinSet<Result<(), ProjectionError>>,
    pub(super) projections: HashMap<String, RunningProjection>,
}

impl<S, C> RunningProjections<S, C>
where
    S: EventStore,
    C: Coordination,
{
    /// Stops every worker gracefully and waits for them; returns the first error a worker
    /// stopped with.
    pub async fn shutdown(mut self) -> Result<(), ProjectionError> {
        stop_all(&self.shutdown, &mut self.tasks, "projection").await
    }

    /// The state of every partition.
    pub fn status(&self) -> Vec<PartitionStatus> {
        self.shared.snapshot()
    }

    /// Checks every partition: one behind the readable head whose position has not moved
    /// for `stalled_after` is stalled; one stopped by its failure policy is reported too.
    /// Committed events kept unreadable for [`RunnerOptions::head_held_back_after`](super::RunnerOptions::head_held_back_after)
    /// (an open transaction holding the store's head back) are reported as
    /// [`HealthProblem::HeadHeldBack`](super::HealthProblem::HeadHeldBack), naming the
    /// transaction's session when the store can tell.
    pub fn health(&self, stalled_after: Duration) -> Health {
        self.shared.health(stalled_after)
    }

    /// Waits until every partition of `name` in this runner has saved a checkpoint at or
    /// after `position` (read-your-writes for a read model). Fails when a partition stops
    /// first. A partition held by another process does not move here: bound the wait with a
    /// timeout when several processes share the projection.
    pub async fn wait_for(&self, name: &str, position: u64) -> Result<(), ProjectionError> {
        if !self.projections.contains_key(name) {
            return Err(ProjectionError::UnknownProjection {
                name: name.to_owned(),
            });
        }
        self.shared
            .wait_for(name, position)
            .await
            .map_err(|partition| ProjectionError::NotRunning {
                name: name.to_owned(),
                partition,
            })
    }

    /// The parked events of `name`, by position.
    pub async fn parked(&self, name: &str) -> Result<Vec<ParkedEvent>, ProjectionError> {
        Ok(self.coordination.list(name).await?)
    }

    /// Asks for the parked events of `name` (of one stream, or all) to be handled again, in
    /// order, by the workers holding their partitions (in any process). An event that fails
    /// again stays parked, with the events of its stream behind it. Returns how many were
    /// marked.
    ///
    /// A replayed event comes after later events of other streams: a handler that skips
    /// redelivered events must recognise them per stream (by stream version) or by event id,
    /// never by global position, or it skips the replayed event and the event is lost.
    pub async fn replay_parked(
        &self,
        name: &str,
        stream: Option<&StreamId>,
    ) -> Result<usize, ProjectionError> {
        let marked = self.coordination.request_replay(name, stream).await?;
        if let Some(running) = self.projections.get(name) {
            for control in &running.controls {
                let _ = control.send(Control::ReplayParked);
            }
        }
        Ok(marked)
    }

    /// Rebuilds `name`: pauses its partitions, resets it (empties the read model, removes its
    /// parked events and sets its checkpoints to 0) and replays every event, while appends
    /// continue. `progress` is called after each batch, and the progress is logged as
    /// `tracing` events; returns once every partition has reached the head position seen at
    /// the start, and the projection carries on live.
    ///
    /// The reset is one transaction when the projection supports it
    /// ([`Projection::reset_in`](super::Projection::reset_in), as the PostgreSQL store's
    /// transactional projections do): a failure or a crash leaves either the old read model,
    /// checkpoints and parked events, or the reset ones. Otherwise the steps run one by one,
    /// in an order that a failure or a crash between any two of them cannot lose an event:
    /// first the checkpoints go to 0, then the parked events are removed, then
    /// [`Projection::reset`](super::Projection::reset) empties the read model. Interrupted
    /// after the checkpoints moved, the projection replays every event over the read model it
    /// had (which idempotent handlers leave as it was), and none is lost; rebuild again to
    /// start from an empty read model. After a failure the partitions resume from what is
    /// stored, as after a restart.
    ///
    /// Every partition must be held by this runner (else [`ProjectionError::NotOwned`], and
    /// nothing is changed).
    pub async fn rebuild<F>(&self, name: &str, mut progress: F) -> Result<u64, ProjectionError>
    where
        F: FnMut(&RebuildProgress) + Send,
    {
        let running =
            self.projections
                .get(name)
                .ok_or_else(|| ProjectionError::UnknownProjection {
                    name: name.to_owned(),
                })?;
        // Resumes the paused partitions if this stops early (an error, or the caller dropping
        // the future), so that no partition stays paused.
        let mut guard = ResumeGuard {
            controls: &running.controls,
            paused: 0,
        };
        let mut leases = Vec::new();
        for (partition, control) in (0u32..).zip(&running.controls) {
            let (reply, replied) = oneshot::channel();
            let paused = if control.send(Control::Pause(reply)).is_ok() {
                replied.await.ok()
            } else {
                None
            };
            match paused {
                Some(Some(lease)) => {
                    leases.push(lease);
                    guard.paused += 1;
                }
                other => {
                    return Err(if other.is_some() {
                        ProjectionError::NotOwned {
                            name: name.to_owned(),
                            partition,
                        }
                    } else {
                        ProjectionError::NotRunning {
                            name: name.to_owned(),
                            partition,
                        }
                    });
                }
            }
        }
        let target = self.store.head_position().await?;
        if let Err(error) = self.reset(name, running, leases).await {
            tracing::error!(
                projection = name,
                %error,
                "rebuild failed; the partitions resume from the stored checkpoints"
            );
            #[cfg(feature = "metrics")]
            metrics::counter!(
                "factum_projection_rebuild_failures_total",
                "projection" => name.to_owned()
            )
            .increment(1);
            return Err(error);
        }
        tracing::info!(projection = name, target, "rebuild started");
        let (tx, mut rx) = mpsc::unbounded_channel();
        guard.paused = 0;
        resume(&running.controls, Some(&tx));
        drop(tx);
        let mut positions = vec![0u64; running.controls.len()];
        loop {
            let position = positions.iter().copied().min().unwrap_or(target);
            let report = RebuildProgress {
                name: name.to_owned(),
                position: position.min(target),
                target,
            };
            tracing::info!(
                projection = name,
                position = report.position,
                target,
                "rebuild progress"
            );
            progress(&report);
            if position >= target {
                break;
            }
            let Some((partition, position)) = rx.recv().await else {
                return Err(ProjectionError::NotRunning {
                    name: name.to_owned(),
                    partition: 0,
                });
            };
            if let Some(slot) = usize::try_from(partition)
                .ok()
                .and_then(|p| positions.get_mut(p))
            {
                *slot = position;
            }
        }
        tracing::info!(projection = name, target, "rebuild done");
        Ok(target)
    }

    /// Resets `name`'s read model, parked events and checkpoints, its partitions paused
    /// under `leases`: in one transaction when the projection can, else step by step.
    async fn reset(
        &self,
        name: &str,
        running: &RunningProjection,
        leases: Vec<Lease>,
    ) -> Result<(), ProjectionError> {
        let failed = |source: BoxError| match source.downcast::<CoordinationError>() {
            Ok(coordination) => ProjectionError::Coordination(*coordination),
            Err(source) => ProjectionError::Reset {
                name: name.to_owned(),
                source,
            },
        };
        let context = ResetContext::new(leases);
        if running
            .projection
            .reset_in(&context)
            .await
            .map_err(failed)?
        {
            tracing::info!(
                projection = name,
                "read model, parked events and checkpoints reset"
            );
            return Ok(());
        }
        // Checkpoints first: from here on an interruption replays every event, over the read
        // model as it is, so the parked events can go, and then the read model.
        for lease in &context.leases {
            CheckpointStore::save(&self.coordination, lease, 0).await?;
        }
        self.coordination.clear(name).await?;
        running.projection.reset().await.map_err(failed)?;
        tracing::info!(
            projection = name,
            "checkpoints, parked events and read model reset"
        );
        Ok(())
    }

    /// The names of the running projections, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.projections.keys().cloned().collect();
        names.sort_unstable();
        names
    }

    /// The coordination stores (checkpoints, leases, dead letters), for inspection.
    pub fn coordination(&self) -> &C {
        &self.coordination
    }
}

/// See [`RunningProjections::rebuild`].
struct ResumeGuard<'a> {
    controls: &'a [mpsc::UnboundedSender<Control>],
    /// How many partitions (the first ones) are paused and not yet resumed.
    paused: usize,
}

impl Drop for ResumeGuard<'_> {
    fn drop(&mut self) {
        if self.paused > 0 {
            resume(&self.controls[..self.paused], None);
        }
    }
}

fn resume(
    controls: &[mpsc::UnboundedSender<Control>],
    progress: Option<&mpsc::UnboundedSender<(u32, u64)>>,
) {
    for control in controls {
        let _ = control.send(Control::Resume {
            progress: progress.cloned(),
        });
    }
}
