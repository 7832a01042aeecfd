//! The process-manager runtime suite against the in-memory stores, in paused time.

use factum::coordination::MemoryProcessStore;
use factum::testing::process_managers::MemoryProcessRuntimeStores;

async fn memory_stores() -> MemoryProcessRuntimeStores {
    MemoryProcessRuntimeStores::memory()
}

factum::process_manager_tests!(memory_stores, start_paused);

#[tokio::test]
async fn memory_process_store_conformance() {
    factum::testing::process_managers::process_store_conformance(MemoryProcessStore::new()).await;
}
