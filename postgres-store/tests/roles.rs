//! Least privilege: migrations run by an owner role leave an application role that can
//! append and read events and run everything Factum does at run time, and that can neither
//! change nor remove events, nor disable or drop the append-only triggers.
//!
//! Each test creates its own roles and schema with the recipe of the book
//! (`tests/roles.sql`), run by the test cluster's superuser, and migrates as the owner. The
//! roles connect without a password: the throwaway cluster trusts local connections (a
//! `DATABASE_URL` server must too, for these tests).

mod common;

use std::time::Duration;

use factum::store::{ReadAll, StreamRead};
use factum::testing::process_managers::{ProcessRuntimeStores, process_store_conformance};
use factum::testing::projections::RuntimeStores;
use factum::{EventStore, ExpectedVersion, StoreError};
use factum_postgres::{PgConfig, PgCoordination, PgError, PgStore};
use tokio_postgres::error::SqlState;
use uuid::Uuid;

use common::{
    Roles, client_as, events, process_stores, raw_client, runtime_stores, stream, url, url_as,
};

// ANCHOR: roles
/// At deployment, as the owner role: create or upgrade the schema, and grant the application
/// role what it needs at run time.
async fn migrate_as_owner(owner_url: &str, schema: &str, app_role: &str) -> Result<(), PgError> {
    let config = PgConfig::default()
        .schema(schema)?
        .application_role(app_role)?;
    PgStore::connect_with(owner_url, config)
        .await?
        .migrate()
        .await
}

/// At start-up, as the application role: connect, and refuse to run with more privileges
/// than appending and reading events.
async fn connect_as_application(app_url: &str, schema: &str) -> Result<PgStore, PgError> {
    let store = PgStore::connect_with(app_url, PgConfig::default().schema(schema)?).await?;
    store.check_least_privilege().await?;
    Ok(store)
}
// ANCHOR_END: roles

impl Roles {
    /// Runs the recipe with unique names, and migrates the schema as the owner, granting the
    /// application role.
    async fn new() -> Self {
        let roles = Self::create("roles").await;
        migrate_as_owner(&url_as(&roles.owner).await, &roles.schema, &roles.app)
            .await
            .expect("the owner migrates");
        roles
    }

    fn config(&self) -> PgConfig {
        PgConfig::default()
            .schema(&self.schema)
            .expect("schema name")
    }

    async fn store_as(&self, role: &str, config: Result<PgConfig, PgError>) -> PgStore {
        PgStore::connect_with(&url_as(role).await, config.expect("config"))
            .await
            .expect("connect")
    }

    /// A store connected as the application role.
    async fn app_store(&self) -> PgStore {
        connect_as_application(&url_as(&self.app).await, &self.schema)
            .await
            .expect("the application role connects, with no more privileges than it needs")
    }
}

/// A store of a fresh schema, connected as its application role.
async fn app_store() -> PgStore {
    Roles::new().await.app_store().await
}

async fn app_coordination() -> PgCoordination {
    PgCoordination::new(&app_store().await)
}

async fn app_runtime() -> RuntimeStores<PgStore, PgCoordination, PgCoordination, PgCoordination> {
    runtime_stores(app_store().await)
}

async fn app_processes()
-> ProcessRuntimeStores<PgStore, PgCoordination, PgCoordination, PgCoordination> {
    process_stores(app_store().await)
}

/// Appends (single, batch, with a command id, retried), reads, loads, snapshots and the
/// repository with its command log and cache, as the application role.
mod store {
    use super::app_store;

    factum::store_conformance_tests!(@cases app_store;
        append_to_new_stream,
        idempotent_retry,
        concurrent_writers_one_stream,
        envelope_round_trip,
        read_all_filters,
        head_position_and_event_by_id,
        snapshots,
        repository_command_idempotency,
        repository_rejection_is_remembered,
        repository_cache_takes_snapshots,
        load_aggregate_matches_snapshot_and_replay,
        hostile_metadata_and_payload_round_trip,
    );
}

/// Checkpoints, leases, members and dead letters, as the application role.
mod coordination {
    use super::app_coordination;

    factum::coordination_conformance_tests!(app_coordination, app_coordination, app_coordination);
}

/// A projection with checkpoints, one whose poison event is parked and replayed, and a
/// process manager, as the application role.
mod runtime {
    use super::{app_processes, app_runtime};

    factum::projection_runtime_tests!(@each app_runtime; real;
        projection_delivers_and_resumes,
        projection_poison_event_parked_and_replayed,
    );
    factum::process_manager_tests!(@each app_processes; real;
        process_routes_and_ignores_redelivery,
    );
}

