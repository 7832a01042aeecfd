//! Projections: read models fed by subscriptions, with checkpoints, partitions, leases, a
//! failure policy per projection, parked events, rebuilds and lag reporting.
//!
//! A [`Projection`] handles recorded events of the types it names. A [`ProjectionRunner`]
//! starts every registered projection together: each is split into
//! [`ProjectionOptions::partitions`] partitions by a stable hash of the stream name
//! ([`partition_of`](crate::coordination::partition_of)), and each partition is processed by the one worker,
//! across all processes sharing the [`LeaseStore`](crate::coordination::LeaseStore), that holds its lease.
//! A partition reads only its own streams' events
//! ([`ReadAll::partition`](crate::store::ReadAll::partition)), so the partitions read the log
//! once in total.
//!
//! # Delivery
//!
//! At-least-once, in order per stream: a partition handles its events one at a time in global
//! order and saves its checkpoint after each batch, so a crash between handling and saving
//! delivers the events of that batch again. Make handlers idempotent (upsert by event id or
//! stream version), or keep the read model and the checkpoint in one transaction (the
//! PostgreSQL store's transactional projections). A worker whose lease was taken over cannot
//! move the checkpoint any more (see [`CheckpointStore::claim`](crate::coordination::CheckpointStore::claim)).
//!
//! # Failures
//!
//! A failing handler is retried with exponential backoff ([`FailurePolicy`]); then the event
//! is either parked in the [`DeadLetterStore`](crate::coordination::DeadLetterStore) (later events of the same stream are parked
//! behind it, so the stream's order holds, while other streams flow) or the partition stops.
//! Parked events are listed with [`RunningProjections::parked`] and replayed, once the cause
//! is fixed, with [`RunningProjections::replay_parked`].
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use factum::{BoxError, MemoryStore, Projection, RecordedEvent};
//! use factum::projection::{ProjectionOptions, ProjectionRunner};
//!
//! #[derive(Default)]
//! struct OrderCount(AtomicU64);
//!
//! impl Projection for OrderCount {
//!     fn name(&self) -> &str { "order_count" }
//!     fn event_types(&self) -> Vec<String> { vec!["OrderPlaced".into()] }
//!     async fn handle(&self, _event: &RecordedEvent) -> Result<(), BoxError> {
//!         self.0.fetch_add(1, Ordering::Relaxed);
//!         Ok(())
//!     }
//! }
//!
//! let running = ProjectionRunner::new(MemoryStore::new())
//!     .register(OrderCount::default(), ProjectionOptions::new())
//!     .start();
//! running.shutdown().await?;
//! # Ok::<(), factum::projection::ProjectionError>(())
//! # }).unwrap();
//! ```

use std::future::Future;
use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::coordination::{CoordinationError, Lease};
use crate::error::{BoxError, StoreError};
use crate::event::RecordedEvent;
use crate::stream::StreamId;

mod options;
mod runner;
mod running;
mod status;
mod worker;

pub use options::{FailurePolicy, OnExhausted, ProjectionOptions, RunnerOptions};
pub use runner::ProjectionRunner;
pub use running::RunningProjections;
pub use status::{Health, HealthProblem, PartitionStatus, RebuildProgress, WorkerState};

