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
use clap::Parser as _;
use factum::Coordination;
use factum_cli::{Cli, Prompt};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::app::{AppError, HealthIssue, HealthReport, PersonalStore};
use crate::http::{STALLED_AFTER, Served};
use crate::service::DoctorDatabase;

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
    let mut found = doctor(&report, parked);
    if let Some(database) = &served.options.doctor_database {
        let store = store_doctor(database).await;
        found.healthy &= store.iter().all(|f| f.status != Status::Fail);
        found.findings.splice(0..0, store);
    }
    let status = if found.healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok((status, axum::Json(found)).into_response())
}

// ANCHOR: doctor
/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// What was checked: `workers`, `lag`, `dead letters`, or the problem's kind; on
    /// PostgreSQL also the `factum` tool's checks (`schema`, `head`, `transactions`,
    /// `replication`, `projections`).
    pub check: String,
    /// How it came out.
    pub status: Status,
    /// What was found.
    pub summary: String,
    /// More lines, such as the sessions holding the head back.
    #[serde(default)]
    pub details: Vec<String>,
}

/// The doctor's findings.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DoctorReport {
    /// Whether no check failed.
    pub healthy: bool,
    /// One finding per check, and one per problem.
    pub findings: Vec<Finding>,
}

/// The checks that apply to a running application, on either store (on PostgreSQL the
/// page adds those of [`store_doctor`]): its workers (each
/// problem the health report names is a failure), their largest lag, and the parked events
/// (a warning: the rest goes on, but a read model misses them until they are replayed).
pub fn doctor(report: &HealthReport, parked: usize) -> DoctorReport {
    let mut findings = Vec::new();
    let finding = |check: &str, status, summary: String| Finding {
        check: check.to_owned(),
        status,
        summary,
        details: Vec::new(),
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
                format!(
                    "{name} (partition {partition}) behind without progress for {for_seconds:.0} s"
                ),
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

/// The `factum` tool's doctor on the store of `database`, run through its library as
/// `factum --json doctor` would: its findings, or one failed finding saying why it could
/// not check.
pub async fn store_doctor(database: &DoctorDatabase) -> Vec<Finding> {
    /// The doctor asks nothing; were it to, the answer would be no.
    struct NoOne;
    impl Prompt for NoOne {
        fn interactive(&self) -> bool {
            false
        }
        fn confirm(&mut self, _: &str) -> std::io::Result<bool> {
            Ok(false)
        }
    }
    #[derive(Deserialize)]
    struct Report {
        findings: Vec<Finding>,
    }
    let failed = |summary: String| {
        vec![Finding {
            check: "store".into(),
            status: Status::Fail,
            summary,
            details: Vec::new(),
        }]
    };
    let args = ["factum", "--json", "--schema", &database.schema, "doctor"];
    let mut cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => return failed(format!("the doctor's arguments: {e}")),
    };
    cli.database_url = Some(database.url.clone());
    // The tool's `run` writes to a `dyn Write`, so its future is not `Send`: it runs on a
    // blocking thread, driven by this runtime.
    let runtime = tokio::runtime::Handle::current();
    let ran = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        runtime
            .block_on(factum_cli::run(&cli, &mut out, &mut NoOne))
            .map(|_| out)
            .map_err(|e| e.to_string())
    })
    .await;
    let out = match ran {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => return failed(format!("the doctor cannot check the store: {e}")),
        Err(e) => return failed(format!("the doctor did not finish: {e}")),
    };
    match serde_json::from_slice::<Report>(&out) {
        Ok(report) => report.findings,
        Err(e) => failed(format!("the doctor's report is not understood: {e}")),
    }
}
// ANCHOR_END: doctor