#[tokio::test]
async fn process_store_as_the_application_role() {
    process_store_conformance(app_coordination().await).await;
}

/// Every statement that could change or remove stored events, or switch the append-only
/// triggers off, fails for the application role with SQLSTATE 42501 (insufficient privilege,
/// "must be owner" included), and leaves the events as they were; the owner could switch the
/// triggers off.
#[tokio::test]
async fn the_application_role_cannot_change_events() {
    let roles = Roles::new().await;
    let store = roles.app_store().await;
    let s = stream("o-1");
    store
        .append(&s, ExpectedVersion::NoStream, &events(3))
        .await
        .expect("append as the application role");
    let before = store
        .read_stream(&s, &StreamRead::all())
        .await
        .expect("read");
    let app = client_as(&roles.app).await;
    let schema = &roles.schema;
    let forbidden = [
        format!("UPDATE {schema}.events SET event_type = 'Forged'"),
        format!("UPDATE {schema}.events SET payload = '{{}}' WHERE stream_version = 1"),
        format!("DELETE FROM {schema}.events"),
        format!("TRUNCATE {schema}.events"),
        format!("ALTER TABLE {schema}.events DISABLE TRIGGER events_append_only"),
        format!("ALTER TABLE {schema}.events DISABLE TRIGGER ALL"),
        format!("ALTER TABLE {schema}.events ENABLE REPLICA TRIGGER events_no_truncate"),
        format!("DROP TRIGGER events_append_only ON {schema}.events"),
        format!("DROP TRIGGER events_no_truncate ON {schema}.events"),
        format!("DROP FUNCTION {schema}.reject_event_change() CASCADE"),
        format!("DROP TABLE {schema}.events"),
        format!("DELETE FROM {schema}.command_log"),
        format!("DELETE FROM {schema}.snapshots"),
        format!("INSERT INTO {schema}.schema_migrations (version, name) VALUES (99, 'x')"),
        format!("CREATE TABLE {schema}.intruder (id int)"),
        "SET session_replication_role = replica".to_owned(),
    ];
    for statement in &forbidden {
        let error = app
            .batch_execute(statement)
            .await
            .expect_err(&format!("refused: {statement}"));
        assert_eq!(
            error.code(),
            Some(&SqlState::INSUFFICIENT_PRIVILEGE),
            "{statement}: {error:?}"
        );
    }
    let after = store
        .read_stream(&s, &StreamRead::all())
        .await
        .expect("read");
    assert_eq!(after, before, "the events are unchanged");

    // The owner is stopped by the triggers, but could switch them off.
    let owner = client_as(&roles.owner).await;
    let error = owner
        .batch_execute(&format!("UPDATE {schema}.events SET event_type = 'Forged'"))
        .await
        .expect_err("the trigger refuses it");
    assert_eq!(error.code().map(SqlState::code), Some("FA001"));
    owner
        .batch_execute(&format!(
            "BEGIN; ALTER TABLE {schema}.events DISABLE TRIGGER events_append_only; ROLLBACK"
        ))
        .await
        .expect("the owner may alter its table");
}

/// What the runtime needs beside the tables works as the application role: the head status
/// query (`pg_stat_activity`, `pg_prepared_xacts`) and notifications (`LISTEN`, `NOTIFY`).
#[tokio::test]
async fn head_status_and_notifications_as_the_application_role() {
    let store = app_store().await;
    let mut head = store.watch_head();
    let appended = store
        .append(&stream("o-1"), ExpectedVersion::NoStream, &events(2))
        .await
        .expect("append");
    tokio::time::timeout(
        Duration::from_secs(60),
        head.wait_for(|position| *position >= appended.last_position),
    )
    .await
    .expect("the head is announced within a minute")
    .expect("the listener runs");
    let status = store.head_status().await.expect("head status");
    assert_eq!(status.committed, appended.last_position);
    let all = store.read_all(&ReadAll::after(0)).await.expect("read all");
    assert_eq!(all.len(), 2);
}

