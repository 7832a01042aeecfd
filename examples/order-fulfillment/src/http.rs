//! The HTTP API, on axum.
//!
//! | method and path | does |
//! |---|---|
//! | `POST /orders` | places an order: `{"customer_id", "lines": [{"sku", "quantity", "unit_price_cents"}], "currency"?, "order_id"?, "customer_name"?}` |
//! | `POST /orders/{id}/pay` | captures the payment for the order's total |
//! | `POST /orders/{id}/ship` | hands the shipment to a carrier: `{"carrier"}` (optional) |
//! | `POST /orders/{id}/cancel` | cancels: `{"reason"}` (optional) |
//! | `GET /orders`, `GET /orders/{id}` | the order list, one order |
//! | `GET /orders/{id}/history` | the order's stored events |
//! | `GET /customers`, `GET /sales/daily` | customer statistics, daily sales |
//! | `DELETE /customers/{id}/personal-data` | forgets a customer: destroys the key of their personal data (their name in orders) and rebuilds the read models; `{"forgotten": "destroyed"}` or `"already"`, 404 for a customer whose personal data was never stored |
//! | `POST /inventory/{sku}/receive`, `GET /inventory/{sku}` | adds stock: `{"quantity"}`; stock levels |
//! | `GET /health` | the projections' and the process's workers, and what is wrong: 503 when one stopped or stalled, or an open transaction held committed events back (naming its session) |
//! | `GET /dead-letters`, `POST /dead-letters/replay` | events the read models parked; handles them again |
//! | `GET /metrics` | every figure of the process in Prometheus' text format (see [`crate::service`]) |
//! | `GET /admin` | the operator's page (see [`crate::admin`]), with `GET /admin/lag` and `GET /admin/doctor` |
//!
//! The lists (`/orders`, `/customers`, `/sales/daily`) come in pages: `?limit=N` rows (50
//! by default, at most 500: [`ServiceOptions`]) after `?cursor=KEY`, the key of the last row
//! of the previous page (an order or customer id, `DAY/CURRENCY` for the daily sales); an
//! answer with more rows after it links to the next page in a `Link: <...>; rel="next"`
//! header.
//!
//! A request with a W3C `traceparent` header (and `tracestate`) continues that trace: the
//! events of its commands carry it, and the framework carries it on through the projections,
//! the fulfillment process and the commands it sends.
//!
//! `POST` requests take an `Idempotency-Key` header: a request repeated with the same key
//! gets the first one's outcome, marked `"replayed": true` and with the header
//! `Idempotent-Replayed: true`, and changes nothing.
//!
//! A command's outcome carries the version of the stream it wrote as its `ETag` (and as
//! `"version"`), and the global position of its last event as `"position"`. `pay` and
//! `cancel` take `If-Match: "VERSION"`: the command runs only while the stream (`payment-ID`,
//! `order-ID`) is at that version, else nothing changes and the answer is 412 with
//! `"expected_version"` and `"actual_version"`. The read model endpoints take
//! `?after=POSITION`: they answer once the read model has handled every event up to that
//! position, so a client reads its own writes.
//!
//! A multi-tenant server ([`multi_tenant_router`], `serve --multi-tenant`) runs each request
//! on the app of the tenant its `X-Tenant` header names: that tenant's streams, read models
//! and workers. A request without the header, or with one that is not a tenant id, is a 400
//! naming the header, before its body is read; `/health` and `/dead-letters` take no tenant
//! and cover every started tenant. A single-tenant server refuses the header.
//!
//! Errors are JSON, `{"status": 409, "error": "..."}`: 400 for malformed input, 404 for an
//! unknown order, 408 for a request over the time limit, 409 for a request the current
//! state refuses, 412 for an `If-Match` that no longer holds, 413 for a body over the size
//! limit, 503 when a read model does not reach `after` in time, 500 when the store fails:
//! then with an `error_id` and a generic message, the details logged under that id.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use factum::Coordination;
use factum::coordination::ParkedEvent;
use factum::personal::Forgotten;
use factum::tenant::TenantId;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::task::AbortHandle;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use uuid::Uuid;

