//! The HTTP API, on axum.
//!
//! | method and path | does |
//! |---|---|
//! | `POST /orders` | places an order: `{"customer_id", "lines": [{"sku", "quantity", "unit_price_cents"}], "currency"?, "order_id"?}` |
//! | `POST /orders/{id}/pay` | captures the payment for the order's total |
//! | `POST /orders/{id}/ship` | hands the shipment to a carrier: `{"carrier"}` (optional) |
//! | `POST /orders/{id}/cancel` | cancels: `{"reason"}` (optional) |
//! | `GET /orders`, `GET /orders/{id}` | the order list, one order |
//! | `GET /orders/{id}/history` | the order's stored events |
//! | `GET /customers`, `GET /sales/daily` | customer statistics, daily sales |
//! | `POST /inventory/{sku}/receive`, `GET /inventory/{sku}` | adds stock: `{"quantity"}`; stock levels |
//! | `GET /health` | the projections' and the process's workers, and what is wrong: 503 when one stopped or stalled, or an open transaction held committed events back (naming its session) |
//! | `GET /dead-letters`, `POST /dead-letters/replay` | events the read models parked; handles them again |
//!
//! `POST` requests take an `Idempotency-Key` header: a request repeated with the same key
//! gets the first one's outcome, marked `"replayed": true` and with the header
//! `Idempotent-Replayed: true`, and changes nothing. Errors are JSON,
//! `{"status": 409, "error": "..."}`: 400 for malformed input, 404 for an unknown order,
//! 409 for a request the current state refuses, 500 when the store fails.

use std::sync::Arc;

use crate::backend::Backend;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::app::{App, AppError, NewOrder, Outcome};

/// The header carrying the idempotency key.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// The response header set on a replayed request.
pub const REPLAYED: &str = "idempotent-replayed";
/// The longest idempotency key accepted.
const MAX_KEY_LEN: usize = 255;

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = match &self {
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::Conflict(_) => StatusCode::CONFLICT,
            AppError::Internal(message) => {
                tracing::error!(%message, "request failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let body = json!({ "status": status.as_u16(), "error": self.to_string() });
        (status, axum::Json(body)).into_response()
    }
}

// ANCHOR: router
/// The API's routes over `app`.
pub fn router<S: Backend>(app: Arc<App<S>>) -> Router {
    Router::new()
        .route("/orders", post(place::<S>).get(list_orders::<S>))
        .route("/orders/{id}", get(get_order::<S>))
        .route("/orders/{id}/history", get(history::<S>))
        .route("/orders/{id}/pay", post(pay::<S>))
        .route("/orders/{id}/ship", post(ship::<S>))
        .route("/orders/{id}/cancel", post(cancel::<S>))
        .route("/customers", get(customers::<S>))
        .route("/sales/daily", get(daily_sales::<S>))
        .route("/inventory/{sku}", get(stock::<S>))
        .route("/inventory/{sku}/receive", post(receive::<S>))
        .route("/health", get(health::<S>))
        .route("/dead-letters", get(dead_letters::<S>))
        .route("/dead-letters/replay", post(replay_dead_letters::<S>))
        .fallback(|| async { AppError::NotFound("no such route".into()) })
        .with_state(app)
}
// ANCHOR_END: router

type Shared<S> = State<Arc<App<S>>>;

/// The idempotency key, if the request has one.
fn key(headers: &HeaderMap) -> Result<Option<String>, AppError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .map_err(|_| AppError::BadRequest("the Idempotency-Key must be visible ASCII".into()))?
        .trim();
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(AppError::BadRequest(format!(
            "the Idempotency-Key must have 1 to {MAX_KEY_LEN} characters"
        )));
    }
    Ok(Some(key.to_owned()))
}

/// A JSON body; an empty body is `T::default()` when `T` has one.
fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, AppError> {
    serde_json::from_slice(bytes)
        .map_err(|e| AppError::BadRequest(format!("invalid JSON body: {e}")))
}

fn optional_body<T: DeserializeOwned + Default>(bytes: &Bytes) -> Result<T, AppError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        body(bytes)
    }
}

