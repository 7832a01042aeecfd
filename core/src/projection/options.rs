//! How projections run: the failure policy and the options of a projection and a runner.

use std::time::Duration;

use crate::runtime::backoff;
use crate::subscription::SubscriptionOptions;

/// What happens to an event whose handler failed on every attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OnExhausted {
    /// Park it in the dead-letter store and go on; later events of its stream wait behind it.
    Park,
    /// Stop the partition; it resumes from the failed event when restarted.
    Stop,
}

/// Retry with exponential backoff, then park or stop.
///
/// The wait after the `n`-th failure is drawn at random between half of
/// [`delay(n)`](Self::delay) and `delay(n)` (jitter, so that partitions failing together do
/// not retry in step): `delay` doubles from `initial_backoff` up to `max_backoff`, which no
/// wait exceeds.
///
/// ```
/// use std::time::Duration;
/// use factum::projection::FailurePolicy;
/// let policy = FailurePolicy::park_after(4).backoff(Duration::from_millis(100), Duration::from_secs(1));
/// assert_eq!(policy.delay(1), Duration::from_millis(100));
/// assert_eq!(policy.delay(2), Duration::from_millis(200));
/// assert_eq!(policy.delay(10), Duration::from_secs(1));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FailurePolicy {
    /// How many times an event is tried (at least 1).
    pub max_attempts: u32,
    /// The longest wait after the first failure (the wait is jittered between half of it and
    /// it); it doubles after each further failure.
    pub initial_backoff: Duration,
    /// The longest wait between attempts.
    pub max_backoff: Duration,
    /// What happens after the last attempt.
    pub on_exhausted: OnExhausted,
}

impl Default for FailurePolicy {
    /// 5 attempts, 100 ms doubling up to 10 s, then park.
    fn default() -> Self {
        Self::park_after(5)
    }
}

impl FailurePolicy {
    /// Tries `attempts` times, then parks the event.
    pub fn park_after(attempts: u32) -> Self {
        Self {
            max_attempts: attempts.max(1),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            on_exhausted: OnExhausted::Park,
        }
    }

    /// Tries `attempts` times, then stops the partition.
    pub fn stop_after(attempts: u32) -> Self {
        Self {
            on_exhausted: OnExhausted::Stop,
            ..Self::park_after(attempts)
        }
    }

    /// Sets the backoff: `initial` after the first failure, doubling up to `max`.
    #[must_use]
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max.max(initial);
        self
    }

    /// The longest wait after the `attempt`-th failure (1-based); the wait itself is drawn
    /// between half of it and it.
    pub fn delay(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(32);
        self.initial_backoff
            .saturating_mul(1u32 << doublings.min(31))
            .min(self.max_backoff)
    }

    /// The jittered waits after the first, second, … failure of one event.
    pub(crate) fn waits(&self) -> impl Iterator<Item = Duration> + use<> {
        backoff::jittered(self.initial_backoff, self.max_backoff)
    }
}

/// How one projection runs.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProjectionOptions {
    /// Number of partitions (at least 1). Changing it later reassigns streams: rebuild then.
    /// Each partition reads only its own streams' events from the store
    /// ([`ReadAll::partition`](crate::store::ReadAll::partition)); on PostgreSQL, create
    /// the partition indexes for this number once (`PgStore::create_partition_index`).
    pub partitions: u32,
    /// Most events per read.
    pub batch_size: usize,
    /// How often a caught-up partition polls the store (hints wake it sooner).
    pub poll_interval: Duration,
    /// Retries and what follows them.
    pub failure: FailurePolicy,
}

impl Default for ProjectionOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl ProjectionOptions {
    /// One partition, default batch size and poll interval, the default failure policy.
    pub fn new() -> Self {
        let sub = SubscriptionOptions::new();
        Self {
            partitions: 1,
            batch_size: sub.batch_size,
            poll_interval: sub.poll_interval,
            failure: FailurePolicy::default(),
        }
    }

    /// Sets the number of partitions (at least 1).
    #[must_use]
    pub fn partitions(mut self, partitions: u32) -> Self {
        self.partitions = partitions.max(1);
        self
    }

    /// Sets the batch size (at least 1).
    #[must_use]
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// Sets the poll interval.
    #[must_use]
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Sets the failure policy.
    #[must_use]
    pub fn failure(mut self, policy: FailurePolicy) -> Self {
        self.failure = policy;
        self
    }
}

/// Settings shared by every projection of a runner.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunnerOptions {
    /// This worker's id in the lease store: unique per process.
    pub worker_id: String,
    /// How long a lease lasts without renewal; a dead worker's partitions fail over after it.
    pub lease_ttl: Duration,
    /// How often a worker without a lease tries to take it; also the longest pause before a
    /// worker takes its partition again after a transient failure (store unavailable).
    pub lease_retry: Duration,
    /// How long committed events may stay unreadable (the store's head held back by an
    /// open transaction) before health reports [`HealthProblem::HeadHeldBack`](crate::projection::HealthProblem::HeadHeldBack)
    /// and a warning is logged.
    pub head_held_back_after: Duration,
}

impl Default for RunnerOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl RunnerOptions {
    /// A random worker id, 30 s leases, retried every 5 s; a head held back for 30 s is
    /// unhealthy.
    pub fn new() -> Self {
        Self {
            worker_id: uuid::Uuid::new_v4().to_string(),
            lease_ttl: Duration::from_secs(30),
            lease_retry: Duration::from_secs(5),
            head_held_back_after: Self::DEFAULT_HEAD_HELD_BACK_AFTER,
        }
    }

    /// Default of [`RunnerOptions::head_held_back_after`].
    pub const DEFAULT_HEAD_HELD_BACK_AFTER: Duration = Duration::from_secs(30);

    /// Sets the worker id.
    #[must_use]
    pub fn worker_id(mut self, id: impl Into<String>) -> Self {
        self.worker_id = id.into();
        self
    }

    /// Sets the lease time to live (renewed every third of it).
    #[must_use]
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// Sets how often a worker without a lease tries to take it.
    #[must_use]
    pub fn lease_retry(mut self, retry: Duration) -> Self {
        self.lease_retry = retry;
        self
    }

    /// Sets how long committed events may stay unreadable before health reports the head
    /// held back.
    #[must_use]
    pub fn head_held_back_after(mut self, after: Duration) -> Self {
        self.head_held_back_after = after;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let policy = FailurePolicy::stop_after(0)
            .backoff(Duration::from_millis(10), Duration::from_millis(70));
        assert_eq!(policy.max_attempts, 1);
        let delays: Vec<_> = (1..=5).map(|a| policy.delay(a).as_millis()).collect();
        assert_eq!(delays, [10, 20, 40, 70, 70]);
        assert_eq!(policy.delay(u32::MAX), Duration::from_millis(70));
    }

    #[test]
    fn waits_are_jittered_below_each_delay() {
        let policy = FailurePolicy::park_after(8)
            .backoff(Duration::from_millis(10), Duration::from_millis(70));
        for _ in 0..20 {
            for (attempt, wait) in (1..=8).zip(policy.waits()) {
                let delay = policy.delay(attempt);
                assert!(wait >= delay / 2 && wait <= delay, "{wait:?} for {delay:?}");
            }
        }
    }
}