use crate::admin;
use crate::app::{App, AppError, HealthReport, NewOrder, Outcome, PersonalStore, with_trace};
use crate::read_model::{CUSTOMER_STATS, DAILY_SALES, ORDER_LIST, Page, sales_key};
use crate::service::{LagHistory, ServiceOptions, metrics_handle};
use crate::tenants::Tenants;

/// The header naming the tenant of a request to a multi-tenant server.
pub const TENANT: &str = "x-tenant";
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
            AppError::VersionMismatch { .. } => StatusCode::PRECONDITION_FAILED,
            AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Internal(message) => {
                // The details stay in the log, under an id the client can quote.
                let error_id = Uuid::new_v4();
                tracing::error!(%error_id, %message, "request failed");
                let body = json!({
                    "status": 500,
                    "error": format!("internal error {error_id}: the server's log has the details"),
                    "error_id": error_id,
                });
                return (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(body)).into_response();
            }
        };
        let mut body = json!({ "status": status.as_u16(), "error": self.to_string() });
        if let AppError::VersionMismatch {
            expected, actual, ..
        } = &self
        {
            body["expected_version"] = json!(expected);
            body["actual_version"] = json!(actual);
        }
        (status, axum::Json(body)).into_response()
    }
}

// ANCHOR: router
/// The API's routes over `app`, on a single-tenant store, with the default
/// [`ServiceOptions`].
pub fn router<S: PersonalStore, C: Coordination>(app: Arc<App<S, C>>) -> Router {
    router_with(app, &ServiceOptions::default())
}

/// The API's routes over `app`, with `options`.
pub fn router_with<S: PersonalStore, C: Coordination>(
    app: Arc<App<S, C>>,
    options: &ServiceOptions,
) -> Router {
    routes(Apps::Single(app), options)
}

/// The API's routes over the apps of `tenants`: each request runs on its tenant's app,
/// named by its `X-Tenant` header; `/health` and `/dead-letters` cover every started
/// tenant.
pub fn multi_tenant_router<S: PersonalStore, C: Coordination>(
    tenants: Arc<Tenants<S, C>>,
) -> Router {
    multi_tenant_router_with(tenants, &ServiceOptions::default())
}

/// The multi-tenant API's routes over `tenants`, with `options`.
pub fn multi_tenant_router_with<S: PersonalStore, C: Coordination>(
    tenants: Arc<Tenants<S, C>>,
    options: &ServiceOptions,
) -> Router {
    routes(Apps::Tenants(tenants), options)
}

/// The API's routes over `apps`, behind the request body and time limits of `options`.
fn routes<S: PersonalStore, C: Coordination>(apps: Apps<S, C>, options: &ServiceOptions) -> Router {
    // Installed before the first request, so that /metrics has the figures from the start.
    let _ = metrics_handle();
    Router::new()
        .route("/orders", post(place::<S, C>).get(list_orders::<S, C>))
        .route("/orders/{id}", get(get_order::<S, C>))
        .route("/orders/{id}/history", get(history::<S, C>))
        .route("/orders/{id}/pay", post(pay::<S, C>))
        .route("/orders/{id}/ship", post(ship::<S, C>))
        .route("/orders/{id}/cancel", post(cancel::<S, C>))
        .route("/customers", get(customers::<S, C>))
        .route(
            "/customers/{id}/personal-data",
            delete(forget_customer::<S, C>),
        )
        .route("/sales/daily", get(daily_sales::<S, C>))
        .route("/inventory/{sku}", get(stock::<S, C>))
        .route("/inventory/{sku}/receive", post(receive::<S, C>))
        .route("/health", get(health::<S, C>))
        .route("/dead-letters", get(dead_letters::<S, C>))
        .route("/dead-letters/replay", post(replay_dead_letters::<S, C>))
        .route("/metrics", get(metrics_text))
        .merge(admin::routes::<S, C>())
        .fallback(|| async { AppError::NotFound("no such route".into()) })
        .layer(axum::middleware::from_fn(continue_trace))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            options.request_timeout,
        ))
        .layer(RequestBodyLimitLayer::new(options.body_limit))
        .layer(axum::middleware::map_response(limits_as_json))
        .with_state(Served::start(apps, options.clone()))
}
// ANCHOR_END: router

