//! Stores that fail on demand, to test what the runtime does when its stores fail.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::coordination::{CoordinationError, DeadLetterStore, ParkedEvent};
use crate::stream::StreamId;

/// A dead-letter store whose [`park`](DeadLetterStore::park) fails while switched on, over
/// another one that does the work otherwise. Clones share the switch.
#[derive(Clone, Debug)]
pub struct FailingParks<D> {
    inner: D,
    failing: Arc<AtomicBool>,
    refused: Arc<AtomicU64>,
}

/// What a refused [`FailingParks::park`] reports (inside a backend error).
pub const PARK_REFUSED: &str = "the dead-letter store is unavailable";

impl<D> FailingParks<D> {
    /// Wraps `inner`, parking normally until [`fail`](Self::fail).
    pub fn new(inner: D) -> Self {
        Self {
            inner,
            failing: Arc::default(),
            refused: Arc::default(),
        }
    }

    /// Makes `park` fail (`true`) or work again (`false`).
    pub fn fail(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// How many parks were refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }
}

impl<D: DeadLetterStore> DeadLetterStore for FailingParks<D> {
    async fn park(&self, event: &ParkedEvent) -> Result<(), CoordinationError> {
        if self.failing.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(CoordinationError::Backend(PARK_REFUSED.into()));
        }
        self.inner.park(event).await
    }

    async fn list(&self, name: &str) -> Result<Vec<ParkedEvent>, CoordinationError> {
        self.inner.list(name).await
    }

    async fn list_partition(
        &self,
        name: &str,
        partition: u32,
    ) -> Result<Vec<ParkedEvent>, CoordinationError> {
        self.inner.list_partition(name, partition).await
    }

    async fn request_replay(
        &self,
        name: &str,
        stream: Option<&StreamId>,
    ) -> Result<usize, CoordinationError> {
        self.inner.request_replay(name, stream).await
    }

    async fn remove(&self, name: &str, position: u64) -> Result<(), CoordinationError> {
        self.inner.remove(name, position).await
    }

    async fn clear(&self, name: &str) -> Result<(), CoordinationError> {
        self.inner.clear(name).await
    }
}
