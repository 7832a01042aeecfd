//! The runtime suites of `factum::testing` against PostgreSQL, in real time.

use factum::testing::process_managers::{ProcessRuntimeStores, process_store_conformance};
use factum::testing::projections::RuntimeStores;

use super::PgCoordination;
use crate::PgStore;
use crate::testing::fresh_store;

async fn store() -> PgStore {
    fresh_store().await.expect("test database")
}

async fn coordination() -> PgCoordination {
    PgCoordination::new(&store().await)
}

async fn runtime() -> RuntimeStores<PgStore, PgCoordination, PgCoordination, PgCoordination> {
    let events = store().await;
    let coordination = PgCoordination::new(&events);
    RuntimeStores {
        events,
        checkpoints: coordination.clone(),
        leases: coordination.clone(),
        dead_letters: coordination,
    }
}

async fn processes() -> ProcessRuntimeStores<PgStore, PgCoordination, PgCoordination, PgCoordination>
{
    let events = store().await;
    let coordination = PgCoordination::new(&events);
    ProcessRuntimeStores {
        events,
        processes: coordination.clone(),
        checkpoints: coordination.clone(),
        leases: coordination,
    }
}

factum::coordination_conformance_tests!(coordination, coordination, coordination);

mod projections {
    use super::runtime;

    factum::projection_runtime_tests!(runtime);
}

mod process_managers {
    use super::processes;

    factum::process_manager_tests!(processes);
}

#[tokio::test]
async fn process_store() {
    process_store_conformance(coordination().await).await;
}
