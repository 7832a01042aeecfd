//! All coordination in memory, in one value.

use super::{MemoryCheckpointStore, MemoryDeadLetterStore, MemoryLeaseStore, SplitCoordination};
use crate::process_manager::MemoryProcessStore;

/// Checkpoints, leases, dead letters and process instances in memory, for one process: the
/// default [`Coordination`](super::Coordination) of the runners and of an
/// [`Application`](crate::Application). A restart starts from nothing, so the projections
/// and process managers handle the store from the first event again. Cloning shares them.
pub type MemoryCoordination = SplitCoordination<
    MemoryCheckpointStore,
    MemoryLeaseStore,
    MemoryDeadLetterStore,
    MemoryProcessStore,
>;

impl MemoryCoordination {
    /// Empty stores.
    pub fn new() -> Self {
        Self::default()
    }
}
