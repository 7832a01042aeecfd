//! The operator's page, `GET /admin`: the workers' lag over the last minutes as a chart,
//! the parked events with a button that replays them, and the doctor's findings. The page
//! is one self-contained HTML file (inline styles and a few lines of script drawing SVG);
//! it reads three JSON routes:
//!
//! | method and path | answers |
//! |---|---|
//! | `GET /admin/lag` | the lag samples the server keeps ([`LagHistory`](crate::service::LagHistory)) |
//! | `GET /dead-letters` | the parked events; the button posts to `/dead-letters/replay` |
//! | `GET /admin/doctor` | the findings of [`doctor`] |

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use factum::Coordination;
use serde::Serialize;
use serde_json::json;

use crate::app::{AppError, HealthIssue, HealthReport, PersonalStore};
use crate::http::{STALLED_AFTER, Served};

/// The page, served as it is.
const PAGE: &str = include_str!("admin.html");

/// The page's routes.
pub(crate) fn routes<S: PersonalStore, C: Coordination>() -> Router<Arc<Served<S, C>>> {
    Router::new()
        .route("/admin", get(page))
        .route("/admin/lag", get(lag::<S, C>))
        .route("/admin/doctor", get(doctor_route::<S, C>))
}

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        PAGE,
    )
        .into_response()
}

async fn lag<S: PersonalStore, C: Coordination>(
    State(served): State<Arc<Served<S, C>>>,
) -> Response {
    axum::Json(json!({
        "every_seconds": served.options.lag_sample_every.as_secs_f64(),
        "samples": served.lag.samples(),
    }))
    .into_response()
}

async fn doctor_route<S: PersonalStore, C: Coordination>(
    State(served): State<Arc<Served<S, C>>>,
) -> Result<Response, AppError> {
    let report = served.apps.health_report(STALLED_AFTER);
    let parked = served.apps.dead_letters().await?.len();
    let found = doctor(&report, parked);
    let status = if found.healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok((status, axum::Json(found)).into_response())
}

// ANCHOR: doctor
/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Nothing wrong.
    Ok,
    /// Worth a look, not a failure.
    Warn,
    /// Something is wrong.
    Fail,
}

/// One check's outcome.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Finding {
    /// What was checked: `workers`, `lag`, `dead letters`, or the problem's kind.
    pub check: String,
    /// How it came out.
    pub status: Status,
    /// What was found.
    pub summary: String,
}

/// The doctor's findings.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DoctorReport {
    /// Whether no check failed.
    pub healthy: bool,
    /// One finding per check, and one per problem.
    pub findings: Vec<Finding>,
}

/// The checks that apply to a running application, on either store: its workers (each
/// problem the health report names is a failure), their largest lag, and the parked events
/// (a warning: the rest goes on, but a read model misses them until they are replayed).
pub fn doctor(report: &HealthReport, parked: usize) -> DoctorReport {
    let mut findings = Vec::new();
    let finding = |check: &str, status, summary: String| Finding {
        check: check.to_owned(),
        status,
        summary,
    };
    if report.problems.is_empty() {
        findings.push(finding(
            "workers",
            Status::Ok,
            format!("{} workers, none stopped or stalled", report.workers.len()),
        ));
    }
    for problem in &report.problems {
        let (check, summary) = match problem {
            HealthIssue::HeadHeldBack {
                readable,
                committed,
                held_back_seconds,
                blocker,
            } => (
                "head held back",
                format!(
                    "events up to {committed} are committed but only {readable} are readable, for {held_back_seconds:.0} s{}",
                    blocker
                        .as_ref()
                        .and_then(|b| b.pid)
                        .map(|pid| format!(": an open transaction of backend {pid}"))
                        .unwrap_or_default()
                ),
            ),
            HealthIssue::Stalled {
                name,
                partition,
                for_seconds,
            } => (
                "stalled",
                format!("{name} (partition {partition}) behind without progress for {for_seconds:.0} s"),
            ),
            HealthIssue::Stopped {
                name,
                partition,
                error,
            } => (
                "stopped",
                format!("{name} (partition {partition}) stopped: {error}"),
            ),
            HealthIssue::Failing {
                name,
                partition,
                error,
                failures,
                ..
            } => (
                "failing",
                format!("{name} (partition {partition}) failed {failures} times in a row: {error}"),
            ),
            HealthIssue::Other { description } => ("other", description.clone()),
        };
        findings.push(finding(check, Status::Fail, summary));
    }
    let most = report.workers.iter().max_by_key(|w| w.lag_events);
    findings.push(match most {
        Some(w) if w.lag_events > 0 => finding(
            "lag",
            Status::Ok,
            format!("largest: {} is {} events behind", w.name, w.lag_events),
        ),
        _ => finding("lag", Status::Ok, "every worker is caught up".into()),
    });
    findings.push(if parked == 0 {
        finding("dead letters", Status::Ok, "no parked event".into())
    } else {
        finding(
            "dead letters",
            Status::Warn,
            format!("{parked} parked events: fix the cause, then replay them"),
        )
    });
    DoctorReport {
        healthy: !findings.iter().any(|f| f.status == Status::Fail),
        findings,
    }
}
// ANCHOR_END: doctor
