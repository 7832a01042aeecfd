//! Tenants: a multi-tenant store, migrated by an owner role and run as a non-owner
//! application role (the recipe of `tests/roles.sql`), keeps tenants apart by row-level
//! security, for the store's own statements and for raw SQL alike.
//!
//! The roles connect without a password: the throwaway cluster trusts local connections (a
//! `DATABASE_URL` server must too, for these tests).

mod common;

use factum::projection::{ProjectionOptions, ProjectionRunner, RunningProjections};
use factum::store::{ReadAll, StreamRead};
use factum::tenant::{TenantError, TenantId};
use factum::{BoxError, EventStore, ExpectedVersion, RecordedEvent, StoreError};
use factum_postgres::{
    PgConfig, PgCoordination, PgError, PgProjection, PgStore, PgTransaction, SchemaName,
    Transactional, tenant_policy,
};
use tokio_postgres::error::SqlState;
use uuid::Uuid;

use common::{
    Roles, client_as, events, process_stores, raw_client, runtime_stores, stream, url, url_as,
};

// ANCHOR: tenants
/// At deployment, as the owner role: create or upgrade the schema in its multi-tenant
/// layout, and grant the application role what it needs at run time.
async fn migrate_multi_tenant(owner_url: &str, schema: &str, app: &str) -> Result<(), PgError> {
    let config = PgConfig::default()
        .schema(schema)?
        .application_role(app)?
        .multi_tenant(true);
    PgStore::connect_with(owner_url, config)
        .await?
        .migrate()
        .await
}

/// At start-up, as the application role; then, per request, a handle bound to the
/// request's tenant.
async fn connect_multi_tenant(app_url: &str, schema: &str) -> Result<PgStore, PgError> {
    let config = PgConfig::default().schema(schema)?.multi_tenant(true);
    let store = PgStore::connect_with(app_url, config).await?;
    // Refuses a superuser or a role that bypasses row-level security.
    store.check_least_privilege().await?;
    Ok(store)
}

fn for_request(store: &PgStore, tenant_header: &str) -> Result<PgStore, StoreError> {
    let tenant = TenantId::new(tenant_header)?;
    store.tenant(&tenant)
}
// ANCHOR_END: tenants

/// The handles of tenants `acme` and `globex` on `store`, as two requests would bind them.
fn acme_and_globex(store: &PgStore) -> (PgStore, PgStore) {
    (
        for_request(store, "acme").expect("acme"),
        for_request(store, "globex").expect("globex"),
    )
}

// ANCHOR: read_model
/// A read model of orders per stream, counted per tenant: a table of the owner's, under the
/// tenant policy, with the tenant first in its key.
async fn create_read_model(owner: &tokio_postgres::Client, schema: &str, app: &str) {
    let schema_name = SchemaName::new(schema).expect("schema");
    let table = format!("{}.order_counts", schema_name.quoted());
    owner
        .batch_execute(&format!(
            "CREATE TABLE {table} (stream text NOT NULL, events bigint NOT NULL);"
        ))
        .await
        .expect("create the table");
    owner
        .batch_execute(&tenant_policy(&schema_name, "order_counts").expect("policy"))
        .await
        .expect("apply the tenant policy");
    owner
        .batch_execute(&format!(
            "ALTER TABLE {table} ADD PRIMARY KEY (tenant, stream); \
             GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO \"{app}\";"
        ))
        .await
        .expect("key and grant");
}

/// Counts each order event of its stream; run on a tenant's handle, its transactions are
/// bound to that tenant, so its rows are that tenant's.
struct OrderCounts {
    name: String,
}

impl PgProjection for OrderCounts {
    fn name(&self) -> &str {
        &self.name
    }

    async fn handle(&self, tx: &PgTransaction<'_>, event: &RecordedEvent) -> Result<(), BoxError> {
        tx.execute(
            "INSERT INTO order_counts (stream, events) VALUES ($1, 1) \
             ON CONFLICT (tenant, stream) DO UPDATE SET events = order_counts.events + 1",
            &[&event.stream_id.as_str()],
        )
        .await?;
        Ok(())
    }
}