// ANCHOR: limits
/// Gives the answers of the limits, which have no body of their own (413 for a body over
/// [`ServiceOptions::body_limit`], 408 for a request over
/// [`ServiceOptions::request_timeout`]), the API's JSON error body, and counts every
/// answer by status.
async fn limits_as_json(response: Response) -> Response {
    let status = response.status();
    metrics::counter!(HTTP_RESPONSES, "status" => status.as_str().to_owned()).increment(1);
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"application/json"));
    let error = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "the request body is larger than this server accepts",
        StatusCode::REQUEST_TIMEOUT => "the request took longer than this server allows",
        _ => return response,
    };
    if is_json {
        return response;
    }
    let body = json!({ "status": status.as_u16(), "error": error });
    (status, axum::Json(body)).into_response()
}
// ANCHOR_END: limits

// ANCHOR: continue_trace
/// Continues the trace of a request that comes with a W3C `traceparent` header (and
/// `tracestate`): the commands it sends carry that context, checked by OpenTelemetry's
/// propagator (a malformed one is no context: the request starts its own trace).
async fn continue_trace(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let trace = {
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .and_then(|value| value.to_str().ok())
        };
        factum_otel::context_from_headers(
            header(factum_otel::TRACEPARENT),
            header(factum_otel::TRACESTATE),
        )
    };
    with_trace(trace, next.run(request)).await
}
// ANCHOR_END: continue_trace

/// The counter of the API's answers, by status.
pub const HTTP_RESPONSES: &str = "order_fulfillment_http_responses_total";

/// `GET /metrics`: every figure of the process, in Prometheus' text format.
async fn metrics_text() -> Response {
    match metrics_handle() {
        Some(handle) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            handle.render(),
        )
            .into_response(),
        None => AppError::Unavailable(
            "another metrics recorder was installed first: no Prometheus figures".into(),
        )
        .into_response(),
    }
}

// ANCHOR: apps
/// What the API serves: one app, or the apps of a multi-tenant store's tenants.
pub(crate) enum Apps<S, C> {
    /// One app, on a single-tenant store: requests name no tenant.
    Single(Arc<App<S, C>>),
    /// One app per tenant: each request names its tenant in [`TENANT`].
    Tenants(Arc<Tenants<S, C>>),
}

impl<S: PersonalStore, C: Coordination> Apps<S, C> {
    /// The workers of every app and what is wrong with them.
    pub(crate) fn health_report(&self, stalled_after: Duration) -> HealthReport {
        match self {
            Apps::Single(app) => app.health_report(stalled_after),
            Apps::Tenants(tenants) => tenants.health_report(stalled_after),
        }
    }

    /// The events every app's read models parked.
    pub(crate) async fn dead_letters(&self) -> Result<Vec<ParkedEvent>, AppError> {
        match self {
            Apps::Single(app) => app.dead_letters().await,
            Apps::Tenants(tenants) => tenants.dead_letters().await,
        }
    }
}

/// The state of the routes: the apps, the service's options and the lag history that a
/// background task samples while the routes exist.
pub(crate) struct Served<S, C> {
    pub(crate) apps: Apps<S, C>,
    pub(crate) options: ServiceOptions,
    pub(crate) lag: LagHistory,
    sampler: Mutex<Option<AbortHandle>>,
}