/// A read model fed by events.
///
/// Handlers take `&self`: the partitions of one projection run concurrently, so the read
/// model is shared (behind a lock, a connection pool, or atomics). Delivery is at-least-once
/// and in order per stream; see the [module documentation](self).
pub trait Projection: Send + Sync + 'static {
    /// The projection's name: the key of its checkpoints, leases and parked events. Unique
    /// among the projections and process managers sharing those stores.
    fn name(&self) -> &str;

    /// The stored event types it handles; other events are filtered out by the store and
    /// never decoded. Empty: every event.
    fn event_types(&self) -> Vec<String> {
        Vec::new()
    }

    /// Only events of streams in these categories (all when empty).
    fn categories(&self) -> Vec<String> {
        Vec::new()
    }

    /// Handles one event. An error is retried according to the projection's
    /// [`FailurePolicy`].
    fn handle(&self, event: &RecordedEvent) -> impl Future<Output = Result<(), BoxError>> + Send;

    /// Handles one event knowing the lease it is handled under. The runner calls this; by
    /// default it calls [`handle`](Self::handle).
    ///
    /// A projection whose read model shares a database with the checkpoints overrides it to
    /// save the checkpoint at `event.position` in the handler's transaction, with
    /// `context.lease`'s fence (compare-and-set): then a crash neither loses nor repeats an
    /// event. When that save finds the lease taken over, return the
    /// [`CoordinationError::Fenced`] as the error (boxed): the runner then stops handling
    /// the partition instead of retrying.
    fn handle_in(
        &self,
        event: &RecordedEvent,
        context: &HandleContext,
    ) -> impl Future<Output = Result<(), BoxError>> + Send {
        let _ = context;
        self.handle(event)
    }

    /// Handles several events of one partition together, all or nothing, or declines.
    ///
    /// The runner offers each batch's events of the partition here first (two or more, in
    /// position order, none of them behind a parked event), with the partition's lease.
    ///
    /// - `Ok(true)`: every event was handled. A projection whose read model shares a database
    ///   with the checkpoints handles them in one transaction that also saves the checkpoint
    ///   at the last event's position, with `context.lease`'s fence.
    /// - `Ok(false)` (the default): not supported; the runner hands the events to
    ///   [`handle_in`](Self::handle_in) one by one and does not offer batches again.
    /// - An error must leave nothing applied (the transaction rolled back): the runner then
    ///   hands the same events to `handle_in` one by one, where the failure policy retries and
    ///   parks them individually. A [`CoordinationError::Fenced`] error means that the lease
    ///   was lost, as for `handle_in`.
    fn handle_batch_in(
        &self,
        events: &[&RecordedEvent],
        context: &HandleContext,
    ) -> impl Future<Output = Result<bool, BoxError>> + Send {
        let _ = (events, context);
        async { Ok(false) }
    }

    /// Empties the read model, before a [rebuild](RunningProjections::rebuild): the last
    /// step, after the checkpoints were set to 0 and the parked events removed (unless
    /// [`reset_in`](Self::reset_in) did it all at once). A failure or a crash here leaves the
    /// read model as it is, and every event is delivered again over it.
    fn reset(&self) -> impl Future<Output = Result<(), BoxError>> + Send {
        async { Ok(()) }
    }

    /// Starts a [rebuild](RunningProjections::rebuild) all at once, or declines. The runner
    /// calls it with every partition paused and their leases in `context`.
    ///
    /// - `Ok(true)`: the read model was emptied, the projection's parked events removed and
    ///   every partition's checkpoint set to 0 with its lease's fence, all in one transaction.
    ///   A projection whose read model shares a database with the checkpoints and dead letters
    ///   does this (the PostgreSQL store's transactional projections).
    /// - `Ok(false)` (the default): not supported; the runner sets the checkpoints to 0, then
    ///   removes the parked events, then calls [`reset`](Self::reset), each on its own.
    /// - An error must leave nothing changed (the transaction rolled back). A
    ///   [`CoordinationError::Fenced`] error means that a lease was lost.
    fn reset_in(
        &self,
        context: &ResetContext,
    ) -> impl Future<Output = Result<bool, BoxError>> + Send {
        let _ = context;
        async { Ok(false) }
    }
}

/// What the runner tells [`Projection::reset_in`]: the leases of the projection's partitions,
/// all paused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResetContext {
    /// The lease of every partition, by partition.
    pub leases: Vec<Lease>,
}

impl ResetContext {
    /// A context (for tests of projections outside a runner).
    pub fn new(leases: Vec<Lease>) -> Self {
        Self { leases }
    }
}

/// What the runner tells [`Projection::handle_in`] besides the event.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HandleContext {
    /// The lease the partition is held under (name, partition, fence).
    pub lease: Lease,
    /// Which attempt this is (1 for the first).
    pub attempt: u32,
}

impl HandleContext {
    /// A context (for tests of projections outside a runner).
    pub fn new(lease: Lease, attempt: u32) -> Self {
        Self { lease, attempt }
    }
}