/// Runs the projection for `tenant`, under a name of the tenant's.
fn start_for(tenant: &PgStore) -> RunningProjections<PgStore, PgCoordination> {
    let tenant_id = tenant.bound_tenant().expect("a tenant's handle");
    let projection = OrderCounts {
        name: format!("order_counts@{tenant_id}"),
    };
    ProjectionRunner::new(tenant.clone())
        .coordination(PgCoordination::new(tenant))
        .register(
            Transactional::new(tenant, projection),
            ProjectionOptions::new(),
        )
        .start()
}
// ANCHOR_END: read_model

impl Roles {
    async fn new() -> Self {
        let roles = Self::create("tenants").await;
        migrate_multi_tenant(&url_as(&roles.owner).await, &roles.schema, &roles.app)
            .await
            .expect("the owner migrates");
        roles
    }

    async fn app_store(&self, pool_size: usize) -> PgStore {
        let store = connect_multi_tenant(&url_as(&self.app).await, &self.schema)
            .await
            .expect("the application role connects");
        if pool_size == 16 {
            return store;
        }
        let config = store.config().clone().pool_size(pool_size);
        PgStore::connect_with(&url_as(&self.app).await, config)
            .await
            .expect("connect")
    }
}

/// A multi-tenant store of a fresh schema, connected as its application role.
async fn app_store() -> PgStore {
    Roles::new().await.app_store(16).await
}

/// The tenant conformance cases of `factum`, as the application role.
mod conformance {
    use super::app_store;

    factum::tenant_conformance_tests!(app_store);
}

/// The event ids a raw `SELECT` of the events returns in a transaction bound to `tenant`
/// (none bound: `None`).
async fn raw_event_ids(
    client: &mut tokio_postgres::Client,
    schema: &str,
    tenant: Option<&str>,
) -> Vec<Uuid> {
    let tx = client.transaction().await.expect("begin");
    if let Some(tenant) = tenant {
        tx.execute("SELECT set_config('factum.tenant', $1, true)", &[&tenant])
            .await
            .expect("bind");
    }
    let rows = tx
        .query(
            &format!("SELECT * FROM \"{schema}\".events ORDER BY position"),
            &[],
        )
        .await
        .expect("select");
    tx.commit().await.expect("commit");
    rows.iter().map(|row| row.get("event_id")).collect()
}

/// Raw SQL as the application role, and as the owner, is held to the tenant bound to its
/// transaction: a `SELECT *` returns only that tenant's rows, none without a tenant; an
/// insert of another tenant's row, or of a row without one, is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_level_security_holds_for_raw_sql() {
    let roles = Roles::new().await;
    let store = roles.app_store(16).await;
    let (acme, globex) = acme_and_globex(&store);
    let s = stream("1");
    let acme_events = events(2);
    acme.append(&s, ExpectedVersion::NoStream, &acme_events)
        .await
        .expect("acme appends");
    let globex_events = events(1);
    globex
        .append(&s, ExpectedVersion::NoStream, &globex_events)
        .await
        .expect("globex appends to its stream of the same id");

    for role in [&roles.app, &roles.owner] {
        let mut client = client_as(role).await;
        assert_eq!(
            raw_event_ids(&mut client, &roles.schema, Some("acme")).await,
            acme_events.iter().map(|e| e.event_id).collect::<Vec<_>>(),
            "{role} bound to acme reads acme's rows only"
        );
        assert_eq!(
            raw_event_ids(&mut client, &roles.schema, Some("globex")).await,
            [globex_events[0].event_id],
            "{role} bound to globex reads globex's rows only"
        );
        assert!(
            raw_event_ids(&mut client, &roles.schema, None)
                .await
                .is_empty(),
            "{role} without a tenant reads no row"
        );
        // After a binding ended, the setting reads '' in the same session: still nothing.
        assert!(
            raw_event_ids(&mut client, &roles.schema, None)
                .await
                .is_empty()
        );
    }

    // Inserting a row of another tenant, or of none, is refused by the policy.
    let mut client = client_as(&roles.app).await;
    let insert = format!(
        "INSERT INTO \"{}\".events (position, event_id, stream_id, stream_version, \
         event_type, schema_version, payload, metadata, tenant) \
         VALUES (pg_current_xact_id()::text::bigint * 65536, $1, 'order-9', 1, 'Forged', 1, \
         '{{}}', '{{}}', $2)",
        roles.schema
    );
    for (bound, written) in [(Some("acme"), "globex"), (None, "globex")] {
        let tx = client.transaction().await.expect("begin");
        if let Some(bound) = bound {
            tx.execute("SELECT set_config('factum.tenant', $1, true)", &[&bound])
                .await
                .expect("bind");
        }
        let error = tx
            .execute(&insert, &[&Uuid::now_v7(), &written])
            .await
            .expect_err("the policy refuses another tenant's row");
        assert_eq!(
            error.code(),
            Some(&SqlState::INSUFFICIENT_PRIVILEGE),
            "{error}"
        );
    }
    let read = globex
        .read_stream(&stream("9"), &StreamRead::all())
        .await
        .expect("read");
    assert!(read.is_empty(), "no forged event was stored");

    // Owning the table does not lift the policy either: it is forced.
    let owner = client_as(&roles.owner).await;
    let forced: bool = owner
        .query_one(
            "SELECT relforcerowsecurity FROM pg_class WHERE oid = to_regclass($1)",
            &[&format!("\"{}\".events", roles.schema)],
        )
        .await
        .expect("catalog")
        .get(0);
    assert!(forced);
}

