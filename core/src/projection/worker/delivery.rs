//! Delivering events to the projection: batches, retries, parking.

use std::collections::{HashMap, HashSet};

use tracing::Instrument;

use super::{Attempt, Delivery, Exit, Failure, Worker, is_fenced};
use crate::coordination::{
    CheckpointStore, DeadLetterStore, Lease, LeaseStore, ParkReason, ParkedEvent, partition_of,
};
use crate::event::RecordedEvent;
use crate::projection::{HandleContext, OnExhausted, ProjectionError};
use crate::store::EventStore;
use crate::stream::StreamId;

impl<S, C, L, D> Worker<S, C, L, D>
where
    S: EventStore,
    C: CheckpointStore,
    L: LeaseStore,
    D: DeadLetterStore,
{
    pub(super) fn report_progress(&mut self, position: u64) {
        if let Some(progress) = &self.progress {
            if progress.send((self.slot.partition, position)).is_err() {
                self.progress = None;
            }
        }
    }

    /// Handles the events of a batch that belong to this partition; `Some` when shutdown or
    /// a lost lease interrupted it (then `position` is the last event done).
    pub(super) async fn handle_batch(
        &mut self,
        lease: &Lease,
        events: &[RecordedEvent],
        position: &mut u64,
        blocked: &mut HashMap<StreamId, u64>,
    ) -> Result<Option<Exit>, Failure> {
        let partitions = self.options.partitions;
        if self.batches {
            let mine: Vec<&RecordedEvent> = events
                .iter()
                .filter(|e| partition_of(e.stream_id.as_str(), partitions) == self.slot.partition)
                .collect();
            if mine.len() > 1 && !mine.iter().any(|e| blocked.contains_key(&e.stream_id)) {
                if self.slot.shutdown.is_triggered() {
                    return Ok(Some(Exit::Shutdown));
                }
                if !self.slot.renew_if_due(lease).await? {
                    return Ok(Some(Exit::LeaseLost));
                }
                let context = HandleContext::new(lease.clone(), 1);
                let span = tracing::info_span!(
                    "handle_batch",
                    projection = %self.slot.name,
                    partition = self.slot.partition,
                    from_position = mine.first().map_or(0, |e| e.position),
                    to_position = mine.last().map_or(0, |e| e.position),
                    events = mine.len(),
                    handled = tracing::field::Empty,
                );
                if !span.is_disabled() {
                    let mut linked = HashSet::new();
                    for trace in mine.iter().filter_map(|e| e.metadata.trace.as_ref()) {
                        if linked.insert(&trace.traceparent) {
                            crate::trace::add_link(&span, trace);
                        }
                    }
                }
                let handled = self
                    .projection
                    .handle_batch(&mine, &context)
                    .instrument(span.clone())
                    .await;
                span.record("handled", matches!(handled, Ok(true)));
                drop(span);
                match handled {
                    Ok(true) => {
                        if let Some(last) = events.last() {
                            *position = last.position;
                            let p = last.position;
                            self.slot.update(|c| c.position = p);
                        }
                        return Ok(None);
                    }
                    Ok(false) => self.batches = false,
                    Err(error) if is_fenced(&*error) => {
                        tracing::warn!(%error, "the batch handler found the lease taken over");
                        return Ok(Some(Exit::LeaseLost));
                    }
                    Err(error) => tracing::warn!(
                        events = mine.len(),
                        %error,
                        "batch handler failed; handling its events one by one"
                    ),
                }
            }
        }
        for event in events {
            if self.slot.shutdown.is_triggered() {
                return Ok(Some(Exit::Shutdown));
            }
            if partition_of(event.stream_id.as_str(), partitions) == self.slot.partition {
                if !self.slot.renew_if_due(lease).await? {
                    return Ok(Some(Exit::LeaseLost));
                }
                match self.deliver(lease, event, blocked).await? {
                    Delivery::Handled | Delivery::Parked => {}
                    Delivery::Interrupted(exit) => return Ok(Some(exit)),
                }
            }
            *position = event.position;
            let p = event.position;
            self.slot.update(|c| c.position = p);
        }
        Ok(None)
    }

    /// Tries the handler per the failure policy, renewing the lease between attempts.
    pub(super) async fn attempt(
        &mut self,
        event: &RecordedEvent,
        lease: &Lease,
    ) -> Result<Attempt, Failure> {
        let policy = self.options.failure;
        let mut waits = policy.waits();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let context = HandleContext::new(lease.clone(), attempt);
            match self.projection.handle(event, &context).await {
                Ok(()) => return Ok(Attempt::Handled),
                Err(error) if is_fenced(&*error) => {
                    tracing::warn!(
                        position = event.position,
                        %error,
                        "the handler found the lease taken over"
                    );
                    return Ok(Attempt::Interrupted(Exit::LeaseLost));
                }
                Err(error) => {
                    tracing::warn!(
                        position = event.position,
                        stream = %event.stream_id,
                        event_type = %event.event_type,
                        attempt,
                        %error,
                        "projection handler failed"
                    );
                    if attempt >= policy.max_attempts {
                        return Ok(Attempt::Failed(error, attempt));
                    }
                    tokio::select! {
                        () = self.slot.shutdown.triggered() => {
                            return Ok(Attempt::Interrupted(Exit::Shutdown));
                        }
                        () = tokio::time::sleep(
                            waits.next().unwrap_or(policy.max_backoff),
                        ) => {}
                    }
                    if !self.slot.renew_if_due(lease).await? {
                        return Ok(Attempt::Interrupted(Exit::LeaseLost));
                    }
                }
            }
        }
    }

    pub(super) async fn deliver(
        &mut self,
        lease: &Lease,
        event: &RecordedEvent,
        blocked: &mut HashMap<StreamId, u64>,
    ) -> Result<Delivery, Failure> {
        // Below a stream's first parked event, an event was handled before and is delivered
        // again (from a checkpoint below it: a crash, an interrupted rebuild); the parked
        // event itself keeps its entry and reason.
        if let Some(&behind) = blocked.get(&event.stream_id) {
            if event.position == behind {
                return Ok(Delivery::Parked);
            }
        }
        if let Some(&behind) = blocked
            .get(&event.stream_id)
            .filter(|&&behind| event.position > behind)
        {
            tracing::info!(
                position = event.position,
                stream = %event.stream_id,
                behind,
                "parking an event behind a parked event of its stream"
            );
            self.park(event, ParkReason::Waiting { behind }).await?;
            return Ok(Delivery::Parked);
        }
        let span = tracing::info_span!(
            "handle",
            projection = %self.slot.name,
            partition = self.slot.partition,
            stream = %event.stream_id,
            event_type = %event.event_type,
            position = event.position,
        );
        if let Some(context) = &event.metadata.trace {
            crate::trace::set_parent(&span, context);
        }
        match self.attempt(event, lease).instrument(span).await? {
            Attempt::Interrupted(exit) => Ok(Delivery::Interrupted(exit)),
            Attempt::Handled => Ok(Delivery::Handled),
            Attempt::Failed(error, attempts) => match self.options.failure.on_exhausted {
                OnExhausted::Park => {
                    tracing::error!(
                        position = event.position,
                        stream = %event.stream_id,
                        attempts,
                        %error,
                        "parking an event whose handler keeps failing"
                    );
                    self.park(
                        event,
                        ParkReason::Failed {
                            error: error.to_string(),
                            attempts,
                        },
                    )
                    .await?;
                    blocked.insert(event.stream_id.clone(), event.position);
                    Ok(Delivery::Parked)
                }
                OnExhausted::Stop => Err(Failure::Fatal(ProjectionError::HandlerFailed {
                    name: self.slot.name.clone(),
                    position: event.position,
                    stream: event.stream_id.clone(),
                    attempts,
                    source: error,
                })),
            },
        }
    }

    pub(super) async fn park(
        &self,
        event: &RecordedEvent,
        reason: ParkReason,
    ) -> Result<(), Failure> {
        let parked = ParkedEvent::new(
            self.slot.name.clone(),
            self.slot.partition,
            event.position,
            event.event_id,
            event.stream_id.clone(),
            event.event_type.clone(),
            reason,
        );
        if let Err(error) = self.dead_letters.park(&parked).await {
            tracing::error!(
                position = event.position,
                stream = %event.stream_id,
                %error,
                "could not park the event in the dead-letter store; the partition retries it"
            );
            return Err(Failure::Transient(ProjectionError::ParkFailed {
                name: self.slot.name.clone(),
                position: event.position,
                stream: event.stream_id.clone(),
                source: Box::new(error),
            }));
        }
        Ok(())
    }

    /// The streams of this partition with parked events, each with its first parked position.
    pub(super) async fn load_blocked(&self) -> Result<HashMap<StreamId, u64>, Failure> {
        let mut blocked = HashMap::new();
        for parked in self
            .dead_letters
            .list_partition(&self.slot.name, self.slot.partition)
            .await?
        {
            blocked.entry(parked.stream_id).or_insert(parked.position);
        }
        Ok(blocked)
    }
}