impl<S: PersonalStore, C: Coordination> Served<S, C> {
    /// The state over `apps`, sampling their workers' lag every
    /// [`ServiceOptions::lag_sample_every`] (when started within a tokio runtime).
    fn start(apps: Apps<S, C>, options: ServiceOptions) -> Arc<Self> {
        let served = Arc::new(Self {
            apps,
            lag: LagHistory::new(options.lag_samples),
            options,
            sampler: Mutex::new(None),
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let weak = Arc::downgrade(&served);
            let every = served.options.lag_sample_every;
            let task = runtime.spawn(async move {
                let mut ticks = tokio::time::interval(every);
                loop {
                    ticks.tick().await;
                    let Some(served) = weak.upgrade() else { break };
                    served.lag.record(&served.apps.health_report(STALLED_AFTER));
                    if let Some(metrics) = metrics_handle() {
                        metrics.run_upkeep();
                    }
                }
            });
            *served
                .sampler
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(task.abort_handle());
        }
        served
    }
}

impl<S, C> Drop for Served<S, C> {
    fn drop(&mut self) {
        let sampler = self
            .sampler
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(task) = sampler.take() {
            task.abort();
        }
    }
}

type Shared<S, C> = State<Arc<Served<S, C>>>;

/// The app a request runs on: on a multi-tenant server, its tenant's, from the `X-Tenant`
/// header, checked before the request's body is read and before anything is written or
/// returned.
struct ForTenant<S, C>(Arc<App<S, C>>);

impl<S: PersonalStore, C: Coordination> FromRequestParts<Arc<Served<S, C>>> for ForTenant<S, C> {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        served: &Arc<Served<S, C>>,
    ) -> Result<Self, AppError> {
        let header = parts.headers.get(TENANT);
        match &served.apps {
            Apps::Single(app) => match header {
                None => Ok(Self(Arc::clone(app))),
                Some(_) => Err(AppError::BadRequest(
                    "this server is not multi-tenant: a request names no tenant, remove the X-Tenant header".into(),
                )),
            },
            Apps::Tenants(tenants) => {
                let tenant = tenant(header)?;
                tenants.app(&tenant).map(Self)
            }
        }
    }
}

/// The tenant an `X-Tenant` header names: a 400 saying what is wrong when it is missing
/// or not a valid tenant id (1 to 128 bytes of UTF-8 text without control characters).
fn tenant(header: Option<&HeaderValue>) -> Result<TenantId, AppError> {
    let value = header.ok_or_else(|| {
        AppError::BadRequest(
            "the X-Tenant header is missing: this server is multi-tenant, every request names its tenant".into(),
        )
    })?;
    let text = std::str::from_utf8(value.as_bytes())
        .map_err(|_| AppError::BadRequest("the X-Tenant header is not UTF-8 text".into()))?;
    TenantId::new(text)
        .map_err(|e| AppError::BadRequest(format!("the X-Tenant header is not a tenant id: {e}")))
}
// ANCHOR_END: apps

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

// ANCHOR: if_match
/// The stream version an `If-Match: "3"` header asks for; none without the header or with
/// `If-Match: *`.
fn if_match(headers: &HeaderMap) -> Result<Option<u64>, AppError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let malformed = || {
        AppError::BadRequest(
            "the If-Match header must be one stream version in quotes, such as \"3\", or *".into(),
        )
    };
    let value = value.to_str().map_err(|_| malformed())?.trim();
    if value == "*" {
        return Ok(None);
    }
    let version = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .ok_or_else(malformed)?;
    version.parse().map(Some).map_err(|_| malformed())
}

/// A command's outcome, with the stream version it left as the `ETag`.
fn outcome(status: StatusCode, outcome: Outcome) -> Response {
    let replayed = outcome.replayed;
    let etag = HeaderValue::from_str(&format!("\"{}\"", outcome.version));
    let mut response = (status, axum::Json(outcome)).into_response();
    if let Ok(etag) = etag {
        response.headers_mut().insert(header::ETAG, etag);
    }
    if replayed {
        response
            .headers_mut()
            .insert(REPLAYED, HeaderValue::from_static("true"));
    }
    response
}
// ANCHOR_END: if_match

/// The query of the read model endpoints: `?after=POSITION` waits until the read model has
/// handled every event up to that position (a command's `position`), so that it shows the
/// caller's own writes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct After {
    after: Option<u64>,
}

impl After {
    /// Waits for `projection` to reach the position asked for, if any.
    async fn wait<S: PersonalStore, C: Coordination>(
        &self,
        app: &App<S, C>,
        projection: &str,
    ) -> Result<(), AppError> {
        wait_for(self.after, app, projection).await
    }
}

/// A query, or a 400 naming what is wrong with it.
fn from_query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, AppError> {
    query
        .map(|Query(value)| value)
        .map_err(|e| AppError::BadRequest(format!("invalid query: {}", e.body_text())))
}