/// A pool of one connection used by tenant A, then B, then with no tenant: each sees only
/// its own rows, and without a tenant none; the binding never outlives a call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_pooled_connection_carries_no_tenant_over() {
    let roles = Roles::new().await;
    let store = roles.app_store(1).await;
    let (acme, globex) = acme_and_globex(&store);
    let s = stream("1");
    let a = events(2);
    acme.append(&s, ExpectedVersion::NoStream, &a)
        .await
        .expect("append");
    let b = events(1);
    globex
        .append(&s, ExpectedVersion::NoStream, &b)
        .await
        .expect("append");

    let ids =
        |events: Vec<RecordedEvent>| events.into_iter().map(|e| e.event_id).collect::<Vec<_>>();
    for _ in 0..2 {
        let acme_all = ids(acme.read_all(&ReadAll::after(0)).await.expect("read"));
        assert_eq!(acme_all, a.iter().map(|e| e.event_id).collect::<Vec<_>>());
        let globex_all = ids(globex.read_all(&ReadAll::after(0)).await.expect("read"));
        assert_eq!(globex_all, [b[0].event_id]);
        // The pool's one connection, with no tenant: no row, and no tenant left set.
        let client = store.pool().get().await.expect("the pooled connection");
        let events = client
            .query(
                &format!("SELECT event_id FROM \"{}\".events", roles.schema),
                &[],
            )
            .await
            .expect("select");
        assert!(events.is_empty(), "no tenant bound: no rows");
        let setting: Option<String> = client
            .query_one("SELECT current_setting('factum.tenant', true)", &[])
            .await
            .expect("setting")
            .get(0);
        assert!(
            setting.as_deref().is_none_or(str::is_empty),
            "the tenant of the last call is not left on the connection: {setting:?}"
        );
        drop(client);
        // The application role's one connection is idle, not idle in a transaction.
        let states: Vec<String> = raw_client()
            .await
            .query(
                "SELECT state FROM pg_stat_activity WHERE usename = $1",
                &[&roles.app],
            )
            .await
            .expect("activity")
            .iter()
            .map(|row| row.get(0))
            .collect();
        assert_eq!(
            states,
            ["idle"],
            "one pooled connection, outside any transaction"
        );
        // And through the store: refused.
        assert!(matches!(
            store.read_all(&ReadAll::after(0)).await,
            Err(StoreError::Tenant(TenantError::Required { .. }))
        ));
    }

    // A failed statement (a version conflict through the append function) leaves the
    // connection usable and outside any transaction.
    let conflict = acme.append(&s, ExpectedVersion::Exact(7), &events(2)).await;
    assert!(matches!(
        conflict,
        Err(StoreError::WrongExpectedVersion { actual: 2, .. })
    ));
    assert_eq!(globex.stream_version(&s).await.expect("version"), 1);
}

/// The store refuses to run multi-tenant as a role that bypasses row-level security.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_bypassing_row_level_security_is_refused() {
    let roles = Roles::new().await;
    raw_client()
        .await
        .batch_execute(&format!("ALTER ROLE \"{}\" BYPASSRLS", roles.app))
        .await
        .expect("alter role");
    match connect_multi_tenant(&url_as(&roles.app).await, &roles.schema).await {
        Err(PgError::Privileged { role, reason, .. }) => {
            assert_eq!(role, roles.app);
            assert!(reason.contains("row-level security"), "{reason}");
        }
        other => panic!("expected PgError::Privileged, got {other:?}"),
    }
}

