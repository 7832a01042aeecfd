//! The HTTP API through `tower::ServiceExt::oneshot`, without a socket: place → pay → ship
//! (in memory and on PostgreSQL), errors as JSON with 400 / 404 / 409, and replays of an
//! `Idempotency-Key`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use factum::Coordination;
use factum::EventStore as _;
use factum::MemoryStore;
use factum::personal::{MemoryKeyStore, Shredding};
use order_fulfillment::{App, AppOptions, PersonalStore, PgApp, ServiceOptions, http};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use common::stream_types;

struct Api<S, C> {
    app: Arc<App<S, C>>,
    router: Router,
}

impl Api<Shredding<MemoryStore, MemoryKeyStore>, factum::MemoryCoordination> {
    async fn new() -> Self {
        Self::on(App::in_memory(MemoryStore::new(), &AppOptions::default())).await
    }
}

/// The application on a fresh PostgreSQL store.
async fn on_postgres(options: &AppOptions) -> PgApp {
    App::on_postgres(common::postgres().await, common::master_key(), options)
        .await
        .unwrap()
}

impl<S: PersonalStore, C: Coordination> Api<S, C> {
    async fn on(app: App<S, C>) -> Self {
        let app = Arc::new(app);
        let router = http::router(Arc::clone(&app));
        let api = Self { app, router };
        let (status, _) = api
            .post("/inventory/keyboard/receive", json!({"quantity": 5}))
            .await;
        assert_eq!(status, StatusCode::OK);
        api
    }

    async fn send(&self, request: Request<Body>) -> (StatusCode, Value, bool) {
        let (status, body, headers) = self.send_with_headers(request).await;
        (status, body, headers.get(http::REPLAYED).is_some())
    }

    async fn send_with_headers(
        &self,
        request: Request<Body>,
    ) -> (StatusCode, Value, axum::http::HeaderMap) {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        (status, body, headers)
    }

    async fn post_raw(
        &self,
        path: &str,
        body: &str,
        key: Option<&str>,
    ) -> (StatusCode, Value, bool) {
        let mut request = Request::post(path).header("content-type", "application/json");
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        self.send(request.body(Body::from(body.to_owned())).unwrap())
            .await
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let text = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        let (status, body, _) = self.post_raw(path, &text, None).await;
        (status, body)
    }

    async fn delete(&self, path: &str) -> (StatusCode, Value) {
        let (status, body, _) = self
            .send(Request::delete(path).body(Body::empty()).unwrap())
            .await;
        (status, body)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let (status, body, _) = self
            .send(Request::get(path).body(Body::empty()).unwrap())
            .await;
        (status, body)
    }
}

fn order(id: &str, quantity: u32) -> Value {
    json!({
        "order_id": id,
        "customer_id": "alice",
        "lines": [{"sku": "keyboard", "quantity": quantity, "unit_price_cents": 4999}],
        "currency": "EUR"
    })
}

