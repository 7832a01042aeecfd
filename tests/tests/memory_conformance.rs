//! The store conformance suite against the in-memory store.

async fn fresh_store() -> factum::MemoryStore {
    factum::MemoryStore::new()
}

factum::store_conformance_tests!(fresh_store);

async fn coordination() -> factum::MemoryCoordination {
    factum::MemoryCoordination::new()
}

factum::coordination_conformance_tests!(coordination, coordination, coordination);

#[tokio::test]
async fn memory_coordination_process_store_conformance() {
    factum::testing::process_managers::process_store_conformance(coordination().await).await;
}
