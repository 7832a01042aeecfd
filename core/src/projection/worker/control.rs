//! Replaying parked events and pausing for a rebuild.

use std::collections::{BTreeSet, HashMap};

use chrono::Utc;

use super::{Attempt, Control, Exit, Failure, Paused, Worker};
use crate::coordination::{
    CheckpointStore, DeadLetterStore, Lease, LeaseStore, ParkReason, ParkedEvent,
};
use crate::projection::WorkerState;
use crate::store::EventStore;
use crate::stream::StreamId;

impl<S, C, L, D> Worker<S, C, L, D>
where
    S: EventStore,
    C: CheckpointStore,
    L: LeaseStore,
    D: DeadLetterStore,
{
    /// Replays the parked events of streams with a replay request, each stream in order;
    /// `Some` when shutdown or a lost lease interrupted it.
    pub(super) async fn replay_requested(
        &mut self,
        lease: &Lease,
        blocked: &mut HashMap<StreamId, u64>,
    ) -> Result<Option<Exit>, Failure> {
        let parked = self
            .dead_letters
            .list_partition(&self.slot.name, self.slot.partition)
            .await?;
        let streams: BTreeSet<StreamId> = parked
            .iter()
            .filter(|p| p.replay_requested)
            .map(|p| p.stream_id.clone())
            .collect();
        for stream in streams {
            let mut entries: Vec<&ParkedEvent> =
                parked.iter().filter(|p| p.stream_id == stream).collect();
            entries.sort_by_key(|p| p.position);
            tracing::info!(stream = %stream, events = entries.len(), "replaying parked events");
            let mut failed_at = None;
            for entry in entries {
                if let Some(behind) = failed_at {
                    let mut waiting = entry.clone();
                    waiting.reason = ParkReason::Waiting { behind };
                    waiting.replay_requested = false;
                    self.dead_letters.park(&waiting).await?;
                    continue;
                }
                let attempt = match self.store.event_by_id(entry.event_id).await {
                    Ok(Some(event)) => self.attempt(&event, lease).await?,
                    Ok(None) => {
                        tracing::error!(
                            position = entry.position,
                            event_id = %entry.event_id,
                            "a parked event is no longer in the store; dropping the entry"
                        );
                        self.dead_letters
                            .remove(&self.slot.name, entry.position)
                            .await?;
                        continue;
                    }
                    // Still undecodable: it stays parked, with the new error.
                    Err(error) if error.undecodable_event().is_some() => {
                        Attempt::Failed(Box::new(error), 1)
                    }
                    Err(error) => return Err(error.into()),
                };
                match attempt {
                    Attempt::Interrupted(exit) => return Ok(Some(exit)),
                    Attempt::Handled => {
                        self.dead_letters
                            .remove(&self.slot.name, entry.position)
                            .await?;
                    }
                    Attempt::Failed(error, attempts) => {
                        let earlier = match &entry.reason {
                            ParkReason::Failed { attempts, .. } => *attempts,
                            ParkReason::Waiting { .. } => 0,
                        };
                        let mut again = entry.clone();
                        again.reason = ParkReason::Failed {
                            error: error.to_string(),
                            attempts: earlier.saturating_add(attempts),
                        };
                        again.replay_requested = false;
                        again.parked_at = Utc::now();
                        self.dead_letters.park(&again).await?;
                        failed_at = Some(entry.position);
                    }
                }
            }
            match failed_at {
                Some(position) => {
                    blocked.insert(stream, position);
                }
                None => {
                    tracing::info!(stream = %stream, "parked events replayed");
                    blocked.remove(&stream);
                }
            }
        }
        Ok(None)
    }

    /// Waits while paused by a rebuild, keeping the lease.
    pub(super) async fn paused(&mut self, lease: &Lease) -> Result<Paused, Failure> {
        self.slot.set_state(WorkerState::Paused);
        loop {
            tokio::select! {
                () = self.slot.shutdown.triggered() => return Ok(Paused::Exit(Exit::Shutdown)),
                () = tokio::time::sleep_until(self.slot.renew_at) => {
                    if !self.slot.renew_if_due(lease).await? {
                        return Ok(Paused::Exit(Exit::LeaseLost));
                    }
                }
                control = self.control.recv() => match control {
                    None => return Ok(Paused::Exit(Exit::Shutdown)),
                    Some(Control::Pause(reply)) => {
                        let _ = reply.send(Some(lease.clone()));
                    }
                    Some(Control::ReplayParked) => {}
                    Some(Control::Resume { progress }) => {
                        self.progress = progress;
                        return Ok(Paused::Resume);
                    }
                },
            }
        }
    }
}