/// A schema holding events of a single-tenant store is not turned into a multi-tenant one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_tenant_data_blocks_the_multi_tenant_layout() {
    let single = common::store().await;
    single
        .append(&stream("1"), ExpectedVersion::NoStream, &[common::event(1)])
        .await
        .expect("append");
    assert!(matches!(
        single.tenant(&TenantId::new("acme").expect("tenant")),
        Err(StoreError::Tenant(TenantError::NotMultiTenant))
    ));
    let config = single.config().clone().multi_tenant(true);
    let multi = PgStore::connect_with(&url().await, config)
        .await
        .expect("connect");
    match multi.migrate().await {
        Err(PgError::Tenancy { schema, source }) => {
            assert_eq!(schema, single.config().schema.as_str());
            assert_eq!(
                source.code(),
                Some(&SqlState::NOT_NULL_VIOLATION),
                "{source}"
            );
        }
        other => panic!("expected PgError::Tenancy, got {other:?}"),
    }
    // Nothing changed: the single-tenant store still reads its event.
    let read = single
        .read_stream(&stream("1"), &StreamRead::all())
        .await
        .expect("read");
    assert_eq!(read.len(), 1);
}

/// The subjects (key ids) of the `data_keys` rows a raw `SELECT` returns as `role` in a
/// transaction bound to `tenant` (none bound: `None`).
async fn raw_key_rows(role: &str, schema: &str, tenant: Option<&str>) -> Vec<(String, String)> {
    let mut client = client_as(role).await;
    let tx = client.transaction().await.expect("begin");
    if let Some(tenant) = tenant {
        tx.execute("SELECT set_config('factum.tenant', $1, true)", &[&tenant])
            .await
            .expect("bind");
    }
    let rows = tx
        .query(
            &format!("SELECT tenant, subject FROM \"{schema}\".data_keys ORDER BY subject"),
            &[],
        )
        .await
        .expect("select");
    tx.commit().await.expect("commit");
    rows.iter().map(|row| (row.get(0), row.get(1))).collect()
}

/// The data keys of a multi-tenant store are the tenant's: a shredding store over the
/// unbound store writes each key under the tenant its events name, a key store on a
/// tenant's handle reads and forgets only that tenant's keys, raw SQL bound to another
/// tenant or to none reads none of its rows, and the unbound key store refuses to serve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_keys_are_the_tenants() {
    use factum::personal::{
        KeyState, KeyStore, KeyStoreError, MasterKey, PersonalField, PersonalSchema, Shredding,
    };
    use factum_postgres::PgKeyStore;
    let roles = Roles::new().await;
    let store = roles.app_store(16).await;
    let keys = PgKeyStore::new(&store, MasterKey::generate());
    let schema = PersonalSchema::new()
        .register_fields("Registered", 1, &[PersonalField::new("name", "customer")])
        .expect("schema");
    let shredding = Shredding::new(store.clone(), keys.clone(), schema);
    let registered = factum::store::NewEvent {
        event_id: Uuid::now_v7(),
        event_type: "Registered".into(),
        schema_version: 1,
        payload: factum::store::Payload::encode(
            &serde_json::json!({"customer": "c-1", "name": "Ada"}),
        )
        .expect("json"),
        metadata: factum::Metadata::new().tenant("acme"),
    };
    shredding
        .append(&stream("1"), ExpectedVersion::NoStream, &[registered])
        .await
        .expect("the unbound store appends under the events' tenant, with that tenant's key");
    let read = shredding
        .tenant(&TenantId::new("acme").expect("tenant"))
        .expect("acme")
        .read_stream(&stream("1"), &StreamRead::all())
        .await
        .expect("acme reads its event");
    let payload: serde_json::Value = read[0].payload.decode().expect("json");
    assert_eq!(payload["name"], "Ada");

    let acme_key = "acme\u{1f}c-1".to_owned();
    for role in [&roles.app, &roles.owner] {
        assert_eq!(
            raw_key_rows(role, &roles.schema, Some("acme")).await,
            [("acme".to_owned(), acme_key.clone())],
            "{role} bound to acme reads acme's key row"
        );
        assert!(
            raw_key_rows(role, &roles.schema, Some("globex"))
                .await
                .is_empty(),
            "{role} bound to globex reads no key row of acme's"
        );
        assert!(
            raw_key_rows(role, &roles.schema, None).await.is_empty(),
            "{role} without a tenant reads no key row"
        );
    }

    // A key store on globex's handle: acme's key id is unknown to it, even by name.
    let globex = PgKeyStore::new(
        &for_request(&store, "globex").expect("globex"),
        MasterKey::generate(),
    );
    assert!(
        globex
            .lookup(std::slice::from_ref(&acme_key))
            .await
            .expect("lookup")
            .is_empty()
    );
    assert!(matches!(
        globex.forget(&acme_key).await,
        Err(KeyStoreError::UnknownSubject { .. })
    ));
    assert!(matches!(
        globex.key("globex\u{1f}c-1").await,
        Ok(KeyState::Active(_))
    ));
    assert_eq!(
        raw_key_rows(&roles.app, &roles.schema, Some("globex"))
            .await
            .len(),
        1
    );
    // Bound to no tenant, the key store refuses before sending anything.
    for refused in [
        keys.lookup(std::slice::from_ref(&acme_key)).await.map(drop),
        keys.key(&acme_key).await.map(drop),
        keys.forget(&acme_key).await.map(drop),
    ] {
        assert!(
            matches!(
                refused,
                Err(KeyStoreError::Tenant(TenantError::Required { .. }))
            ),
            "{refused:?}"
        );
    }
    assert_eq!(
        raw_key_rows(&roles.app, &roles.schema, Some("acme")).await,
        [("acme".to_owned(), acme_key)],
        "acme's key is still there"
    );
}

