//! The store conformance suite against the in-memory store.

async fn fresh_store() -> factum::MemoryStore {
    factum::MemoryStore::new()
}

factum::store_conformance_tests!(fresh_store);
