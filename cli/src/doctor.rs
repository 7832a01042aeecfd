//! `doctor`: the store's health, one finding per check; a failed check makes the exit code 1.

use std::io::Write;

use factum::EventStore;
use factum_postgres::{MIGRATIONS, Session};
use serde::Serialize;

use crate::commands::{Context, State};
use crate::output::{age, age_or_dash, print_json};
use crate::{CliError, DoctorArgs, exit};

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    Ok,
    /// Worth a look; not a failure.
    Warn,
    Fail,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

#[derive(Debug, Serialize)]
struct Finding {
    check: &'static str,
    status: Status,
    summary: String,
    /// More lines (sessions, standbys, partitions).
    details: Vec<String>,
}

impl Finding {
    fn new(check: &'static str, status: Status, summary: impl Into<String>) -> Self {
        Self {
            check,
            status,
            summary: summary.into(),
            details: Vec::new(),
        }
    }
}

#[derive(Serialize)]
struct Report {
    healthy: bool,
    findings: Vec<Finding>,
}

fn session(s: &Session) -> String {
    let mut line = format!("pid {}", s.pid);
    if !s.application_name.is_empty() {
        line.push_str(&format!(" ({})", s.application_name));
    }
    if let Some(user) = &s.user {
        line.push_str(&format!(", user {user}"));
    }
    if let Some(addr) = &s.client_addr {
        line.push_str(&format!(", from {addr}"));
    }
    if let Some(state) = &s.state {
        line.push_str(&format!(", {state}"));
    }
    line.push_str(&format!(
        ", transaction open for {}",
        age_or_dash(s.transaction_age)
    ));
    if let Some(query) = s.query.as_deref().filter(|q| !q.is_empty()) {
        let query: String = query.split_whitespace().collect::<Vec<_>>().join(" ");
        let short: String = query.chars().take(120).collect();
        let more = if short.len() < query.len() { "..." } else { "" };
        line.push_str(&format!(", last query: {short}{more}"));
    }
    line
}

async fn schema(ctx: &Context) -> Result<Finding, CliError> {
    let applied = ctx.admin.applied_migrations().await?.unwrap_or_default();
    let known = MIGRATIONS.len();
    let missing: Vec<String> = MIGRATIONS
        .iter()
        .filter(|(v, _, _)| !applied.iter().any(|a| a.version == *v))
        .map(|(v, name, _)| format!("{v} ({name})"))
        .collect();
    let unknown: Vec<String> = applied
        .iter()
        .filter(|a| !MIGRATIONS.iter().any(|(v, _, _)| *v == a.version))
        .map(|a| format!("{} ({})", a.version, a.name))
        .collect();
    let latest = applied.iter().map(|a| a.version).max().unwrap_or(0);
    Ok(if !missing.is_empty() {
        Finding::new(
            "schema",
            Status::Fail,
            format!(
                "version {latest}: migrations {} not applied; run `factum migrate`",
                missing.join(", ")
            ),
        )
    } else if !unknown.is_empty() {
        Finding::new(
            "schema",
            Status::Warn,
            format!(
                "version {latest}: migrations {} are newer than this tool knows",
                unknown.join(", ")
            ),
        )
    } else {
        Finding::new(
            "schema",
            Status::Ok,
            format!("version {latest}, all {known} migrations applied"),
        )
    })
}

async fn head(ctx: &Context, args: &DoctorArgs) -> Result<Finding, CliError> {
    let head = ctx.store.head_status().await?;
    if !head.is_held_back() {
        return Ok(Finding::new(
            "head",
            Status::Ok,
            format!(
                "every committed event is readable (position {})",
                head.readable
            ),
        ));
    }
    let positions = format!("readable {}, committed {}", head.readable, head.committed);
    let Some(blocker) = &head.held_back_by else {
        return Ok(Finding::new(
            "head",
            Status::Warn,
            format!("held back ({positions}) by a transaction this role cannot see"),
        ));
    };
    let age = blocker.transaction_age.unwrap_or_default();
    let status = if age >= args.held_back_after {
        Status::Fail
    } else {
        Status::Ok
    };
    let mut finding = Finding::new(
        "head",
        status,
        if status == Status::Fail {
            format!(
                "held back ({positions}) for {} by {blocker}: committed events are not delivered \
                 until its transaction ends",
                crate::output::age(age)
            )
        } else {
            format!("settling ({positions}): a transaction is committing")
        },
    );
    if let Some(pid) = blocker.pid {
        if let Some(s) = ctx.admin.session(pid).await? {
            finding.details.push(session(&s));
        }
    }
    Ok(finding)
}