/// Waits for `projection` to reach `after`, if given: what `?after=POSITION` asks for.
async fn wait_for<S: PersonalStore, C: Coordination>(
    after: Option<u64>,
    app: &App<S, C>,
    projection: &str,
) -> Result<(), AppError> {
    match after {
        Some(position) => app.caught_up(projection, position).await,
        None => Ok(()),
    }
}

// ANCHOR: list
/// The query of the list endpoints: `?after=POSITION` as for one row, and a page:
/// `limit` rows at most ([`ServiceOptions::default_page`] without it, at most
/// [`ServiceOptions::max_page`]) after the row whose key is `cursor`. The next page's URL is
/// in the answer's `Link: <...>; rel="next"` header, absent on the last page.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct List {
    after: Option<u64>,
    limit: Option<usize>,
    cursor: Option<String>,
}

impl List {
    /// Waits for `projection` to reach the position asked for, if any.
    async fn wait<S: PersonalStore, C: Coordination>(
        &self,
        app: &App<S, C>,
        projection: &str,
    ) -> Result<(), AppError> {
        wait_for(self.after, app, projection).await
    }

    /// The page size asked for, or a 400 when it is out of bounds.
    fn limit(&self, options: &ServiceOptions) -> Result<usize, AppError> {
        match self.limit {
            None => Ok(options.default_page),
            Some(limit) if (1..=options.max_page).contains(&limit) => Ok(limit),
            Some(limit) => Err(AppError::BadRequest(format!(
                "limit {limit} is out of bounds: a page has 1 to {} rows",
                options.max_page
            ))),
        }
    }

    /// The page to read: one row more than `limit`, which tells whether there is a next.
    fn page(&self, limit: usize) -> Page<'_> {
        Page {
            after: self.cursor.as_deref(),
            limit: Some(limit.saturating_add(1)),
        }
    }
}

/// What a cursor escapes in a URL: all but the unreserved characters (RFC 3986).
const CURSOR: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A page of `rows` (read with [`List::page`]) as JSON, with the URL of the next page in a
/// `Link` header when there is one more row than `limit`.
fn paged<T: Serialize>(
    path: &str,
    mut rows: Vec<T>,
    limit: usize,
    key: impl Fn(&T) -> String,
) -> Response {
    let next = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(key)
    } else {
        None
    };
    let mut response = axum::Json(rows).into_response();
    if let Some(cursor) = next {
        let cursor = utf8_percent_encode(&cursor, CURSOR);
        let link = format!("<{path}?limit={limit}&cursor={cursor}>; rel=\"next\"");
        if let Ok(link) = HeaderValue::from_str(&link) {
            response.headers_mut().insert(header::LINK, link);
        }
    }
    response
}
// ANCHOR_END: list

