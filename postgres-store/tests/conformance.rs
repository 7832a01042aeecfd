//! The store conformance suite of `factum`, against PostgreSQL: each case on a fresh schema.

use factum_postgres::PgStore;

async fn fresh_store() -> PgStore {
    factum_postgres::testing::fresh_store()
        .await
        .expect("a PostgreSQL test database")
}

factum::store_conformance_tests!(fresh_store);