async fn transactions(ctx: &Context, args: &DoctorArgs) -> Result<Finding, CliError> {
    let sessions = ctx.admin.open_transactions(5).await?;
    let long: Vec<&Session> = sessions
        .iter()
        .filter(|s| {
            s.transaction_age
                .is_some_and(|a| a >= args.long_transaction)
        })
        .collect();
    let mut finding = match sessions.first() {
        None => Finding::new("transactions", Status::Ok, "no open transaction"),
        Some(oldest) if long.is_empty() => Finding::new(
            "transactions",
            Status::Ok,
            format!("oldest open for {}", age_or_dash(oldest.transaction_age)),
        ),
        Some(_) => Finding::new(
            "transactions",
            Status::Warn,
            format!(
                "{} open for more than {}",
                long.len(),
                age(args.long_transaction)
            ),
        ),
    };
    finding.details = sessions.iter().map(session).collect();
    Ok(finding)
}

async fn replication(ctx: &Context, args: &DoctorArgs) -> Result<Finding, CliError> {
    let replication = ctx.admin.replication().await?;
    if replication.standby {
        let status = if replication
            .replay_lag
            .is_some_and(|lag| lag >= args.replication_lag)
        {
            Status::Warn
        } else {
            Status::Ok
        };
        return Ok(Finding::new(
            "replication",
            status,
            format!(
                "this server is a standby; last replayed transaction committed {} ago",
                age_or_dash(replication.replay_lag)
            ),
        ));
    }
    if replication.standbys.is_empty() {
        return Ok(Finding::new("replication", Status::Ok, "no standby"));
    }
    let not_streaming = replication
        .standbys
        .iter()
        .any(|s| s.state.as_deref().is_some_and(|state| state != "streaming"));
    let lagging = replication
        .standbys
        .iter()
        .any(|s| s.replay_lag.is_some_and(|lag| lag >= args.replication_lag));
    let status = if lagging {
        Status::Fail
    } else if not_streaming {
        Status::Warn
    } else {
        Status::Ok
    };
    let mut finding = Finding::new(
        "replication",
        status,
        format!("{} standbys", replication.standbys.len()),
    );
    finding.details = replication
        .standbys
        .iter()
        .map(|s| {
            format!(
                "{} from {}: {}, {}, replay lag {}",
                s.application_name,
                s.client_addr.as_deref().unwrap_or("local"),
                s.state.as_deref().unwrap_or("unknown"),
                s.sync_state.as_deref().unwrap_or("unknown"),
                age_or_dash(s.replay_lag)
            )
        })
        .collect();
    Ok(finding)
}

async fn projections(ctx: &Context, args: &DoctorArgs) -> Result<Finding, CliError> {
    let views = ctx.partitions(None, args.stalled_after).await?;
    if views.is_empty() {
        return Ok(Finding::new(
            "projections",
            Status::Ok,
            "no projection has run on this store yet",
        ));
    }
    let mut problems = 0;
    let mut details = Vec::new();
    for v in &views {
        let waiting_long = v.oldest_unhandled.is_some_and(|a| a >= args.stalled_after);
        let mut wrong = Vec::new();
        match v.state {
            State::Stalled => wrong.push("stalled".to_owned()),
            State::NoWorker if waiting_long => wrong.push("behind with no worker".to_owned()),
            _ => {}
        }
        if v.parked > 0 {
            wrong.push(format!(
                "{} parked events (`factum dead-letters list {}`)",
                v.parked, v.name
            ));
        }
        if !wrong.is_empty() {
            problems += 1;
        }
        details.push(format!(
            "{}/{}: {}, {} events behind (oldest {}){}",
            v.name,
            v.partition,
            match v.state {
                State::Running => "running",
                State::Stalled => "stalled",
                State::NoWorker => "no worker",
                State::Idle => "idle",
            },
            v.behind,
            age_or_dash(v.oldest_unhandled),
            if wrong.is_empty() {
                String::new()
            } else {
                format!(": {}", wrong.join(", "))
            }
        ));
    }
    let mut finding = if problems == 0 {
        Finding::new(
            "projections",
            Status::Ok,
            format!("{} partitions, none stalled or parked", views.len()),
        )
    } else {
        Finding::new(
            "projections",
            Status::Fail,
            format!("{problems} of {} partitions need attention", views.len()),
        )
    };
    finding.details = details;
    Ok(finding)
}

pub(crate) async fn run(
    ctx: &Context,
    args: &DoctorArgs,
    out: &mut dyn Write,
) -> Result<u8, CliError> {
    let findings = vec![
        schema(ctx).await?,
        head(ctx, args).await?,
        transactions(ctx, args).await?,
        replication(ctx, args).await?,
        projections(ctx, args).await?,
    ];
    let healthy = findings.iter().all(|f| f.status != Status::Fail);
    if ctx.json {
        print_json(out, &Report { healthy, findings })?;
    } else {
        for f in &findings {
            writeln!(
                out,
                "[{:<4}] {:<12} {}",
                f.status.label(),
                f.check,
                f.summary
            )?;
            for d in &f.details {
                writeln!(out, "{:19} {d}", "")?;
            }
        }
        writeln!(
            out,
            "{}",
            if healthy { "healthy" } else { "problems found" }
        )?;
    }
    Ok(if healthy { exit::OK } else { exit::PROBLEM })
}