/// A key row written before `data_keys` had a tenant (migration 7), with no tenant, gets the
/// tenant its key id names when the multi-tenant layout is applied to the table (as it was
/// before migration 7: no policy, the subject its key), and the layout holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rows_without_a_tenant_get_the_one_their_key_id_names() {
    let roles = Roles::new().await;
    let table = format!("\"{}\".data_keys", roles.schema);
    // As a row of the earlier layout: no tenant.
    raw_client()
        .await
        .batch_execute(&format!(
            "ALTER TABLE {table} DROP CONSTRAINT data_keys_pkey, \
                 ADD CONSTRAINT data_keys_pkey PRIMARY KEY (subject), \
                 ALTER COLUMN tenant DROP NOT NULL, \
                 NO FORCE ROW LEVEL SECURITY, DISABLE ROW LEVEL SECURITY; \
             DROP POLICY tenant_isolation ON {table}; \
             INSERT INTO {table} (subject, wrapped_key, forgotten_at, tenant) \
             VALUES ('acme' || chr(31) || 'c-7', NULL, now(), NULL);"
        ))
        .await
        .expect("an earlier key row");
    migrate_multi_tenant(&url_as(&roles.owner).await, &roles.schema, &roles.app)
        .await
        .expect("the owner migrates again");
    assert_eq!(
        raw_key_rows(&roles.app, &roles.schema, Some("acme")).await,
        [("acme".to_owned(), "acme\u{1f}c-7".to_owned())]
    );
    let not_null: bool = raw_client()
        .await
        .query_one(
            "SELECT attnotnull FROM pg_attribute \
             WHERE attrelid = to_regclass($1) AND attname = 'tenant'",
            &[&table],
        )
        .await
        .expect("catalog")
        .get(0);
    assert!(not_null, "the tenant is required again");
    let key: String = raw_client()
        .await
        .query_one(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint \
             WHERE conrelid = to_regclass($1) AND conname = 'data_keys_pkey'",
            &[&table],
        )
        .await
        .expect("catalog")
        .get(0);
    assert_eq!(key, "PRIMARY KEY (tenant, subject)");
}