fn outcome(status: StatusCode, outcome: Outcome) -> Response {
    let replayed = outcome.replayed;
    let mut response = (status, axum::Json(outcome)).into_response();
    if replayed {
        response
            .headers_mut()
            .insert(REPLAYED, HeaderValue::from_static("true"));
    }
    response
}

async fn place<S: Backend>(
    State(app): Shared<S>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, AppError> {
    let key = key(&headers)?;
    let order: NewOrder = body(&bytes)?;
    let done = app.place_order(order, key.as_deref()).await?;
    let status = if done.replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok(outcome(status, done))
}

async fn pay<S: Backend>(
    State(app): Shared<S>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let key = key(&headers)?;
    let done = app.pay(&id, key.as_deref()).await?;
    Ok(outcome(StatusCode::OK, done))
}

/// The body of `POST /orders/{id}/ship`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Ship {
    carrier: String,
}

impl Default for Ship {
    fn default() -> Self {
        Self {
            carrier: "post".into(),
        }
    }
}

async fn ship<S: Backend>(
    State(app): Shared<S>,
    Path(id): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, AppError> {
    let key = key(&headers)?;
    let request: Ship = optional_body(&bytes)?;
    let done = app.ship(&id, &request.carrier, key.as_deref()).await?;
    Ok(outcome(StatusCode::OK, done))
}

/// The body of `POST /orders/{id}/cancel`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Cancel {
    reason: String,
}

impl Default for Cancel {
    fn default() -> Self {
        Self {
            reason: "cancelled by the customer".into(),
        }
    }
}

async fn cancel<S: Backend>(
    State(app): Shared<S>,
    Path(id): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, AppError> {
    let key = key(&headers)?;
    let request: Cancel = optional_body(&bytes)?;
    let done = app.cancel(&id, &request.reason, key.as_deref()).await?;
    Ok(outcome(StatusCode::OK, done))
}

/// The body of `POST /inventory/{sku}/receive`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Receive {
    quantity: u32,
}

async fn receive<S: Backend>(
    State(app): Shared<S>,
    Path(sku): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, AppError> {
    let key = key(&headers)?;
    let request: Receive = body(&bytes)?;
    let done = app
        .receive_stock(&sku, request.quantity, key.as_deref())
        .await?;
    Ok(outcome(StatusCode::OK, done))
}

async fn list_orders<S: Backend>(State(app): Shared<S>) -> Result<Response, AppError> {
    Ok(axum::Json(app.orders().await?).into_response())
}

async fn get_order<S: Backend>(
    State(app): Shared<S>,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    Ok(axum::Json(app.order(&id).await?).into_response())
}

async fn history<S: Backend>(
    State(app): Shared<S>,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    Ok(axum::Json(app.history(&id).await?).into_response())
}

async fn customers<S: Backend>(State(app): Shared<S>) -> Result<Response, AppError> {
    Ok(axum::Json(app.customers().await?).into_response())
}

async fn daily_sales<S: Backend>(State(app): Shared<S>) -> Result<Response, AppError> {
    Ok(axum::Json(app.daily_sales().await?).into_response())
}

async fn stock<S: Backend>(
    State(app): Shared<S>,
    Path(sku): Path<String>,
) -> Result<Response, AppError> {
    Ok(axum::Json(app.stock(&sku).await?).into_response())
}

async fn dead_letters<S: Backend>(State(app): Shared<S>) -> Result<Response, AppError> {
    Ok(axum::Json(app.dead_letters().await?).into_response())
}

async fn replay_dead_letters<S: Backend>(State(app): Shared<S>) -> Result<Response, AppError> {
    let marked = app.replay_dead_letters().await?;
    Ok(axum::Json(json!({ "replay_requested": marked })).into_response())
}

/// How long a worker may be behind without progress before it counts as stalled.
const STALLED_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

async fn health<S: Backend>(State(app): Shared<S>) -> Response {
    let report = app.health_report(STALLED_AFTER);
    let status = if report.healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(report)).into_response()
}
