//! The HTTP API through `tower::ServiceExt::oneshot`, without a socket: place → pay → ship
//! (in memory and on PostgreSQL), errors as JSON with 400 / 404 / 409, and replays of an
//! `Idempotency-Key`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use factum::MemoryStore;
use order_fulfillment::{App, AppOptions, Backend, http};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use common::stream_types;

struct Api<S: Backend> {
    app: Arc<App<S>>,
    router: Router,
}

impl Api<MemoryStore> {
    async fn new() -> Self {
        Self::on(MemoryStore::new()).await
    }
}

impl<S: Backend> Api<S> {
    async fn on(store: S) -> Self {
        Self::on_with(store, &AppOptions::default()).await
    }

    async fn on_with(store: S, options: &AppOptions) -> Self {
        let app = Arc::new(App::start_with(store, options).await.unwrap());
        let router = http::router(Arc::clone(&app));
        let api = Self { app, router };
        let (status, _) = api
            .post("/inventory/keyboard/receive", json!({"quantity": 5}))
            .await;
        assert_eq!(status, StatusCode::OK);
        api
    }

    async fn send(&self, request: Request<Body>) -> (StatusCode, Value, bool) {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let replayed = response.headers().get(http::REPLAYED).is_some();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        (status, body, replayed)
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

/// The flow the book shows with curl, on `store`.
async fn place_pay_ship<S: Backend>(store: S) {
    let api = Api::on(store).await;
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
    place_pay_ship(MemoryStore::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn place_pay_ship_on_postgres() {
    place_pay_ship(common::postgres().await).await;
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
async fn concurrent_requests_with_one_key_agree<S: Backend>(store: S, rounds: usize) {
    let api = Arc::new(Api::on(store).await);
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
    concurrent_requests_with_one_key_agree(MemoryStore::new(), 100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_with_one_key_agree_on_postgres() {
    concurrent_requests_with_one_key_agree(common::postgres().await, 300).await;
}

#[tokio::test]
async fn store_failures_are_500_without_details_lost() {
    use axum::response::IntoResponse as _;
    let response =
        order_fulfillment::AppError::Internal("the database is gone".into()).into_response();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        body,
        json!({"status": 500, "error": "the database is gone"})
    );
}

/// Polls `GET path` until `check` accepts the answer, failing after a generous bound.
async fn get_until<S: Backend>(
    api: &Api<S>,
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
    let store = common::postgres().await;
    let options = AppOptions {
        head_held_back_after: Duration::from_secs(1),
        ..AppOptions::default()
    };
    let api = Api::on_with(store, &options).await;
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