/// A transactional projection run per tenant writes its read model under the tenant of the
/// events it handles: bound to a tenant, raw SQL reads that tenant's rows of the read model;
/// without a tenant, none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactional_projections_write_under_the_tenant() {
    let roles = Roles::new().await;
    create_read_model(&client_as(&roles.owner).await, &roles.schema, &roles.app).await;
    let store = roles.app_store(16).await;
    let (acme, globex) = acme_and_globex(&store);
    acme.append(&stream("1"), ExpectedVersion::NoStream, &events(2))
        .await
        .expect("append");
    acme.append(&stream("2"), ExpectedVersion::NoStream, &events(1))
        .await
        .expect("append");
    let globex_head = globex
        .append(&stream("1"), ExpectedVersion::NoStream, &events(3))
        .await
        .expect("append")
        .last_position;
    let acme_head = acme.head_position().await.expect("head");

    let (acme_running, globex_running) = (start_for(&acme), start_for(&globex));
    let patience = std::time::Duration::from_secs(120);
    tokio::time::timeout(
        patience,
        acme_running.wait_for("order_counts@acme", acme_head),
    )
    .await
    .expect("acme's projection catches up in time")
    .expect("running");
    tokio::time::timeout(
        patience,
        globex_running.wait_for("order_counts@globex", globex_head),
    )
    .await
    .expect("globex's projection catches up in time")
    .expect("running");
    acme_running.shutdown().await.expect("shutdown");
    globex_running.shutdown().await.expect("shutdown");

    let mut client = client_as(&roles.app).await;
    let schema = roles.schema.clone();
    assert_eq!(
        read_counts(&mut client, &schema, Some("acme")).await,
        [
            ("acme".to_owned(), "order-1".to_owned(), 2),
            ("acme".to_owned(), "order-2".to_owned(), 1)
        ]
    );
    assert_eq!(
        read_counts(&mut client, &schema, Some("globex")).await,
        [("globex".to_owned(), "order-1".to_owned(), 3)]
    );
    assert!(
        read_counts(&mut client, &schema, None).await.is_empty(),
        "no tenant: no rows"
    );
}

/// The rows of the read model raw SQL reads in a transaction bound to `tenant` (or none).
async fn read_counts(
    client: &mut tokio_postgres::Client,
    schema: &str,
    tenant: Option<&str>,
) -> Vec<(String, String, i64)> {
    let tx = client.transaction().await.expect("begin");
    if let Some(tenant) = tenant {
        tx.execute("SELECT set_config('factum.tenant', $1, true)", &[&tenant])
            .await
            .expect("bind");
    }
    let rows = tx
        .query(
            &format!(
                "SELECT tenant, stream, events FROM \"{schema}\".order_counts ORDER BY stream"
            ),
            &[],
        )
        .await
        .expect("select");
    tx.commit().await.expect("commit");
    rows.iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect()
}

#[test]
fn read_model_table_names_are_validated() {
    let schema = SchemaName::new("factum").expect("schema");
    for bad in ["", "counts; DROP TABLE x", "a-b", "pg_counts", "1counts"] {
        match tenant_policy(&schema, bad) {
            Err(PgError::InvalidTableName { name, .. }) => assert_eq!(name, bad),
            other => panic!("{bad:?}: expected InvalidTableName, got {other:?}"),
        }
    }
    let sql = tenant_policy(&schema, "Order_Counts").expect("valid");
    assert!(sql.contains("\"factum\".\"Order_Counts\""), "{sql}");
}

/// Under the policy, a stream read as the application role is one scan of the tenant-first
/// index, its tenant and stream both index keys; and the application role's `migrate` on an
/// up-to-date multi-tenant schema only reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_reads_scan_the_tenant_index() {
    let roles = Roles::new().await;
    let store = roles.app_store(16).await;
    store
        .migrate()
        .await
        .expect("the application role's migrate only reads");
    let acme = for_request(&store, "acme").expect("acme");
    acme.append(&stream("1"), ExpectedVersion::NoStream, &events(3))
        .await
        .expect("append");
    let mut client = client_as(&roles.app).await;
    let tx = client.transaction().await.expect("begin");
    tx.execute("SELECT set_config('factum.tenant', 'acme', true)", &[])
        .await
        .expect("bind");
    // Three rows: without this, a sequential scan could be as cheap. What is checked is
    // that the policy's tenant is an index key, beside the stream.
    tx.batch_execute("SET LOCAL enable_seqscan = off")
        .await
        .expect("set");
    let plan: Vec<String> = tx
        .query(
            &format!(
                "EXPLAIN SELECT position FROM \"{}\".events \
                 WHERE stream_id = 'order-1' AND stream_version BETWEEN 1 AND 10 \
                 ORDER BY stream_version",
                roles.schema
            ),
            &[],
        )
        .await
        .expect("explain")
        .iter()
        .map(|row| row.get(0))
        .collect();
    tx.commit().await.expect("commit");
    let plan = plan.join("\n");
    assert!(
        plan.contains("Index Scan using events_tenant_stream_version_key"),
        "{plan}"
    );
    let conditions = plan
        .lines()
        .find(|line| line.contains("Index Cond"))
        .unwrap_or_default();
    assert!(
        conditions.contains("tenant") && conditions.contains("stream_id"),
        "{plan}"
    );
}