/// Every table of the schema is readable by the application role, and the events table is
/// only readable and appendable: the grants keep up with the migrations.
#[tokio::test]
async fn grants_cover_every_table_and_no_more() {
    let roles = Roles::new().await;
    let admin = raw_client().await;
    let rows = admin
        .query(
            "SELECT c.relname::text,
                    has_table_privilege($1, c.oid, 'SELECT'),
                    has_table_privilege($1, c.oid, 'INSERT'),
                    has_table_privilege($1, c.oid, 'UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
             FROM pg_class c
             WHERE c.relnamespace = to_regnamespace($2) AND c.relkind = 'r'
             ORDER BY 1",
            &[&roles.app, &roles.schema],
        )
        .await
        .expect("privileges");
    let tables: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert!(tables.contains(&"events".to_owned()), "{tables:?}");
    assert_eq!(tables.len(), 10, "a new table needs its grant: {tables:?}");
    for row in &rows {
        let table: String = row.get(0);
        assert!(row.get::<_, bool>(1), "{table} is readable");
        if table == "events" {
            assert!(row.get::<_, bool>(2), "events can be appended");
            assert!(
                !row.get::<_, bool>(3),
                "events can only be appended and read"
            );
        }
    }
    let functions = admin
        .query(
            "SELECT p.oid::regprocedure::text, has_function_privilege($1, p.oid, 'EXECUTE')
             FROM pg_proc p WHERE p.pronamespace = to_regnamespace($2) AND p.proname = 'append'",
            &[&roles.app, &roles.schema],
        )
        .await
        .expect("functions");
    assert_eq!(functions.len(), 2);
    assert!(functions.iter().all(|f| f.get::<_, bool>(1)));
    let owns_database = admin
        .query_one(
            "SELECT has_database_privilege($1, current_database(), 'CREATE')",
            &[&roles.owner],
        )
        .await
        .expect("database privilege");
    assert!(
        !owns_database.get::<_, bool>(0),
        "the owner migrated without creating anything in the database but its schema"
    );
}

/// `check_least_privilege` passes for the application role and names what is wrong for the
/// owner, a member of the owner and a superuser.
#[tokio::test]
async fn check_least_privilege_names_the_role_and_why() {
    let roles = Roles::new().await;
    roles
        .app_store()
        .await
        .check_least_privilege()
        .await
        .expect("the application role can only append and read");

    let member = format!("member_{}", Uuid::new_v4().simple());
    raw_client()
        .await
        .batch_execute(&format!(
            "CREATE ROLE {member} LOGIN; GRANT {} TO {member}",
            roles.owner
        ))
        .await
        .expect("a member of the owner");
    let superuser = url().await;
    let cases = [
        (url_as(&roles.owner).await, roles.owner.clone(), "owns"),
        (url_as(&member).await, member.clone(), "member of its owner"),
        (superuser, "postgres".to_owned(), "superuser"),
    ];
    for (url, role, why) in cases {
        let store = PgStore::connect_with(&url, roles.config())
            .await
            .expect("connect");
        match store.check_least_privilege().await {
            Err(PgError::Privileged {
                role: r,
                schema,
                reason,
            }) => {
                assert_eq!(r, role);
                assert_eq!(schema, roles.schema);
                assert!(reason.contains(why), "{role}: {reason}");
            }
            other => panic!("{role}: expected Privileged, got {other:?}"),
        }
    }
}

/// The application role may call `migrate` once the schema is up to date (it only reads the
/// applied versions), but cannot create a schema; granting a missing role is a typed error.
#[tokio::test]
async fn migrate_as_the_application_role_and_grant_errors() {
    let roles = Roles::new().await;
    roles
        .app_store()
        .await
        .migrate()
        .await
        .expect("nothing to migrate: only reads");

    let unmigrated = format!("fresh_{}", Uuid::new_v4().simple());
    let store = PgStore::connect_with(
        &url_as(&roles.app).await,
        PgConfig::default().schema(&unmigrated).expect("schema"),
    )
    .await
    .expect("connect");
    let error = store
        .migrate()
        .await
        .expect_err("the application cannot migrate");
    let code = match &error {
        PgError::Store(StoreError::Backend(source)) => source
            .downcast_ref::<tokio_postgres::Error>()
            .and_then(tokio_postgres::Error::code),
        _ => None,
    };
    assert_eq!(code, Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{error:?}");

    let missing = format!("missing_{}", Uuid::new_v4().simple());
    let owner = roles
        .store_as(&roles.owner, roles.config().application_role(&missing))
        .await;
    match owner.migrate().await {
        Err(error @ PgError::Grant { .. }) => {
            let message = error.to_string();
            assert!(message.contains("does not exist"), "{message}");
            let PgError::Grant {
                role,
                schema,
                source,
            } = error
            else {
                unreachable!("matched above")
            };
            assert_eq!(role, missing);
            assert_eq!(schema, roles.schema);
            assert_eq!(
                source.code(),
                Some(&SqlState::UNDEFINED_OBJECT),
                "{source:?}"
            );
        }
        other => panic!("expected Grant, got {other:?}"),
    }
}
