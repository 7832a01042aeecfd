//! The HTTP API of a multi-tenant server: each request names its tenant in `X-Tenant` and
//! runs on that tenant's app. Two tenants place orders with the same ids and see only their
//! own; a missing or invalid header is a 400 naming it, and stores nothing; the fulfillment
//! process ships an order per tenant; forgetting a customer of one tenant leaves the other
//! tenant's customer of the same id intact. On PostgreSQL the server runs as an application
//! role that owns nothing, under row-level security.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use factum::projection::FailurePolicy;
use factum::tenant::TenantId;
use factum::{Coordination, EventStore, Metadata, Repository};
use factum_postgres::testing::{TestDatabase, url_as};
use factum_postgres::{PgConfig, PgConnectOptions, PgStore};
use order_fulfillment::domain::Line;
use order_fulfillment::domain::order::{Order, PlaceOrderV1};
use order_fulfillment::pg_read_model::PgReadModels;
use order_fulfillment::{AppOptions, MemoryTenants, PersonalStore, PgTenants, Tenants, http};
use serde_json::{Value, json};
use tower::ServiceExt as _;
use uuid::Uuid;

struct Api<S, C> {
    tenants: Arc<Tenants<S, C>>,
    router: Router,
}

impl<S: PersonalStore, C: Coordination> Api<S, C> {
    fn new(tenants: Tenants<S, C>) -> Self {
        let tenants = Arc::new(tenants);
        let router = http::multi_tenant_router(Arc::clone(&tenants));
        Self { tenants, router }
    }