async fn place<S: PersonalStore, C: Coordination>(
    ForTenant(app): ForTenant<S, C>,
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

async fn pay<S: PersonalStore, C: Coordination>(
    ForTenant(app): ForTenant<S, C>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let key = key(&headers)?;
    let expected = if_match(&headers)?;
    let done = app.pay(&id, expected, key.as_deref()).await?;
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

async fn ship<S: PersonalStore, C: Coordination>(
    ForTenant(app): ForTenant<S, C>,
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

async fn cancel<S: PersonalStore, C: Coordination>(
    ForTenant(app): ForTenant<S, C>,
    Path(id): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, AppError> {
    let key = key(&headers)?;
    let expected = if_match(&headers)?;
    let request: Cancel = optional_body(&bytes)?;
    let done = app
        .cancel(&id, &request.reason, expected, key.as_deref())
        .await?;
    Ok(outcome(StatusCode::OK, done))
}

/// The body of `POST /inventory/{sku}/receive`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Receive {
    quantity: u32,
}

async fn receive<S: PersonalStore, C: Coordination>(
    ForTenant(app): ForTenant<S, C>,
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

// ANCHOR: list_orders
async fn list_orders<S: PersonalStore, C: Coordination>(
    ForTenant(app): ForTenant<S, C>,
    State(served): Shared<S, C>,
    query: Result<Query<List>, QueryRejection>,
) -> Result<Response, AppError> {
    let list = from_query(query)?;
    list.wait(&app, ORDER_LIST).await?;
    let limit = list.limit(&served.options)?;
    let rows = app.orders_page(list.page(limit)).await?;
    Ok(paged("/orders", rows, limit, |o| o.order_id.clone()))
}
// ANCHOR_END: list_orders

// ANCHOR: get_order
async fn get_order<S: PersonalStore, C: Coordination>(
    ForTenant(app): ForTenant<S, C>,
    Path(id): Path<String>,
    after: Result<Query<After>, QueryRejection>,
) -> Result<Response, AppError> {
    from_query::<After>(after)?.wait(&app, ORDER_LIST).await?;
    Ok(axum::Json(app.order(&id).await?).into_response())
}
// ANCHOR_END: get_order

async fn history<S: PersonalStore, C: Coordination>(
    ForTenant(app): ForTenant<S, C>,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    Ok(axum::Json(app.history(&id).await?).into_response())
}

async fn customers<S: PersonalStore, C: Coordination>(
    ForTenant(app): ForTenant<S, C>,
    State(served): Shared<S, C>,
    query: Result<Query<List>, QueryRejection>,
) -> Result<Response, AppError> {
    let list = from_query(query)?;
    list.wait(&app, CUSTOMER_STATS).await?;
    let limit = list.limit(&served.options)?;
    let rows = app.customers_page(list.page(limit)).await?;
    Ok(paged("/customers", rows, limit, |c| c.customer_id.clone()))
}

// ANCHOR: forget_route
async fn forget_customer<S: PersonalStore, C: Coordination>(
    ForTenant(app): ForTenant<S, C>,
    Path(customer_id): Path<String>,
) -> Result<Response, AppError> {
    let forgotten = match app.forget_customer(&customer_id).await? {
        Forgotten::Destroyed => "destroyed",
        Forgotten::Already => "already",
    };
    Ok(axum::Json(json!({ "customer_id": customer_id, "forgotten": forgotten })).into_response())
}
// ANCHOR_END: forget_route

async fn daily_sales<S: PersonalStore, C: Coordination>(
    ForTenant(app): ForTenant<S, C>,
    State(served): Shared<S, C>,
    query: Result<Query<List>, QueryRejection>,
) -> Result<Response, AppError> {
    let list = from_query(query)?;
    if let Some(cursor) = &list.cursor {
        sales_key(cursor).map_err(|e| AppError::BadRequest(e.to_string()))?;
    }
    list.wait(&app, DAILY_SALES).await?;
    let limit = list.limit(&served.options)?;
    let rows = app.daily_sales_page(list.page(limit)).await?;
    Ok(paged("/sales/daily", rows, limit, |d| {
        format!("{}/{}", d.day, d.currency)
    }))
}

async fn stock<S: PersonalStore, C: Coordination>(
    ForTenant(app): ForTenant<S, C>,
    Path(sku): Path<String>,
) -> Result<Response, AppError> {
    Ok(axum::Json(app.stock(&sku).await?).into_response())
}

async fn dead_letters<S: PersonalStore, C: Coordination>(
    State(served): Shared<S, C>,
) -> Result<Response, AppError> {
    Ok(axum::Json(served.apps.dead_letters().await?).into_response())
}

async fn replay_dead_letters<S: PersonalStore, C: Coordination>(
    State(served): Shared<S, C>,
) -> Result<Response, AppError> {
    let marked = match &served.apps {
        Apps::Single(app) => app.replay_dead_letters().await?,
        Apps::Tenants(tenants) => tenants.replay_dead_letters().await?,
    };
    Ok(axum::Json(json!({ "replay_requested": marked })).into_response())
}

/// How long a worker may be behind without progress before it counts as stalled.
pub(crate) const STALLED_AFTER: Duration = Duration::from_secs(60);

async fn health<S: PersonalStore, C: Coordination>(State(served): Shared<S, C>) -> Response {
    let report = served.apps.health_report(STALLED_AFTER);
    let status = if report.healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(report)).into_response()
}