/// A call dropped while its statements are in flight (here: after its first poll) leaves
/// its pooled connection outside any transaction, with no tenant: the next caller of the
/// pool's one connection reads its own rows, and an unbound query none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_call_leaves_no_tenant_behind() {
    let roles = Roles::new().await;
    let store = roles.app_store(1).await;
    let (acme, globex) = acme_and_globex(&store);
    let a = events(3);
    acme.append(&stream("1"), ExpectedVersion::NoStream, &a)
        .await
        .expect("append");
    // Warm the statement cache, so the next read sends its four requests on its first poll.
    acme.read_stream(&stream("1"), &StreamRead::all())
        .await
        .expect("read");
    for _ in 0..5 {
        let cancelled = tokio::time::timeout(
            std::time::Duration::ZERO,
            acme.read_stream(&stream("1"), &StreamRead::all()),
        )
        .await;
        drop(cancelled);
        assert!(
            globex
                .read_stream(&stream("1"), &StreamRead::all())
                .await
                .expect("read")
                .is_empty(),
            "globex sees none of acme's events on the connection acme's call left"
        );
        let client = store.pool().get().await.expect("the pooled connection");
        let rows = client
            .query(
                &format!("SELECT event_id FROM \"{}\".events", roles.schema),
                &[],
            )
            .await
            .expect("select");
        assert!(rows.is_empty(), "no tenant left bound");
    }
    assert_eq!(
        acme.read_stream(&stream("1"), &StreamRead::all())
            .await
            .expect("read")
            .len(),
        3
    );
}

/// The runtime on a tenant's handle, with `PgCoordination` made on the same handle: the
/// projection and process-manager cases pass under row-level security, and the dead letters
/// and process instances they write are the tenant's: another tenant's coordination, and raw
/// SQL bound to another tenant or to none, see none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runtime_tables_are_the_tenants() {
    use factum::coordination::{DeadLetterStore, ParkReason, ParkedEvent, ProcessStore};
    use factum::testing::process_managers::{FLOW, process_routes_and_ignores_redelivery};
    use factum::testing::projections::projection_poison_event_parked_and_replayed;

    let roles = Roles::new().await;
    let store = roles.app_store(16).await;
    let (acme, globex) = acme_and_globex(&store);
    projection_poison_event_parked_and_replayed(runtime_stores(acme.clone())).await;
    process_routes_and_ignores_redelivery(process_stores(acme.clone())).await;
    let coordination = PgCoordination::new(&acme);
    let parked = ParkedEvent::new(
        "parked@acme",
        0,
        1,
        Uuid::now_v7(),
        stream("1"),
        "Tested",
        ParkReason::Failed {
            error: "acme's secret".into(),
            attempts: 3,
        },
    );
    coordination.park(&parked).await.expect("park");

    let theirs = PgCoordination::new(&globex);
    assert!(theirs.list("parked@acme").await.expect("list").is_empty());
    assert!(theirs.load(FLOW, "a").await.expect("load").is_none());
    assert_eq!(
        coordination.list("parked@acme").await.expect("list").len(),
        1
    );
    assert!(coordination.load(FLOW, "a").await.expect("load").is_some());

    let mut client = client_as(&roles.app).await;
    for (tenant, visible) in [(Some("acme"), true), (Some("globex"), false), (None, false)] {
        let tx = client.transaction().await.expect("begin");
        if let Some(tenant) = tenant {
            tx.execute("SELECT set_config('factum.tenant', $1, true)", &[&tenant])
                .await
                .expect("bind");
        }
        for table in ["dead_letters", "process_instances"] {
            let rows: i64 = tx
                .query_one(
                    &format!("SELECT count(*) FROM \"{}\".{table}", roles.schema),
                    &[],
                )
                .await
                .expect("count")
                .get(0);
            assert_eq!(
                rows > 0,
                visible,
                "{table} bound to {tenant:?}: {rows} rows"
            );
        }
        tx.commit().await.expect("commit");
    }
}
