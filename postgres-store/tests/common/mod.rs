//! Helpers shared by the Postgres tests.

#![allow(dead_code, unreachable_pub, reason = "each test file uses a part")]

pub mod counts;

use factum::store::{NewEvent, Payload};
use factum::{Metadata, StreamId};
use factum_postgres::testing::{TestDatabase, fresh_store};
use factum_postgres::{PgConnectOptions, PgCoordination, PgStore};
use uuid::Uuid;

pub async fn store() -> PgStore {
    fresh_store().await.expect("test database")
}

pub async fn url() -> String {
    TestDatabase::get().await.expect("test database")
}

/// A raw connection to the test database, outside any store.
pub async fn raw_client() -> tokio_postgres::Client {
    PgConnectOptions::parse(&url().await)
        .expect("url")
        .connect()
        .await
        .expect("connect")
}

pub fn stream(id: &str) -> StreamId {
    StreamId::new("order", id).expect("stream id")
}

pub fn event(n: u64) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: "Happened".into(),
        schema_version: 1,
        payload: Payload::encode(&serde_json::json!({ "n": n })).expect("payload"),
        metadata: Metadata::new().actor("tester"),
    }
}

pub fn events(n: u64) -> Vec<NewEvent> {
    (0..n).map(event).collect()
}

pub fn schema(store: &PgStore) -> String {
    store.config().schema.quoted()
}

/// A new, empty database in the test cluster, and a connection to it: another database
/// than the stores' one. Drop it with [`drop_database`].
pub async fn other_database() -> (String, tokio_postgres::Client) {
    let name = format!("factum_other_{}", Uuid::new_v4().simple());
    raw_client()
        .await
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create database");
    let mut options = PgConnectOptions::parse(&url().await).expect("url");
    options.pg_config_mut().dbname(&name);
    (name, options.connect().await.expect("connect"))
}

/// Drops a database made by [`other_database`], closing its connections.
pub async fn drop_database(name: &str) {
    raw_client()
        .await
        .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .await
        .expect("drop database");
}

/// The projection runtime's stores on `events` and its schema's coordination tables.
pub fn runtime_stores(
    events: PgStore,
) -> factum::testing::projections::RuntimeStores<
    PgStore,
    PgCoordination,
    PgCoordination,
    PgCoordination,
> {
    let coordination = PgCoordination::new(&events);
    factum::testing::projections::RuntimeStores {
        events,
        checkpoints: coordination.clone(),
        leases: coordination.clone(),
        dead_letters: coordination,
    }
}

/// The process-manager runtime's stores on `events` and its schema's coordination tables.
pub fn process_stores(
    events: PgStore,
) -> factum::testing::process_managers::ProcessRuntimeStores<
    PgStore,
    PgCoordination,
    PgCoordination,
    PgCoordination,
> {
    let coordination = PgCoordination::new(&events);
    factum::testing::process_managers::ProcessRuntimeStores {
        events,
        processes: coordination.clone(),
        checkpoints: coordination.clone(),
        leases: coordination,
    }
}

/// The test database's connection string, as `role` (the cluster trusts local connections).
pub async fn url_as(role: &str) -> String {
    factum_postgres::testing::url_as(&url().await, role).expect("test URL")
}

/// A raw connection as `role`.
pub async fn client_as(role: &str) -> tokio_postgres::Client {
    PgConnectOptions::parse(&url_as(role).await)
        .expect("url")
        .connect()
        .await
        .expect("connect")
}

/// An owner role, an application role and a schema owned by the owner, made by the roles
/// recipe with unique names; each test file adds how it migrates and connects.
pub struct Roles {
    pub owner: String,
    pub app: String,
    pub schema: String,
}

impl Roles {
    /// Runs the recipe for new roles and a schema named `<schema_prefix>_<unique tag>`.
    pub async fn create(schema_prefix: &str) -> Self {
        let tag = Uuid::new_v4().simple().to_string();
        let roles = Self {
            owner: format!("owner_{tag}"),
            app: format!("app_{tag}"),
            schema: format!("{schema_prefix}_{tag}"),
        };
        run_roles_recipe(&roles.owner, &roles.app, &roles.schema).await;
        roles
    }
}

/// Runs the roles recipe (`roles.sql`) as the superuser, for an owner role, an application
/// role and a schema of the owner, under the given names.
pub async fn run_roles_recipe(owner: &str, app: &str, schema: &str) {
    let recipe = include_str!("../roles.sql")
        .replace("factum_owner", owner)
        .replace("factum_app", app)
        .replace("SCHEMA factum ", &format!("SCHEMA {schema} "));
    raw_client()
        .await
        .batch_execute(&recipe)
        .await
        .expect("the recipe runs");
}
