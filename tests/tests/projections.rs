//! The projection runtime and the coordination store suites against the in-memory stores,
//! in paused time.

use factum::testing::projections::MemoryRuntimeStores;
use factum::{MemoryCheckpointStore, MemoryDeadLetterStore, MemoryLeaseStore};

async fn memory_stores() -> MemoryRuntimeStores {
    MemoryRuntimeStores::memory()
}

factum::projection_runtime_tests!(memory_stores, start_paused);

mod coordination {
    use super::*;

    async fn checkpoints() -> MemoryCheckpointStore {
        MemoryCheckpointStore::new()
    }
    async fn leases() -> MemoryLeaseStore {
        MemoryLeaseStore::new()
    }
    async fn dead_letters() -> MemoryDeadLetterStore {
        MemoryDeadLetterStore::new()
    }

    factum::coordination_conformance_tests!(checkpoints, leases, dead_letters);
}