/// The flow the book shows with curl, on `app`.
async fn place_pay_ship<S: PersonalStore, C: Coordination>(app: App<S, C>) {
    let api = Api::on(app).await;
    let (status, body) = api.post("/orders", order("o-1", 2)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["id"], "o-1");
    assert_eq!(body["events"], json!(["OrderPlaced"]));

    let (status, body) = api.post("/orders/o-1/pay", Value::Null).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["events"], json!(["PaymentCaptured"]));
    api.app.settle().await.unwrap();

    let (status, body) = api
        .post("/orders/o-1/ship", json!({"carrier": "dhl"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["events"], json!(["ShipmentDispatched"]));
    api.app.settle().await.unwrap();

    let (status, body) = api.get("/orders/o-1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "shipped");
    assert_eq!(body["total_cents"], 9998);
    assert_eq!(body["tracking"], "DHL-o-1");
    let (_, list) = api.get("/orders").await;
    assert_eq!(list.as_array().map(Vec::len), Some(1));

    let (status, history) = api.get("/orders/o-1/history").await;
    assert_eq!(status, StatusCode::OK);
    let types: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["OrderPlaced", "OrderPaid", "OrderShipped"]);
    assert_eq!(history[0]["schema_version"], 2);
    assert_eq!(history[0]["payload"]["currency"], "EUR");

    let (_, customers) = api.get("/customers").await;
    assert_eq!(customers[0]["order_count"], 1);
    assert_eq!(customers[0]["total_spent_cents"]["EUR"], 9998);
    let (_, sales) = api.get("/sales/daily").await;
    assert_eq!(sales[0]["net_cents"], 9998);
    let (status, health) = api.get("/health").await;
    assert_eq!(status, StatusCode::OK, "{health}");
    assert_eq!(health["healthy"], true);
    let workers = health["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 4, "{health}");
    assert!(workers.iter().all(|w| w["state"] == "Running"), "{health}");
    let (_, stock) = api.get("/inventory/keyboard").await;
    assert_eq!(
        stock,
        json!({"sku": "keyboard", "on_hand": 3, "reserved": 0, "available": 3})
    );
    let (status, parked) = api.get("/dead-letters").await;
    assert_eq!((status, parked), (StatusCode::OK, json!([])));
    let (status, replay) = api.post("/dead-letters/replay", Value::Null).await;
    assert_eq!(
        (status, replay),
        (StatusCode::OK, json!({"replay_requested": 0}))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn place_pay_ship_in_memory() {
    place_pay_ship(App::in_memory(MemoryStore::new(), &AppOptions::default())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn place_pay_ship_on_postgres() {
    place_pay_ship(on_postgres(&AppOptions::default()).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_400() {
    let api = Api::new().await;
    for body in [
        "{not json",
        r#"{"customer_id": "alice"}"#,
        r#"{"customer_id": "alice", "lines": [], "currency": "EUR"}"#,
        r#"{"customer_id": "alice", "lines": [{"sku": "keyboard", "quantity": 0, "unit_price_cents": 1}]}"#,
        r#"{"customer_id": "alice", "lines": [{"sku": "keyboard", "quantity": 1, "unit_price_cents": 1}], "currency": "euro"}"#,
        r#"{"customer_id": "alice", "lines": [{"sku": "keyboard", "quantity": -1, "unit_price_cents": 1}]}"#,
        r#"{"customer_id": "alice", "lines": [], "colour": "red"}"#,
    ] {
        let (status, error, _) = api.post_raw("/orders", body, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {error}");
        assert_eq!(error["status"], 400);
        assert!(
            error["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{error}"
        );
    }
    let (status, _) = api
        .post("/inventory/keyboard/receive", json!({"quantity": 0}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = api
        .post_raw("/orders", &order("o-1", 1).to_string(), Some(""))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(api.app.orders().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_orders_are_404() {
    let api = Api::new().await;
    for path in ["/orders/nope", "/orders/nope/history", "/no/such/route"] {
        let (status, error) = api.get(path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(error["status"], 404, "{path}");
    }
    for path in [
        "/orders/nope/pay",
        "/orders/nope/ship",
        "/orders/nope/cancel",
    ] {
        let (status, error) = api.post(path, Value::Null).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {error}");
        assert_eq!(error["error"], "no order `nope`");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_the_state_refuses_are_409() {
    let api = Api::new().await;
    api.post("/orders", order("o-1", 1)).await;
    let (status, error) = api.post("/orders", order("o-1", 1)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(error["error"], "the order is already placed");

    // No shipment before the payment.
    let (status, error) = api.post("/orders/o-1/ship", Value::Null).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        error["error"].as_str().unwrap().contains("no shipment yet"),
        "{error}"
    );

    let (status, _) = api.post("/orders/o-1/pay", Value::Null).await;
    assert_eq!(status, StatusCode::OK);
    let (status, error) = api.post("/orders/o-1/pay", Value::Null).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(error["error"], "the order is already paid");

    let (status, _) = api
        .post("/orders/o-1/cancel", json!({"reason": "oops"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, error) = api.post("/orders/o-1/cancel", Value::Null).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(error["error"], "the order is cancelled");
    api.app.settle().await.unwrap();
    assert_eq!(
        stream_types(api.app.store(), "payment-o-1").await,
        ["PaymentCaptured", "PaymentRefunded"]
    );
}

// ANCHOR: idempotency_test
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_replays_the_first_outcome() {
    let api = Api::new().await;
    let body = json!({
        "customer_id": "bob",
        "lines": [{"sku": "keyboard", "quantity": 1, "unit_price_cents": 4999}]
    })
    .to_string();
    let (status, first, replayed) = api.post_raw("/orders", &body, Some("place-42")).await;
    assert_eq!((status, replayed), (StatusCode::CREATED, false));
    let (status, again, replayed) = api.post_raw("/orders", &body, Some("place-42")).await;
    assert_eq!((status, replayed), (StatusCode::OK, true));
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["replayed"], true);
    let id = first["id"].as_str().unwrap();

    let pay = format!("/orders/{id}/pay");
    let (status, _, replayed) = api.post_raw(&pay, "", Some("pay-42")).await;
    assert_eq!((status, replayed), (StatusCode::OK, false));
    let (status, again, replayed) = api.post_raw(&pay, "", Some("pay-42")).await;
    assert_eq!((status, replayed), (StatusCode::OK, true));
    assert_eq!(again["events"], json!(["PaymentCaptured"]));

    // One order, one payment, and a new key is a new request.
    api.app.settle().await.unwrap();
    assert_eq!(api.app.orders().await.unwrap().len(), 1);
    assert_eq!(
        stream_types(api.app.store(), &format!("payment-{id}")).await,
        ["PaymentCaptured"]
    );
    let (status, _, _) = api.post_raw("/orders", &body, Some("place-43")).await;
    assert_eq!(status, StatusCode::CREATED);
}
// ANCHOR_END: idempotency_test

/// Two concurrent requests with one `Idempotency-Key` get the same answer: the first
/// outcome, never `200` for one and `409 the order is already paid` for the other.
async fn concurrent_requests_with_one_key_agree<S: PersonalStore, C: Coordination>(
    app: App<S, C>,
    rounds: usize,
) {
    let api = Arc::new(Api::on(app).await);
    let (status, _) = api
        .post("/inventory/keyboard/receive", json!({"quantity": rounds}))
        .await;
    assert_eq!(status, StatusCode::OK);
    for round in 0..rounds {
        let id = format!("race-{round}");
        let (status, _) = api.post("/orders", order(&id, 1)).await;
        assert_eq!(status, StatusCode::CREATED, "round {round}");
        let pay = format!("/orders/{id}/pay");
        let key = format!("pay-{round}");
        let requests = [(), ()].map(|()| {
            let (api, pay, key) = (Arc::clone(&api), pay.clone(), key.clone());
            tokio::spawn(async move { api.post_raw(&pay, "", Some(&key)).await })
        });
        let mut answers = Vec::new();
        for request in requests {
            let (status, mut body, _) = request.await.unwrap();
            // The replay says it is one; the rest of the answer is the same.
            if let Some(fields) = body.as_object_mut() {
                fields.remove("replayed");
            }
            answers.push((status, body));
        }
        assert_eq!(answers[0], answers[1], "round {round}: one answer");
        assert_eq!(
            answers[0].0,
            StatusCode::OK,
            "round {round}: {:?}",
            answers[0].1
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_with_one_key_agree_in_memory() {
    let app = App::in_memory(MemoryStore::new(), &AppOptions::default());
    concurrent_requests_with_one_key_agree(app, 100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_with_one_key_agree_on_postgres() {
    concurrent_requests_with_one_key_agree(on_postgres(&AppOptions::default()).await, 300).await;
}

/// Collects the fields of every event logged while it is the subscriber.
#[derive(Clone, Default)]
struct Log(Arc<std::sync::Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Log {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Fields(String);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.push_str(&format!("{}={value:?} ", field.name()));
            }
        }
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        self.0.lock().unwrap().push(fields.0);
    }
}

// ANCHOR: error_id_test
/// A store failure answers 500 with an error id and a generic message; the details go to
/// the log, under the same id.
#[tokio::test]
async fn store_failures_are_500_with_an_error_id_and_the_details_in_the_log() {
    use axum::response::IntoResponse as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    let log = Log::default();
    let subscriber = tracing_subscriber::registry().with(log.clone());
    let response = tracing::subscriber::with_default(subscriber, || {
        order_fulfillment::AppError::Internal("the database is gone".into()).into_response()
    });
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    let id = body["error_id"].as_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{body}");
    assert_eq!(body["status"], 500);
    let error = body["error"].as_str().unwrap();
    assert!(error.contains(id), "{error}");
    assert!(
        !error.contains("database"),
        "no detail reaches the client: {error}"
    );
    let logged = log.0.lock().unwrap().join("\n");
    assert!(
        logged.contains(id) && logged.contains("the database is gone"),
        "{logged}"
    );
}
// ANCHOR_END: error_id_test

/// Polls `GET path` until `check` accepts the answer, failing after a generous bound.
async fn get_until<S: PersonalStore, C: Coordination>(
    api: &Api<S, C>,
    path: &str,
    what: &str,
    check: impl Fn(StatusCode, &Value) -> bool,
) -> (StatusCode, Value) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (status, body) = api.get(path).await;
        if check(status, &body) {
            return (status, body);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A session of the store's database left idle in a transaction holds every committed event
/// back from the workers: `/health` turns 503 and names it, and once it commits the order's
/// stock is reserved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_names_a_transaction_holding_the_workers_back_on_postgres() {
    let options = AppOptions {
        head_held_back_after: Duration::from_secs(1),
        ..AppOptions::default()
    };
    let api = Api::on(on_postgres(&options).await).await;
    api.app.settle().await.unwrap();

    let url = factum_postgres::testing::TestDatabase::get().await.unwrap();
    let idle = factum_postgres::testing::OpenTransaction::begin(&url, "forgotten-session")
        .await
        .unwrap();
    let pid = idle.pid();

    let (status, body) = api.post("/orders", order("o-held", 2)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, health) = get_until(
        &api,
        "/health",
        "a 503 naming the session",
        |status, body| {
            status == StatusCode::SERVICE_UNAVAILABLE
                && body["problems"]
                    .as_array()
                    .is_some_and(|p| p.iter().any(|p| p["blocker"]["pid"] == pid))
        },
    )
    .await;
    assert_eq!(health["healthy"], false);
    let problem = &health["problems"][0];
    assert_eq!(problem["problem"], "head_held_back", "{health}");
    assert_eq!(problem["blocker"]["application_name"], "forgotten-session");
    assert_eq!(problem["blocker"]["state"], "idle in transaction");
    assert!(
        health["workers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["lag_events"].as_u64() > Some(0)),
        "{health}"
    );
    let (_, stock) = api.get("/inventory/keyboard").await;
    assert_eq!(stock["reserved"], 0, "the reservation waits: {stock}");

    idle.commit().await.unwrap();
    get_until(
        &api,
        "/inventory/keyboard",
        "the reservation",
        |_, stock| stock["reserved"] == 2,
    )
    .await;
    get_until(&api, "/health", "health to recover", |status, _| {
        status == StatusCode::OK
    })
    .await;
}

/// A `POST` to `path` with an `If-Match` header: status, body and the `ETag` answered.
async fn post_if_match<S: PersonalStore, C: Coordination>(
    api: &Api<S, C>,
    path: &str,
    if_match: &str,
) -> (StatusCode, Value, Option<String>) {
    let request = Request::post(path)
        .header("If-Match", if_match)
        .body(Body::empty())
        .unwrap();
    let (status, body, headers) = api.send_with_headers(request).await;
    let etag = headers.get("etag").map(|v| v.to_str().unwrap().to_owned());
    (status, body, etag)
}

// ANCHOR: if_match_test
/// `If-Match` carries the stream version the client decided on: the command runs only while
/// the stream is at it, and a stale one is 412 with both versions, changing nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_match_acts_on_the_expected_version_only() {
    let api = Api::new().await;
    let request = Request::post("/orders")
        .header("content-type", "application/json")
        .body(Body::from(order("o-1", 1).to_string()))
        .unwrap();
    let (status, placed, headers) = api.send_with_headers(request).await;
    assert_eq!(status, StatusCode::CREATED, "{placed}");
    assert_eq!(headers.get("etag").unwrap(), "\"1\"");
    assert_eq!(placed["version"], 1);

    // Stale: the order is at version 1.
    let (status, error, _) = post_if_match(&api, "/orders/o-1/cancel", "\"2\"").await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{error}");
    assert_eq!(error["status"], 412);
    assert_eq!(
        (&error["expected_version"], &error["actual_version"]),
        (&json!(2), &json!(1))
    );
    assert_eq!(
        stream_types(api.app.store(), "order-o-1").await,
        ["OrderPlaced"]
    );
    // Current: cancelled, and the answer names the new version.
    let (status, body, etag) = post_if_match(&api, "/orders/o-1/cancel", "\"1\"").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(etag.as_deref(), Some("\"2\""));
    assert_eq!(body["events"], json!(["OrderCancelled"]));

    // A payment's stream starts at version 0: `If-Match: "0"` pays once, and a retry on the
    // same version is 412, not a second capture.
    api.post("/orders", order("o-2", 1)).await;
    let (status, error, _) = post_if_match(&api, "/orders/o-2/pay", "\"1\"").await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{error}");
    assert_eq!(
        (&error["expected_version"], &error["actual_version"]),
        (&json!(1), &json!(0))
    );
    let (status, body, etag) = post_if_match(&api, "/orders/o-2/pay", "\"0\"").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(etag.as_deref(), Some("\"1\""));
    let (status, error, _) = post_if_match(&api, "/orders/o-2/pay", "\"0\"").await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{error}");
    assert_eq!(
        stream_types(api.app.store(), "payment-o-2").await,
        ["PaymentCaptured"]
    );
    // `*` asks for no version; anything but a quoted version is malformed.
    let (status, error, _) = post_if_match(&api, "/orders/o-2/pay", "*").await;
    assert_eq!(status, StatusCode::CONFLICT, "{error}");
    for malformed in ["1", "\"one\"", "W/\"1\""] {
        let (status, error, _) = post_if_match(&api, "/orders/o-2/cancel", malformed).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{malformed}: {error}");
    }
}
// ANCHOR_END: if_match_test

// ANCHOR: read_your_writes_test
/// A command's answer carries the position of its last event; a read model asked for
/// `?after=` that position shows the command's writes, without waiting for everything else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_model_after_a_position_shows_the_callers_own_writes() {
    let api = Api::new().await;
    let (status, placed) = api.post("/orders", order("o-1", 1)).await;
    assert_eq!(status, StatusCode::CREATED, "{placed}");
    let position = placed["position"].as_u64().expect("a position");
    let (status, row) = api.get(&format!("/orders/o-1?after={position}")).await;
    assert_eq!((status, &row["status"]), (StatusCode::OK, &json!("placed")));

    let (status, cancelled) = api.post("/orders/o-1/cancel", Value::Null).await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    let position = cancelled["position"].as_u64().expect("a position");
    assert!(position > placed["position"].as_u64().unwrap());
    let (status, row) = api.get(&format!("/orders/o-1?after={position}")).await;
    assert_eq!(
        (status, &row["status"]),
        (StatusCode::OK, &json!("cancelled"))
    );
    let (status, list) = api.get(&format!("/orders?after={position}")).await;
    assert_eq!(
        (status, &list[0]["status"]),
        (StatusCode::OK, &json!("cancelled"))
    );
    let (status, customers) = api.get(&format!("/customers?after={position}")).await;
    assert_eq!(
        (status, &customers[0]["order_count"]),
        (StatusCode::OK, &json!(1))
    );

    let (status, error) = api.get("/orders?after=soon").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
}
// ANCHOR_END: read_your_writes_test

/// A read model that does not reach the position in time answers 503, naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_model_that_does_not_catch_up_in_time_is_503() {
    let options = AppOptions {
        read_your_writes_within: Duration::from_millis(100),
        ..AppOptions::default()
    };
    let api = Api::on(App::in_memory(MemoryStore::new(), &options)).await;
    let (status, error) = api.get("/orders/o-1?after=1000000").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{error}");
    let message = error["error"].as_str().unwrap();
    assert!(
        message.contains("`order_list`") && message.contains("1000000"),
        "{message}"
    );
}

fn named_order(id: &str, customer: &str, name: &str) -> Value {
    json!({
        "order_id": id,
        "customer_id": customer,
        "customer_name": name,
        "lines": [{"sku": "keyboard", "quantity": 1, "unit_price_cents": 4999}],
    })
}

// ANCHOR: forget_test
/// Forgetting a customer erases their name from the order they placed, in the read model
/// (rebuilt) and in the stored history; the order still loads and takes commands; another
/// customer's name stays; the forgotten customer's name cannot be recorded again.
async fn forgetting_a_customer_erases_their_name<S: PersonalStore, C: Coordination>(
    api: &Api<S, C>,
) {
    let (status, body) = api
        .post("/orders", named_order("o-1", "alice", "Alice Liddell"))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = api
        .post("/orders", named_order("o-2", "bob", "Bob Marley"))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let after = body["position"].as_u64().unwrap();
    let (_, order) = api.get(&format!("/orders/o-1?after={after}")).await;
    assert_eq!(order["customer_name"], "Alice Liddell");

    let (status, body) = api.delete("/customers/alice/personal-data").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["forgotten"], "destroyed");
    let (_, body) = api.delete("/customers/alice/personal-data").await;
    assert_eq!(body["forgotten"], "already");
    let (status, body) = api.delete("/customers/nobody/personal-data").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(body["error"].as_str().unwrap().contains("nobody"), "{body}");

    // The read model was rebuilt with the name erased; the other customer keeps theirs.
    let (_, order) = api.get("/orders/o-1").await;
    assert_eq!(order["customer_name"], json!({"$erased": true}));
    assert_eq!(order["customer_id"], "alice");
    assert_eq!(order["total_cents"], 4999);
    let (_, other) = api.get("/orders/o-2").await;
    assert_eq!(other["customer_name"], "Bob Marley");
    let (_, history) = api.get("/orders/o-1/history").await;
    assert_eq!(
        history[0]["payload"]["customer_name"],
        json!({"$erased": true})
    );

    // The order still loads: it can be paid.
    let (status, body) = api.post("/orders/o-1/pay", Value::Null).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // A forgotten customer's name is not recorded again.
    let (status, body) = api
        .post("/orders", named_order("o-3", "alice", "Alice Liddell"))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("forgotten"),
        "{body}"
    );
}
// ANCHOR_END: forget_test

#[tokio::test]
async fn forgetting_a_customer_erases_their_name_in_memory() {
    let api = Api::new().await;
    forgetting_a_customer_erases_their_name(&api).await;
}

#[tokio::test]
async fn forgetting_a_customer_erases_their_name_on_postgres() {
    let store = common::postgres().await;
    let app = App::on_postgres(store.clone(), common::master_key(), &AppOptions::default())
        .await
        .unwrap();
    let api = Api::on(app).await;
    forgetting_a_customer_erases_their_name(&api).await;

    // No table of the schema holds the forgotten name; the other customer's name is only
    // in the read model, the events holding it encrypted.
    let schema = store.config().schema.clone();
    let client = store.pool().get().await.unwrap();
    let tables = client
        .query(
            "SELECT quote_ident(table_name) FROM information_schema.tables \
             WHERE table_schema = $1 AND table_type = 'BASE TABLE'",
            &[&schema.as_str()],
        )
        .await
        .unwrap();
    let mut found = Vec::new();
    for table in &tables {
        let table: String = table.get(0);
        let sql = format!(
            "SELECT count(*) FILTER (WHERE to_jsonb(t)::text LIKE '%Alice Liddell%'), \
                    count(*) FILTER (WHERE to_jsonb(t)::text LIKE '%Bob Marley%') \
             FROM {}.{table} AS t",
            schema.quoted()
        );
        let row = client.query_one(&sql, &[]).await.unwrap();
        found.push((table, row.get::<_, i64>(0), row.get::<_, i64>(1)));
    }
    assert!(found.iter().all(|(_, alice, _)| *alice == 0), "{found:?}");
    let bob: Vec<&str> = found
        .iter()
        .filter(|(_, _, bob)| *bob > 0)
        .map(|(t, _, _)| t.as_str())
        .collect();
    assert_eq!(bob, ["order_list"], "{found:?}");
}

/// Places orders `o-1` to `o-5` of customers `c-1` to `c-5` (the last in dollars, the others
/// in euros), pays them, and waits for the read
/// models.
async fn five_orders<S: PersonalStore, C: Coordination>(api: &Api<S, C>) {
    api.post("/inventory/keyboard/receive", json!({"quantity": 20}))
        .await;
    for n in 1..=5 {
        let mut body = order(&format!("o-{n}"), 1);
        body["customer_id"] = json!(format!("c-{n}"));
        if n == 5 {
            body["currency"] = json!("USD");
        }
        let (status, placed) = api.post("/orders", body).await;
        assert_eq!(status, StatusCode::CREATED, "{placed}");
        let (status, paid) = api.post(&format!("/orders/o-{n}/pay"), Value::Null).await;
        assert_eq!(status, StatusCode::OK, "{paid}");
    }
    api.app.settle().await.unwrap();
}

/// `GET path` with its headers.
async fn get_with_link<S: PersonalStore, C: Coordination>(
    api: &Api<S, C>,
    path: &str,
) -> (StatusCode, Value, Option<String>) {
    let request = Request::get(path).body(Body::empty()).unwrap();
    let (status, body, headers) = api.send_with_headers(request).await;
    let link = headers.get("link").map(|l| l.to_str().unwrap().to_owned());
    (status, body, link)
}

/// Follows the `Link: <...>; rel="next"` headers from `first`, returning each page's keys.
async fn pages<S: PersonalStore, C: Coordination>(
    api: &Api<S, C>,
    first: &str,
    key: &str,
) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut next = Some(first.to_owned());
    while let Some(path) = next.take() {
        let (status, body, link) = get_with_link(api, &path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        pages.push(
            body.as_array()
                .unwrap()
                .iter()
                .map(|row| row[key].as_str().unwrap().to_owned())
                .collect(),
        );
        next = link.map(|link| {
            let (url, rel) = link.split_once("; ").unwrap();
            assert_eq!(rel, "rel=\"next\"");
            url.trim_start_matches('<').trim_end_matches('>').to_owned()
        });
        assert!(pages.len() < 10, "the pages do not end");
    }
    pages
}

// ANCHOR: pages_test
/// The lists come in pages of `limit` rows, each answer linking to the next until the
/// last; a limit out of bounds or a malformed cursor is a 400.
async fn lists_are_paged<S: PersonalStore, C: Coordination>(app: App<S, C>) {
    let api = Api::on(app).await;
    five_orders(&api).await;
    assert_eq!(
        pages(&api, "/orders?limit=2", "order_id").await,
        [vec!["o-1", "o-2"], vec!["o-3", "o-4"], vec!["o-5"]]
    );
    assert_eq!(
        pages(&api, "/customers?limit=3", "customer_id").await,
        [vec!["c-1", "c-2", "c-3"], vec!["c-4", "c-5"]]
    );
    let (_, _, link) = get_with_link(&api, "/orders?limit=4").await;
    assert_eq!(
        link.as_deref(),
        Some("</orders?limit=4&cursor=o-4>; rel=\"next\"")
    );
    // One page without a limit: the default (50) holds them all, and has no next.
    let (_, all, link) = get_with_link(&api, "/orders").await;
    assert_eq!((all.as_array().unwrap().len(), link), (5, None));
    // The daily sales' cursor is `DAY/CURRENCY`: one day, two currencies.
    assert_eq!(
        pages(&api, "/sales/daily?limit=1", "currency").await,
        [vec!["EUR"], vec!["USD"]]
    );

    for (path, expected) in [
        ("/orders?limit=0", "limit 0 is out of bounds"),
        ("/orders?limit=501", "limit 501 is out of bounds"),
        ("/customers?limit=-1", "invalid query"),
        ("/sales/daily?cursor=yesterday", "is not DAY/CURRENCY"),
    ] {
        let (status, error) = api.get(path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {error}");
        let message = error["error"].as_str().unwrap();
        assert!(message.contains(expected), "{path}: {message}");
    }
}
// ANCHOR_END: pages_test

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_are_paged_in_memory() {
    lists_are_paged(App::in_memory(MemoryStore::new(), &AppOptions::default())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_are_paged_on_postgres() {
    lists_are_paged(on_postgres(&AppOptions::default()).await).await;
}

/// The API over a fresh in-memory app, with `options`.
fn with_options(options: &ServiceOptions) -> Router {
    let app = App::in_memory(MemoryStore::new(), &AppOptions::default());
    http::router_with(Arc::new(app), options)
}

/// Sends `request` to `router`: the status and the JSON body.
async fn send_to(router: &Router, request: Request<Body>) -> (StatusCode, Value) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

// ANCHOR: limits_test
/// A body over the limit is a 413, whether it announces its length or not; a request over
/// the time limit is a 408; both with the API's JSON error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_and_requests_over_the_limits_are_413_and_408() {
    let options = ServiceOptions {
        body_limit: 1024,
        request_timeout: Duration::from_millis(300),
        ..ServiceOptions::default()
    };
    let router = with_options(&options);
    let big = format!(r#"{{"customer_id": "{}", "lines": []}}"#, "x".repeat(2048));
    for announced in [true, false] {
        let mut request = Request::post("/orders").header("content-type", "application/json");
        if announced {
            request = request.header("content-length", big.len());
        }
        let body = if announced {
            Body::from(big.clone())
        } else {
            // A body of unknown length, as a chunked upload sends it.
            let chunks = futures_stream(big.clone());
            Body::from_stream(chunks)
        };
        let (status, error) = send_to(&router, request.body(body).unwrap()).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{error}");
        assert_eq!(error["status"], 413, "{error}");
    }
    // A small body passes.
    let small = r#"{"customer_id": "alice", "lines": []}"#;
    let request = Request::post("/orders")
        .header("content-type", "application/json")
        .body(Body::from(small))
        .unwrap();
    let (status, error) = send_to(&router, request).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "refused by the domain: {error}"
    );

    // Waiting for a position no read model reaches: the time limit answers first.
    let request = Request::get("/orders?after=1000000")
        .body(Body::empty())
        .unwrap();
    let (status, error) = send_to(&router, request).await;
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT, "{error}");
    assert_eq!(
        error["error"],
        "the request took longer than this server allows"
    );
}
// ANCHOR_END: limits_test

/// A body in two chunks, without a length.
fn futures_stream(
    text: String,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    let (a, b) = text.split_at(text.len() / 2);
    let chunks = vec![Ok(a.as_bytes().to_vec()), Ok(b.as_bytes().to_vec())];
    futures_util::stream::iter(chunks)
}

// ANCHOR: metrics_test
/// `/metrics` renders the framework's lag gauges and the example's command, load and
/// answer figures in Prometheus' text format.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_in_prometheus_text() {
    let api = Api::new().await;
    let (status, _) = api.post("/orders", order("o-1", 1)).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = api.post("/orders/o-1/pay", Value::Null).await;
    assert_eq!(status, StatusCode::OK);
    api.app.settle().await.unwrap();
    let wanted = [
        "# TYPE order_fulfillment_command_seconds histogram",
        "order_fulfillment_command_seconds_bucket{command=\"PlaceOrder\",outcome=\"ok\",le=\"0.5\"}",
        "order_fulfillment_events_appended_total{command=\"CapturePayment\"}",
        "order_fulfillment_load_seconds_count{aggregate=\"order\"}",
        "order_fulfillment_http_responses_total{status=\"201\"}",
        "factum_projection_lag_positions{projection=\"order_list\",partition=\"0\"}",
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let request = Request::get("/metrics").body(Body::empty()).unwrap();
        let response = api.router.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let content_type = response.headers()["content-type"].to_str().unwrap();
        assert!(content_type.starts_with("text/plain; version=0.0.4"));
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        let missing: Vec<&str> = wanted
            .iter()
            .copied()
            .filter(|w| !text.contains(w))
            .collect();
        if missing.is_empty() {
            // For the book: the first line of each figure asked for, as rendered.
            let lines: Vec<&str> = wanted
                .iter()
                .filter_map(|w| text.lines().find(|l| l.starts_with(w)))
                .collect();
            common::capture("metrics", &(lines.join("\n") + "\n"));
            break;
        }
        // The lag gauges are refreshed every second by the workers.
        assert!(
            tokio::time::Instant::now() < deadline,
            "missing {missing:?} in\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
// ANCHOR_END: metrics_test

/// The operator's page and its JSON: the page itself, the lag samples the server takes, and
/// the doctor's findings in memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_routes_serve_the_page_lag_samples_and_findings() {
    let options = ServiceOptions {
        lag_sample_every: Duration::from_millis(50),
        lag_samples: 4,
        ..ServiceOptions::default()
    };
    let router = with_options(&options);
    let response = router
        .clone()
        .oneshot(Request::get("/admin").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let page = String::from_utf8(bytes.to_vec()).unwrap();
    assert!(page.contains("<svg id=\"lag\"") && page.contains("id=\"replay\""));
    // Self-contained: no script, style or font fetched from elsewhere.
    assert!(
        !page.contains("<script src") && !page.contains("<link"),
        "{page}"
    );

    // The ring buffer fills up to its size and stays there.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let lag = loop {
        let (status, lag) = send_to(
            &router,
            Request::get("/admin/lag").body(Body::empty()).unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        if lag["samples"].as_array().unwrap().len() == 4 {
            break lag;
        }
        assert!(tokio::time::Instant::now() < deadline, "{lag}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(lag["every_seconds"], 0.05);
    let names: Vec<&str> = lag["samples"][3]["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"order_list") && names.contains(&"order_fulfillment"),
        "{lag}"
    );

    let (status, doctor) = send_to(
        &router,
        Request::get("/admin/doctor").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{doctor}");
    assert_eq!(doctor["healthy"], true);
    let checks: Vec<(&str, &str)> = doctor["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["check"].as_str().unwrap(), f["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        checks,
        [("workers", "ok"), ("lag", "ok"), ("dead letters", "ok")]
    );
}

// ANCHOR: traceparent_test
/// A request's `traceparent` is continued: the order's event carries its trace, and so do
/// the events of the command the fulfillment process sends for the order; a malformed one is
/// no trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requests_traceparent_continues_through_the_flow() {
    let api = Api::new().await;
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let place = |id: &str, traceparent: &str| {
        Request::post("/orders")
            .header("content-type", "application/json")
            .header("traceparent", traceparent)
            .header("tracestate", "congo=t61rcWkgMzE")
            .body(Body::from(order(id, 1).to_string()))
            .unwrap()
    };
    let (status, body, _) = api.send(place("o-1", traceparent)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body, _) = api.send(place("o-2", "00-zz-01")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    api.app.settle().await.unwrap();

    let traces = |stream: &str| {
        let stream = factum::StreamId::parse(stream).unwrap();
        let store = api.app.store();
        async move {
            store
                .read_stream(&stream, &factum::store::StreamRead::all())
                .await
                .unwrap()
                .into_iter()
                .map(|e| (e.event_type, e.metadata.trace))
                .collect::<Vec<_>>()
        }
    };
    let expected = factum::trace::TraceContext::new(traceparent).state("congo=t61rcWkgMzE");
    assert_eq!(
        traces("order-o-1").await,
        [("OrderPlaced".to_owned(), Some(expected))]
    );
    // The reservation the process made for o-1 is in the request's trace.
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let reserved: Vec<_> = traces("inventory-keyboard")
        .await
        .into_iter()
        .filter(|(t, _)| t == "StockReserved")
        .collect();
    assert_eq!(reserved.len(), 2, "{reserved:?}");
    let in_trace = reserved
        .iter()
        .filter(|(_, trace)| {
            trace
                .as_ref()
                .is_some_and(|t| t.traceparent.contains(trace_id))
        })
        .count();
    assert_eq!(in_trace, 1, "only o-1's reservation: {reserved:?}");
    assert_eq!(
        traces("order-o-2").await,
        [("OrderPlaced".to_owned(), None)]
    );
}
// ANCHOR_END: traceparent_test
