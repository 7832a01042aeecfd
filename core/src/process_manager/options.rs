//! How one process manager runs.

use std::time::Duration;

use crate::projection::FailurePolicy;
use crate::subscription::SubscriptionOptions;

/// How one process manager runs.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProcessOptions {
    /// Number of partitions, by hash of the correlation key (at least 1).
    pub partitions: u32,
    /// Most events per read.
    pub batch_size: usize,
    /// How often a caught-up partition polls the store, and looks for due timeouts.
    pub poll_interval: Duration,
    /// Retries of a dispatch that failed (not rejected); after the last one the partition
    /// stops (the command stays in the outbox for the next start).
    pub dispatch_retry: FailurePolicy,
}

impl Default for ProcessOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl ProcessOptions {
    /// One partition, default batch size, 500 ms polls, 5 dispatch attempts.
    pub fn new() -> Self {
        let sub = SubscriptionOptions::new();
        Self {
            partitions: 1,
            batch_size: sub.batch_size,
            poll_interval: sub.poll_interval,
            dispatch_retry: FailurePolicy::stop_after(5),
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

    /// Sets the dispatch retries.
    #[must_use]
    pub fn dispatch_retry(mut self, policy: FailurePolicy) -> Self {
        self.dispatch_retry = policy;
        self
    }
}