    /// Sends a request as `tenant` (no `X-Tenant` header when `None`), with `key` as its
    /// `Idempotency-Key` when given.
    async fn send(
        &self,
        method: &str,
        path: &str,
        tenant: Option<&str>,
        key: Option<&str>,
        body: Value,
    ) -> (StatusCode, Value) {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json");
        if let Some(tenant) = tenant {
            request = request.header("X-Tenant", tenant);
        }
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        let body = if body.is_null() {
            Body::empty()
        } else {
            Body::from(body.to_string())
        };
        let response = self
            .router
            .clone()
            .oneshot(request.body(body).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        (status, body)
    }

    async fn get(&self, tenant: &str, path: &str) -> (StatusCode, Value) {
        self.send("GET", path, Some(tenant), None, Value::Null)
            .await
    }

    async fn post(&self, tenant: &str, path: &str, body: Value) -> (StatusCode, Value) {
        self.send("POST", path, Some(tenant), None, body).await
    }
}

fn named_order(id: &str, quantity: u32, name: &str) -> Value {
    json!({
        "order_id": id,
        "customer_id": "alice",
        "customer_name": name,
        "lines": [{"sku": "keyboard", "quantity": quantity, "unit_price_cents": 4999}],
    })
}

/// A 400 whose error names the `X-Tenant` header and says `what` is wrong with it.
fn assert_tenant_refused((status, body): (StatusCode, Value), what: &str) {
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(error.contains("X-Tenant"), "{body}");
    assert!(error.contains(what), "{body}");
}

/// Requests without a valid tenant are refused before anything is read or written: no
/// tenant's app starts, and nothing is stored (`stored_events` counts every tenant's).
async fn requests_without_a_tenant_are_refused<S: PersonalStore, C: Coordination>(
    api: &Api<S, C>,
    stored_events: impl AsyncFn() -> u64,
) {
    let too_long = "x".repeat(129);
    for (tenant, what) in [
        (None, "missing"),
        (Some(""), "empty"),
        (Some(too_long.as_str()), "129 bytes"),
    ] {
        let order = named_order("o-1", 1, "Alice");
        let sent = api.send("POST", "/orders", tenant, None, order).await;
        assert_tenant_refused(sent, what);
        let stock = json!({"quantity": 5});
        let sent = api
            .send("POST", "/inventory/keyboard/receive", tenant, None, stock)
            .await;
        assert_tenant_refused(sent, what);
        let sent = api.send("GET", "/orders", tenant, None, Value::Null).await;
        assert_tenant_refused(sent, what);
        let sent = api
            .send(
                "DELETE",
                "/customers/alice/personal-data",
                tenant,
                None,
                Value::Null,
            )
            .await;
        assert_tenant_refused(sent, what);
    }
    assert_eq!(stored_events().await, 0);
    assert_eq!(api.tenants.started(), [TenantId::new("acme").unwrap()]);
}

/// Two tenants, `acme` (started at start-up) and `globex` (started by its first request),
/// with the same order and customer ids, each seeing only its own; the process ships an
/// order in each; forgetting acme's `alice` leaves globex's `alice` intact.
async fn two_tenants_with_the_same_ids<S: PersonalStore, C: Coordination>(api: &Api<S, C>) {
    for tenant in ["acme", "globex"] {
        let (status, body) = api
            .post(
                tenant,
                "/inventory/keyboard/receive",
                json!({"quantity": 5}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    // The same order id, customer id and idempotency key in both tenants: two orders.
    let mut positions = Vec::new();
    for (tenant, quantity, name) in [("acme", 2, "Alice Acme"), ("globex", 1, "Alice Globex")] {
        let (status, body) = api
            .send(
                "POST",
                "/orders",
                Some(tenant),
                Some("first-order"),
                named_order("o-1", quantity, name),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{tenant}: {body}");
        assert_eq!(body["replayed"], false, "{tenant}: {body}");
        positions.push(body["position"].as_u64().unwrap());
    }
    // `after` is a position of the tenant's own: a tenant's read models see only its events.
    let (_, acme) = api
        .get("acme", &format!("/orders/o-1?after={}", positions[0]))
        .await;
    let (_, globex) = api
        .get("globex", &format!("/orders/o-1?after={}", positions[1]))
        .await;
    assert_eq!(
        (&acme["total_cents"], &acme["customer_name"]),
        (&json!(9998), &json!("Alice Acme")),
        "{acme}"
    );
    assert_eq!(
        (&globex["total_cents"], &globex["customer_name"]),
        (&json!(4999), &json!("Alice Globex")),
        "{globex}"
    );

    // An order of acme's only: globex cannot see, load, pay or cancel it.
    let (status, body) = api
        .post("acme", "/orders", named_order("o-2", 1, "A"))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let after = body["position"].as_u64().unwrap();
    let (_, list) = api.get("acme", &format!("/orders?after={after}")).await;
    assert_eq!(list.as_array().map(Vec::len), Some(2), "{list}");
    let (_, list) = api.get("globex", "/orders").await;
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["order_id"].as_str())
        .collect();
    assert_eq!(ids, ["o-1"], "{list}");
    for (method, path) in [
        ("GET", "/orders/o-2"),
        ("GET", "/orders/o-2/history"),
        ("POST", "/orders/o-2/pay"),
        ("POST", "/orders/o-2/cancel"),
    ] {
        let (status, body) = api
            .send(method, path, Some("globex"), None, Value::Null)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {body}");
    }

    // The fulfillment process of each tenant reserves, and ships once paid.
    for tenant in ["acme", "globex"] {
        let (status, body) = api.post(tenant, "/orders/o-1/pay", Value::Null).await;
        assert_eq!(status, StatusCode::OK, "{tenant}: {body}");
    }
    api.tenants.settle().await.unwrap();
    for tenant in ["acme", "globex"] {
        let (status, body) = api
            .post(tenant, "/orders/o-1/ship", json!({"carrier": "dhl"}))
            .await;
        assert_eq!(status, StatusCode::OK, "{tenant}: {body}");
    }
    api.tenants.settle().await.unwrap();
    for (tenant, total, on_hand) in [("acme", 9998, 3), ("globex", 4999, 4)] {
        let (_, stock) = api.get(tenant, "/inventory/keyboard").await;
        assert_eq!(stock["on_hand"], on_hand, "{tenant}: {stock}");
        let (_, order) = api.get(tenant, "/orders/o-1").await;
        assert_eq!(order["status"], "shipped", "{tenant}: {order}");
        let (_, customers) = api.get(tenant, "/customers").await;
        assert_eq!(
            customers[0]["total_spent_cents"]["EUR"], total,
            "{tenant}: {customers}"
        );
        let (_, sales) = api.get(tenant, "/sales/daily").await;
        assert_eq!(sales[0]["net_cents"], total, "{tenant}: {sales}");
    }

    // Forgetting acme's alice erases her name at acme only.
    let (status, body) = api
        .send(
            "DELETE",
            "/customers/alice/personal-data",
            Some("acme"),
            None,
            Value::Null,
        )
        .await;
    assert_eq!(
        (status, &body["forgotten"]),
        (StatusCode::OK, &json!("destroyed")),
        "{body}"
    );
    let (_, acme) = api.get("acme", "/orders/o-1").await;
    assert_eq!(acme["customer_name"], json!({"$erased": true}), "{acme}");
    let (_, history) = api.get("acme", "/orders/o-1/history").await;
    assert_eq!(
        history[0]["payload"]["customer_name"],
        json!({"$erased": true})
    );
    let (_, globex) = api.get("globex", "/orders/o-1").await;
    assert_eq!(globex["customer_name"], "Alice Globex", "{globex}");
    let (_, history) = api.get("globex", "/orders/o-1/history").await;
    assert_eq!(history[0]["payload"]["customer_name"], "Alice Globex");
    let (status, body) = api
        .post("globex", "/orders", named_order("o-3", 1, "Alice Globex"))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // Health and dead letters cover both tenants' workers, each under its own names.
    let (status, health) = api.send("GET", "/health", None, None, Value::Null).await;
    assert_eq!(status, StatusCode::OK, "{health}");
    let names: Vec<&str> = health["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w["name"].as_str())
        .collect();
    for tenant in ["acme", "globex"] {
        for worker in [
            "order_list",
            "customer_stats",
            "daily_sales",
            "order_fulfillment",
        ] {
            let name = format!("{worker}@{tenant}");
            assert_eq!(
                names.iter().filter(|n| **n == name).count(),
                1,
                "{name}: {health}"
            );
        }
    }
    assert_eq!(names.len(), 8, "{health}");
    let (status, parked) = api
        .send("GET", "/dead-letters", None, None, Value::Null)
        .await;
    assert_eq!((status, parked), (StatusCode::OK, json!([])));
    // So does the operator's page's doctor, without a tenant too.
    let (status, doctor) = api
        .send("GET", "/admin/doctor", None, None, Value::Null)
        .await;
    assert_eq!(status, StatusCode::OK, "{doctor}");
    assert_eq!(
        doctor["findings"][0]["summary"],
        "8 workers, none stopped or stalled"
    );
}

/// Two first requests of a new tenant arriving together start its workers once.
async fn a_new_tenant_starts_once<S: PersonalStore, C: Coordination>(api: &Api<S, C>) {
    let (first, second) = tokio::join!(
        api.get("initech", "/orders"),
        api.get("initech", "/customers")
    );
    assert_eq!((first.0, second.0), (StatusCode::OK, StatusCode::OK));
    let (_, health) = api.send("GET", "/health", None, None, Value::Null).await;
    let initech = health["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["name"].as_str().is_some_and(|n| n.ends_with("@initech")))
        .count();
    assert_eq!(initech, 4, "{health}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_in_memory() {
    let acme = TenantId::new("acme").unwrap();
    let tenants = MemoryTenants::in_memory(&AppOptions::default(), &[acme]).unwrap();
    let api = Api::new(tenants);
    let store = api.tenants.store().clone();
    requests_without_a_tenant_are_refused(&api, async || {
        let mut count = 0;
        for tenant in ["acme", "globex", "x"] {
            let handle = store.tenant(&TenantId::new(tenant).unwrap());
            count += common::all_events(&handle.unwrap()).await.len();
        }
        u64::try_from(count).unwrap()
    })
    .await;
    two_tenants_with_the_same_ids(&api).await;
    a_new_tenant_starts_once(&api).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_tenant_server_refuses_a_tenant() {
    let app = order_fulfillment::App::in_memory(factum::MemoryStore::new(), &AppOptions::default());
    let router = http::router(Arc::new(app));
    let request = Request::get("/orders")
        .header("X-Tenant", "acme")
        .body(Body::empty())
        .unwrap();
    let response = router.oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert_tenant_refused((status, body), "not multi-tenant");
}

/// An owner role and an application role, as `postgres-store/tests/roles.sql` makes them,
/// and a schema of the owner's.
struct Roles {
    owner: String,
    app: String,
    schema: String,
}

impl Roles {
    async fn create() -> Self {
        let tag = Uuid::new_v4().simple().to_string();
        let roles = Self {
            owner: format!("owner_{tag}"),
            app: format!("app_{tag}"),
            schema: format!("tenants_{tag}"),
        };
        let recipe = include_str!("../../../postgres-store/tests/roles.sql")
            .replace("factum_owner", &roles.owner)
            .replace("factum_app", &roles.app)
            .replace("SCHEMA factum ", &format!("SCHEMA {} ", roles.schema));
        superuser().await.batch_execute(&recipe).await.unwrap();
        roles
    }
}

async fn superuser() -> tokio_postgres::Client {
    let url = TestDatabase::get().await.expect("the test database");
    PgConnectOptions::parse(&url)
        .unwrap()
        .connect()
        .await
        .unwrap()
}

// ANCHOR: pg_tenants_test
/// At deployment the owner migrates the multi-tenant schema and creates the read model
/// tables, granting the application role their use; the server then runs as that role.
async fn serve_as_application_role(roles: &Roles, started: &[TenantId]) -> PgTenants {
    serve_with(roles, started, &AppOptions::default()).await
}

async fn serve_with(roles: &Roles, started: &[TenantId], options: &AppOptions) -> PgTenants {
    let url = TestDatabase::get().await.expect("the test database");
    let owner = PgConfig::default()
        .schema(&roles.schema)
        .unwrap()
        .application_role(&roles.app)
        .unwrap()
        .multi_tenant(true);
    let owner = PgStore::connect_with(&url_as(&url, &roles.owner).unwrap(), owner)
        .await
        .unwrap();
    owner.migrate().await.unwrap();
    PgReadModels::new(&owner).create_tables().await.unwrap();

    let config = PgConfig::default()
        .schema(&roles.schema)
        .unwrap()
        .multi_tenant(true);
    let app = PgStore::connect_with(&url_as(&url, &roles.app).unwrap(), config)
        .await
        .unwrap();
    app.check_least_privilege().await.unwrap();
    PgTenants::on_postgres(app, common::master_key(), options, started)
        .await
        .unwrap()
}
// ANCHOR_END: pg_tenants_test

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_on_postgres_as_the_application_role() {
    let roles = Roles::create().await;
    let acme = TenantId::new("acme").unwrap();
    let api = Api::new(serve_as_application_role(&roles, &[acme]).await);
    let superuser = superuser().await;
    let events = format!("SELECT count(*) FROM {}.events", roles.schema);
    requests_without_a_tenant_are_refused(&api, async || {
        let count: i64 = superuser.query_one(&events, &[]).await.unwrap().get(0);
        u64::try_from(count).unwrap()
    })
    .await;
    two_tenants_with_the_same_ids(&api).await;
    a_new_tenant_starts_once(&api).await;

    // Both tenants' order `o-1` are rows of one table, the tenant first in its key.
    let sql = format!(
        "SELECT tenant, customer_name FROM {}.order_list WHERE order_id = 'o-1' ORDER BY tenant",
        roles.schema
    );
    let rows: Vec<(String, Option<String>)> = superuser
        .query(&sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        rows,
        [
            ("acme".to_owned(), None),
            ("globex".to_owned(), Some("Alice Globex".to_owned()))
        ]
    );
    // No table holds acme's forgotten name; globex's is only in its read model.
    let sql = format!(
        "SELECT count(*) FROM {}.events AS t WHERE t::text LIKE '%Alice Acme%'",
        roles.schema
    );
    let found: i64 = superuser.query_one(&sql, &[]).await.unwrap().get(0);
    assert_eq!(found, 0);

    // A restart: the workers of the tenants listed at start-up catch up without a request.
    // An order of acme's recorded while no server runs reaches acme's read model.
    let store = api.tenants.store().clone();
    let Api { tenants, router } = api;
    drop(router);
    let tenants = Arc::try_unwrap(tenants).expect("no request in flight");
    tenants.shutdown().await.unwrap();
    let acme = TenantId::new("acme").unwrap();
    let globex = TenantId::new("globex").unwrap();
    let place = PlaceOrderV1 {
        order_id: "o-9".into(),
        customer_id: "carol".into(),
        lines: vec![Line {
            sku: "keyboard".into(),
            quantity: 1,
            unit_price_cents: 4999,
        }],
    };
    Repository::<Order, _>::new(store.tenant(&acme).unwrap())
        .execute(place, Metadata::new())
        .await
        .unwrap();
    let restarted = serve_as_application_role(&roles, &[acme, globex.clone()]).await;
    assert_eq!(restarted.started().len(), 2);
    restarted.settle().await.unwrap();
    let sql = format!(
        "SELECT tenant FROM {}.order_list WHERE order_id = 'o-9'",
        roles.schema
    );
    let rows = superuser.query(&sql, &[]).await.unwrap();
    let tenants: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(tenants, ["acme"]);
    restarted.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_model_tables_of_a_single_tenant_run_are_refused() {
    // A single-tenant run created the read model tables, then a multi-tenant one starts on
    // the same schema (still without events, so the store's migration accepts it). A
    // single app on the unbound multi-tenant store is refused too.
    let single = common::postgres().await;
    PgReadModels::new(&single).create_tables().await.unwrap();
    let url = TestDatabase::get().await.expect("the test database");
    let config = single.config().clone().multi_tenant(true);
    let multi = PgStore::connect_with(&url, config).await.unwrap();
    multi.migrate().await.unwrap();
    let unbound = order_fulfillment::App::on_postgres(
        multi.clone(),
        common::master_key(),
        &AppOptions::default(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(unbound.contains("PgTenants"), "{unbound}");
    let refused = PgTenants::on_postgres(multi, common::master_key(), &AppOptions::default(), &[])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("customer_orders") && refused.contains("not in the multi-tenant layout"),
        "{refused}"
    );
}

/// An event one tenant's read model keeps failing on is parked under that tenant's name,
/// listed by `GET /dead-letters` with no tenant, and replayed by
/// `POST /dead-letters/replay` once the cause is gone; the other tenant goes on meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_of_every_tenant_on_postgres() {
    let roles = Roles::create().await;
    let options = AppOptions {
        failure: FailurePolicy::park_after(2)
            .backoff(Duration::from_millis(10), Duration::from_millis(50)),
        ..AppOptions::default()
    };
    let api = Api::new(serve_with(&roles, &[], &options).await);
    // A constraint refusing acme's rows of the order list (a botched migration).
    let superuser = superuser().await;
    let order_list = format!("{}.order_list", roles.schema);
    superuser
        .batch_execute(&format!(
            "ALTER TABLE {order_list} ADD CONSTRAINT not_acme CHECK (tenant <> 'acme')"
        ))
        .await
        .unwrap();
    for tenant in ["acme", "globex"] {
        let stock = json!({"quantity": 5});
        let (status, body) = api.post(tenant, "/inventory/keyboard/receive", stock).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, body) = api
            .post(tenant, "/orders", named_order("o-1", 1, "A"))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    api.tenants.settle().await.unwrap();
    let (status, parked) = api
        .send("GET", "/dead-letters", None, None, Value::Null)
        .await;
    assert_eq!(status, StatusCode::OK, "{parked}");
    let parked: Vec<(&str, &str)> = parked
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap(),
                p["event_type"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(parked, [("order_list@acme", "OrderPlaced")]);
    let (_, globex) = api.get("globex", "/orders/o-1").await;
    assert_eq!(globex["order_id"], "o-1", "{globex}");
    let (status, _) = api.get("acme", "/orders/o-1").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    superuser
        .batch_execute(&format!(
            "ALTER TABLE {order_list} DROP CONSTRAINT not_acme"
        ))
        .await
        .unwrap();
    let (status, replay) = api
        .send("POST", "/dead-letters/replay", None, None, Value::Null)
        .await;
    assert_eq!(
        (status, replay),
        (StatusCode::OK, json!({"replay_requested": 1}))
    );
    api.tenants.settle().await.unwrap();
    let (_, parked) = api
        .send("GET", "/dead-letters", None, None, Value::Null)
        .await;
    assert_eq!(parked, json!([]));
    let (status, acme) = api.get("acme", "/orders/o-1").await;
    assert_eq!(status, StatusCode::OK, "{acme}");
}
