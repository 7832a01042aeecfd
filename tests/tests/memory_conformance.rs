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

/// The tenant cases, on the in-memory store in multi-tenant mode.
mod tenants {
    async fn multi_tenant_store() -> factum::MemoryStore {
        factum::MemoryStore::multi_tenant()
    }

    factum::tenant_conformance_tests!(multi_tenant_store);

    /// A single-tenant store refuses to bind a tenant it would not isolate.
    #[test]
    fn single_tenant_store_refuses_a_tenant() {
        use factum::EventStore;
        use factum::tenant::{TenantError, TenantId};
        let acme = TenantId::new("acme").expect("tenant");
        assert!(matches!(
            factum::MemoryStore::new().tenant(&acme),
            Err(factum::StoreError::Tenant(TenantError::NotMultiTenant))
        ));
    }
}
