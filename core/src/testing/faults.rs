//! Stores that fail on demand, to test what the runtime does when its stores fail.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::coordination::{CoordinationError, DeadLetterStore, ParkedEvent};
use crate::stream::StreamId;

/// The operations of a [`FaultyDeadLetters`] that a fault can be injected into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeadLetterOp {
    /// [`DeadLetterStore::park`].
    Park,
    /// [`DeadLetterStore::clear`].
    Clear,
}

type Check = dyn Fn(DeadLetterOp) -> Result<(), String> + Send + Sync;

/// A dead-letter store over another one that does the work, asking `check` before each
/// [`DeadLetterOp`]: an `Err` from it is returned as a backend error instead, and counted.
/// Clones share the check and the count.
#[derive(Clone)]
pub struct FaultyDeadLetters<D> {
    inner: D,
    check: Arc<Check>,
    refused: Arc<AtomicU64>,
}

impl<D> FaultyDeadLetters<D> {
    /// Wraps `inner`, failing an operation whenever `check` returns an error for it.
    pub fn new(
        inner: D,
        check: impl Fn(DeadLetterOp) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        Self {
            inner,
            check: Arc::new(check),
            refused: Arc::default(),
        }
    }

    /// How many operations were refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }

    fn guard(&self, op: DeadLetterOp) -> Result<(), CoordinationError> {
        (self.check)(op).map_err(|message| {
            self.refused.fetch_add(1, Ordering::SeqCst);
            CoordinationError::Backend(message.into())
        })
    }
}

impl<D: fmt::Debug> fmt::Debug for FaultyDeadLetters<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultyDeadLetters")
            .field("inner", &self.inner)
            .field("refused", &self.refused())
            .finish_non_exhaustive()
    }
}

impl<D: DeadLetterStore> DeadLetterStore for FaultyDeadLetters<D> {
    async fn park(&self, event: &ParkedEvent) -> Result<(), CoordinationError> {
        self.guard(DeadLetterOp::Park)?;
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
        self.guard(DeadLetterOp::Clear)?;
        self.inner.clear(name).await
    }
}
