//! What the runtime reports about its partitions.

use std::time::Duration;

use crate::head::Blocker;

/// What a partition's worker is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WorkerState {
    /// Waiting for the partition's lease (another worker holds it, or none was tried yet).
    WaitingForLease,
    /// Holding the lease and reading.
    Running,
    /// Paused by a rebuild.
    Paused,
    /// Stopped by its failure policy.
    Stopped,
    /// Shut down.
    Finished,
}

/// The state of one partition of a projection in this runner.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct PartitionStatus {
    /// The projection.
    pub name: String,
    /// The partition.
    pub partition: u32,
    /// What the worker is doing.
    pub state: WorkerState,
    /// The saved checkpoint.
    pub checkpoint: u64,
    /// The position of the last event handled (or skipped as another partition's).
    pub position: u64,
    /// The store's readable head position last seen by the worker.
    pub head: u64,
    /// The highest committed position seen by the runner (at least `head`). Above the
    /// readable head while an open transaction holds the store's head back
    /// ([`HealthProblem::HeadHeldBack`]).
    pub committed: u64,
    /// How far behind the committed head it is, measured in positions: `committed -
    /// position` (0 when caught up). It grows while the readable head is held back. On a
    /// store with dense positions (the in-memory one) this is the number of events behind;
    /// on one with gaps between positions (PostgreSQL) it is an upper bound.
    pub lag_events: u64,
    /// How long it has been behind the committed head (zero when caught up).
    pub lag_time: Duration,
    /// How long since the position last moved, or the partition last found itself caught up.
    pub since_progress: Duration,
    /// Why it stopped, when it did; or, while it retries after transient failures (store,
    /// coordination or dead-letter store unavailable), the last failure.
    pub error: Option<String>,
    /// How many transient failures in a row it is retrying after (0 when working).
    pub failures: u32,
    /// How long it has been failing (zero when working).
    pub failing_for: Duration,
}

/// A problem found by [`RunningProjections::health`](super::RunningProjections::health).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HealthProblem {
    /// Behind the readable head with no progress for longer than the allowed time.
    Stalled {
        /// The projection.
        name: String,
        /// The partition.
        partition: u32,
        /// Its position.
        position: u64,
        /// The head it is behind.
        head: u64,
        /// How long it has made no progress.
        for_: Duration,
    },
    /// Stopped by its failure policy.
    Stopped {
        /// The projection.
        name: String,
        /// The partition.
        partition: u32,
        /// Why.
        error: String,
    },
    /// Keeps failing with a transient error (the store, the coordination store or the
    /// dead-letter store unavailable) and retrying with backoff; cleared once it gets through
    /// a batch.
    Failing {
        /// The projection.
        name: String,
        /// The partition.
        partition: u32,
        /// The last failure.
        error: String,
        /// How many failures in a row.
        failures: u32,
        /// How long it has been failing.
        for_: Duration,
    },
    /// Committed events have not been readable for longer than
    /// [`RunnerOptions::head_held_back_after`](super::RunnerOptions::head_held_back_after):
    /// an open transaction that may still write events (PostgreSQL: of the same database)
    /// keeps every reader of the global order before it. No partition can make progress
    /// past `readable` until that transaction ends; nothing is skipped meanwhile.
    HeadHeldBack {
        /// The readable head.
        readable: u64,
        /// The highest committed position.
        committed: u64,
        /// How long events committed above the readable head have waited.
        for_: Duration,
        /// The transaction holding it back, when the store can tell.
        blocker: Option<Blocker>,
    },
}

/// The result of a health check.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Health {
    /// Every partition of this runner.
    pub partitions: Vec<PartitionStatus>,
    /// What is wrong (empty when healthy).
    pub problems: Vec<HealthProblem>,
}

impl Health {
    /// Whether no problem was found.
    pub fn is_healthy(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Progress of a rebuild, as reported to the callback of [`RunningProjections::rebuild`](super::RunningProjections::rebuild).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RebuildProgress {
    /// The projection.
    pub name: String,
    /// Every partition has handled the events up to here.
    pub position: u64,
    /// The head position when the rebuild started: it is done when `position` reaches it.
    pub target: u64,
}