impl<P: Projection> Projection for Arc<P> {
    fn name(&self) -> &str {
        P::name(self)
    }
    fn event_types(&self) -> Vec<String> {
        P::event_types(self)
    }
    fn categories(&self) -> Vec<String> {
        P::categories(self)
    }
    fn handle(&self, event: &RecordedEvent) -> impl Future<Output = Result<(), BoxError>> + Send {
        P::handle(self, event)
    }
    fn handle_in(
        &self,
        event: &RecordedEvent,
        context: &HandleContext,
    ) -> impl Future<Output = Result<(), BoxError>> + Send {
        P::handle_in(self, event, context)
    }
    fn handle_batch_in(
        &self,
        events: &[&RecordedEvent],
        context: &HandleContext,
    ) -> impl Future<Output = Result<bool, BoxError>> + Send {
        P::handle_batch_in(self, events, context)
    }
    fn reset(&self) -> impl Future<Output = Result<(), BoxError>> + Send {
        P::reset(self)
    }
    fn reset_in(
        &self,
        context: &ResetContext,
    ) -> impl Future<Output = Result<bool, BoxError>> + Send {
        P::reset_in(self, context)
    }
}

/// [`Projection`] with boxed futures, so projections of different types run together.
trait ErasedProjection: Send + Sync {
    fn handle<'a>(
        &'a self,
        event: &'a RecordedEvent,
        context: &'a HandleContext,
    ) -> BoxFuture<'a, Result<(), BoxError>>;
    fn handle_batch<'a>(
        &'a self,
        events: &'a [&'a RecordedEvent],
        context: &'a HandleContext,
    ) -> BoxFuture<'a, Result<bool, BoxError>>;
    fn reset(&self) -> BoxFuture<'_, Result<(), BoxError>>;
    fn reset_in<'a>(&'a self, context: &'a ResetContext) -> BoxFuture<'a, Result<bool, BoxError>>;
}

impl<P: Projection> ErasedProjection for P {
    fn handle<'a>(
        &'a self,
        event: &'a RecordedEvent,
        context: &'a HandleContext,
    ) -> BoxFuture<'a, Result<(), BoxError>> {
        Box::pin(Projection::handle_in(self, event, context))
    }
    fn handle_batch<'a>(
        &'a self,
        events: &'a [&'a RecordedEvent],
        context: &'a HandleContext,
    ) -> BoxFuture<'a, Result<bool, BoxError>> {
        Box::pin(Projection::handle_batch_in(self, events, context))
    }
    fn reset(&self) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(Projection::reset(self))
    }
    fn reset_in<'a>(&'a self, context: &'a ResetContext) -> BoxFuture<'a, Result<bool, BoxError>> {
        Box::pin(Projection::reset_in(self, context))
    }
}

/// What the projection runtime reports.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectionError {
    /// The event store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The checkpoint, lease or dead-letter store failed.
    #[error(transparent)]
    Coordination(#[from] CoordinationError),
    /// A handler failed on every attempt and the policy is to stop.
    #[error(
        "projection `{name}` stopped at position {position} (stream `{stream}`) after {attempts} failed attempts: {source}"
    )]
    HandlerFailed {
        /// The projection.
        name: String,
        /// The failing event's position.
        position: u64,
        /// The failing event's stream.
        stream: StreamId,
        /// How many attempts were made.
        attempts: u32,
        /// The last error.
        source: BoxError,
    },
    /// An event could not be parked in the dead-letter store; the partition retries it (with
    /// backoff) and reports [`HealthProblem::Failing`] while it keeps failing.
    #[error(
        "projection `{name}` could not park the event at position {position} (stream `{stream}`) in the dead-letter store: {source}"
    )]
    ParkFailed {
        /// The projection.
        name: String,
        /// The event's position.
        position: u64,
        /// The event's stream.
        stream: StreamId,
        /// What the dead-letter store reported.
        source: Box<CoordinationError>,
    },
    /// No projection of this name is registered with the runner.
    #[error("no projection named `{name}` is registered")]
    UnknownProjection {
        /// The name asked for.
        name: String,
    },
    /// Another process holds a partition, so it cannot be rebuilt from here.
    #[error("projection `{name}` partition {partition} is held by another worker")]
    NotOwned {
        /// The projection.
        name: String,
        /// The partition.
        partition: u32,
    },
    /// A partition's worker has stopped.
    #[error("projection `{name}` partition {partition} is not running")]
    NotRunning {
        /// The projection.
        name: String,
        /// The partition.
        partition: u32,
    },
    /// [`Projection::reset`] failed.
    #[error("resetting projection `{name}` failed: {source}")]
    Reset {
        /// The projection.
        name: String,
        /// What it reported.
        source: BoxError,
    },
}
