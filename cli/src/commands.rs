//! The subcommands but `doctor`.

use std::collections::BTreeSet;
use std::io::Write;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use factum::coordination::{DeadLetterStore, ParkReason, ParkedEvent};
use factum::store::StreamRead;
use factum::{EventStore, StreamId};
use factum_postgres::{PgAdmin, PgCoordination, PgStore};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::output::{age, age_or_dash, print_json, print_table, secs, table};
use crate::{CliError, Prompt, RewindArgs, StatusArgs, confirm, exit};

/// The most events counted behind a checkpoint.
pub(crate) const BACKLOG_LIMIT: u64 = 1_000_000;

/// How often the application's progress is looked at.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(200);

/// What every subcommand works on.
pub(crate) struct Context {
    pub(crate) store: PgStore,
    pub(crate) admin: PgAdmin,
    pub(crate) json: bool,
}

fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[derive(Serialize)]
struct MigrationView {
    version: i32,
    name: String,
    applied_at: DateTime<Utc>,
}

pub(crate) async fn migrate(
    store: &PgStore,
    json: bool,
    out: &mut dyn Write,
) -> Result<u8, CliError> {
    store.migrate().await?;
    let applied = PgAdmin::new(store)
        .applied_migrations()
        .await?
        .unwrap_or_default();
    if json {
        let views: Vec<MigrationView> = applied
            .into_iter()
            .map(|m| MigrationView {
                version: m.version,
                name: m.name,
                applied_at: m.applied_at,
            })
            .collect();
        print_json(out, &views)?;
    } else {
        writeln!(
            out,
            "schema `{}` is up to date: {} migrations applied",
            store.config().schema.as_str(),
            applied.len()
        )?;
        let mut t = table(["VERSION", "NAME", "APPLIED AT"]);
        for m in applied {
            t.add_row([m.version.to_string(), m.name, time(m.applied_at)]);
        }
        print_table(out, &t)?;
    }
    Ok(exit::OK)
}

/// What a partition is doing, as seen from the coordination tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum State {
    /// A worker holds its lease and it is caught up or moving.
    Running,
    /// A worker holds its lease, yet it is behind and its checkpoint has not moved for the
    /// stalled time.
    Stalled,
    /// No worker holds its lease and events wait for it.
    NoWorker,
    /// No worker holds its lease and nothing waits for it.
    Idle,
}

impl State {
    fn label(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Stalled => "stalled",
            State::NoWorker => "no worker",
            State::Idle => "idle",
        }
    }
}

/// One partition with its lag.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct PartitionView {
    pub(crate) name: String,
    pub(crate) partition: u32,
    pub(crate) checkpoint: u64,
    /// Committed events after the checkpoint (every stream and type), up to
    /// [`BACKLOG_LIMIT`].
    pub(crate) behind: u64,
    /// How long ago the first of them was recorded.
    pub(crate) oldest_unhandled_secs: Option<f64>,
    #[serde(skip)]
    pub(crate) oldest_unhandled: Option<Duration>,
    pub(crate) state: State,
    pub(crate) holder: Option<String>,
    #[serde(skip)]
    pub(crate) lease_left: Option<Duration>,
    pub(crate) parked: u64,
}

impl Context {
    pub(crate) async fn partitions(
        &self,
        name: Option<&str>,
        stalled_after: Duration,
    ) -> Result<Vec<PartitionView>, CliError> {
        let records = self.admin.partitions(name).await?;
        if let Some(name) = name {
            if records.is_empty() {
                return Err(self.unknown(name).await);
            }
        }
        let mut views = Vec::with_capacity(records.len());
        for r in records {
            let backlog = self.admin.backlog(r.checkpoint, BACKLOG_LIMIT).await?;
            let old = |d: Option<Duration>| d.is_none_or(|d| d >= stalled_after);
            let state = match (&r.holder, backlog.events) {
                (Some(_), 0) => State::Running,
                (Some(_), _) if old(backlog.oldest) && old(r.since_saved) => State::Stalled,
                (Some(_), _) => State::Running,
                (None, 0) => State::Idle,
                (None, _) => State::NoWorker,
            };
            views.push(PartitionView {
                name: r.name,
                partition: r.partition,
                checkpoint: r.checkpoint,
                behind: backlog.events,
                oldest_unhandled_secs: secs(backlog.oldest),
                oldest_unhandled: backlog.oldest,
                state,
                holder: r.holder,
                lease_left: r.lease_left,
                parked: r.parked,
            });
        }
        Ok(views)
    }

    /// The error for a projection the coordination tables do not know.
    async fn unknown(&self, name: &str) -> CliError {
        let known: BTreeSet<String> = match self.admin.partitions(None).await {
            Ok(records) => records.into_iter().map(|r| r.name).collect(),
            Err(e) => return e.into(),
        };
        CliError::UnknownProjection {
            name: name.to_owned(),
            known: known.into_iter().collect(),
        }
    }

    pub(crate) async fn streams_list(
        &self,
        category: Option<&str>,
        after: Option<&str>,
        limit: usize,
        out: &mut dyn Write,
    ) -> Result<u8, CliError> {
        let streams = self.admin.streams(category, after, limit).await?;
        if self.json {
            #[derive(Serialize)]
            struct View {
                stream: String,
                version: u64,
                position: u64,
                last_event_at: DateTime<Utc>,
            }
            let views: Vec<View> = streams
                .into_iter()
                .map(|s| View {
                    stream: s.stream_id,
                    version: s.version,
                    position: s.position,
                    last_event_at: s.recorded_at,
                })
                .collect();
            return print_json(out, &views).map(|()| exit::OK);
        }
        let mut t = table(["STREAM", "VERSION", "LAST POSITION", "LAST EVENT AT"]);
        for s in &streams {
            t.add_row([
                s.stream_id.clone(),
                s.version.to_string(),
                s.position.to_string(),
                time(s.recorded_at),
            ]);
        }
        print_table(out, &t)?;
        match streams.last() {
            Some(last) if streams.len() == limit => writeln!(
                out,
                "{} streams; the next page: --after {}",
                streams.len(),
                last.stream_id
            )?,
            _ => writeln!(out, "{} streams", streams.len())?,
        }
        Ok(exit::OK)
    }

    pub(crate) async fn streams_show(
        &self,
        stream: &StreamId,
        from: u64,
        out: &mut dyn Write,
    ) -> Result<u8, CliError> {
        if self.store.stream_version(stream).await? == 0 {
            return Err(CliError::UnknownStream(stream.to_string()));
        }
        let events = self
            .store
            .read_stream(stream, &StreamRead::from_version(from.max(1)))
            .await?;
        #[derive(Serialize)]
        struct View {
            stream: String,
            version: u64,
            position: u64,
            event_type: String,
            schema_version: u32,
            event_id: String,
            recorded_at: DateTime<Utc>,
            metadata: serde_json::Value,
            payload: serde_json::Value,
        }
        let mut views = Vec::with_capacity(events.len());
        for e in events {
            let payload = serde_json::from_str(e.payload.as_str()).map_err(|source| {
                factum::StoreError::Corrupt {
                    location: format!("event {} of `{stream}`", e.stream_version),
                    message: format!("payload is not JSON: {source}"),
                }
            })?;
            let metadata = serde_json::to_value(&e.metadata).map_err(std::io::Error::from)?;
            views.push(View {
                stream: e.stream_id.to_string(),
                version: e.stream_version,
                position: e.position,
                event_type: e.event_type,
                schema_version: e.schema_version,
                event_id: e.event_id.to_string(),
                recorded_at: e.recorded_at,
                metadata,
                payload,
            });
        }
        if self.json {
            return print_json(out, &views).map(|()| exit::OK);
        }
        for v in &views {
            writeln!(
                out,
                "{} v{}  {} (schema {})  position {}  {}",
                v.stream,
                v.version,
                v.event_type,
                v.schema_version,
                v.position,
                time(v.recorded_at)
            )?;
            writeln!(out, "  event id: {}", v.event_id)?;
            writeln!(out, "  metadata: {}", v.metadata)?;
            writeln!(out, "  payload:  {}", v.payload)?;
        }
        writeln!(out, "{} events", views.len())?;
        Ok(exit::OK)
    }

    pub(crate) async fn status(
        &self,
        args: &StatusArgs,
        out: &mut dyn Write,
    ) -> Result<u8, CliError> {
        let views = self
            .partitions(args.name.as_deref(), args.stalled_after)
            .await?;
        if self.json {
            return print_json(out, &views).map(|()| exit::OK);
        }
        if views.is_empty() {
            writeln!(out, "no projection has run on this store yet")?;
            return Ok(exit::OK);
        }
        print_table(out, &status_table(&views))?;
        Ok(exit::OK)
    }

    pub(crate) async fn rewind(
        &self,
        args: &RewindArgs,
        rebuild: bool,
        out: &mut dyn Write,
        prompt: &mut dyn Prompt,
    ) -> Result<u8, CliError> {
        let before = self.partitions(Some(&args.name), Duration::MAX).await?;
        let held = before.iter().any(|p| p.holder.is_some());
        let parked: u64 = before.iter().map(|p| p.parked).sum();
        let read_model = if args.truncate.is_empty() {
            "its read model is kept: every event is handled again over it".to_owned()
        } else {
            format!("tables {} are emptied", args.truncate.join(", "))
        };
        confirm(
            prompt,
            args.yes,
            &format!(
                "{} projection `{}`: {} checkpoints go to 0, {parked} parked events are removed, \
                 {read_model}",
                if rebuild { "Rebuild" } else { "Reset" },
                args.name,
                before.len(),
            ),
        )?;
        self.announce_wait(&before);
        let target = self.store.head_position().await?;
        let rewound = self.admin.rewind(&args.name, &args.truncate).await?;
        #[derive(Serialize)]
        struct View<'a> {
            name: &'a str,
            checkpoints: u64,
            leases: u64,
            parked: u64,
            truncated: &'a [String],
            target: u64,
            followed: bool,
        }
        let follow = rebuild && held;
        let summary = format!(
            "projection `{}` reset: {} checkpoints at 0, {} leases taken and handed back, {} \
             parked events removed{}",
            args.name,
            rewound.checkpoints,
            rewound.leases,
            rewound.parked,
            if args.truncate.is_empty() {
                String::new()
            } else {
                format!(", {} emptied", args.truncate.join(", "))
            }
        );
        if !self.json {
            writeln!(out, "{summary}")?;
        }
        if follow {
            self.follow(&args.name, target, args.timeout).await?;
            if !self.json {
                writeln!(
                    out,
                    "projection `{}` rebuilt: every partition is past position {target}",
                    args.name
                )?;
            }
        } else if rebuild && !self.json {
            writeln!(
                out,
                "no worker holds `{}` now: its events are handled again when the application \
                 runs it",
                args.name
            )?;
        }
        if self.json {
            print_json(
                out,
                &View {
                    name: &args.name,
                    checkpoints: rewound.checkpoints,
                    leases: rewound.leases,
                    parked: rewound.parked,
                    truncated: &args.truncate,
                    target,
                    followed: follow,
                },
            )?;
        }
        Ok(exit::OK)
    }

    /// Waits until every partition of `name` has saved a checkpoint at `target` or past it,
    /// drawing a progress bar on a terminal.
    async fn follow(&self, name: &str, target: u64, timeout: Duration) -> Result<(), CliError> {
        let total = self.admin.backlog(0, BACKLOG_LIMIT).await?.events;
        let bar = if self.json {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(total)
        };
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} events ({eta} left)")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_message(format!("rebuilding {name}"));
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let records = self.admin.partitions(Some(name)).await?;
            let least = records.iter().map(|r| r.checkpoint).min().unwrap_or(0);
            let behind = self.admin.backlog(least, BACKLOG_LIMIT).await?.events;
            bar.set_position(total.saturating_sub(behind));
            if !records.is_empty() && least >= target {
                bar.finish_and_clear();
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                bar.abandon();
                return Err(CliError::TimedOut(format!(
                    "`{name}` has not reached position {target} within {} (at {least}); the \
                     workers carry on",
                    age(timeout)
                )));
            }
            tokio::time::sleep(FOLLOW_INTERVAL).await;
        }
    }

    /// Says on stderr how long taking the leases of `partitions` from their holders may
    /// take (the time their leases have left).
    fn announce_wait<P: LeaseLeft>(&self, partitions: &[P]) {
        let longest = partitions.iter().filter_map(LeaseLeft::lease_left).max();
        if let (Some(wait), false) = (longest, self.json) {
            eprintln!(
                "taking the partitions' leases from their workers: waiting up to {} for them \
                 to let go",
                age(wait + Duration::from_secs(1))
            );
        }
    }

    async fn parked_of(&self, name: Option<&str>) -> Result<Vec<ParkedEvent>, CliError> {
        let coordination = PgCoordination::new(&self.store);
        let names: BTreeSet<String> = match name {
            Some(name) => {
                if self.admin.partitions(Some(name)).await?.is_empty() {
                    return Err(self.unknown(name).await);
                }
                BTreeSet::from([name.to_owned()])
            }
            None => self
                .admin
                .partitions(None)
                .await?
                .into_iter()
                .filter(|p| p.parked > 0)
                .map(|p| p.name)
                .collect(),
        };
        let mut parked = Vec::new();
        for name in names {
            parked.extend(
                coordination
                    .list(&name)
                    .await
                    .map_err(|e| factum::StoreError::Backend(Box::new(e)))?,
            );
        }
        Ok(parked)
    }

    pub(crate) async fn parked_list(
        &self,
        name: Option<&str>,
        out: &mut dyn Write,
    ) -> Result<u8, CliError> {
        let parked = self.parked_of(name).await?;
        if self.json {
            return print_json(out, &parked).map(|()| exit::OK);
        }
        let mut t = table([
            "NAME",
            "POSITION",
            "PARTITION",
            "STREAM",
            "TYPE",
            "PARKED FOR",
            "REPLAY",
            "REASON",
        ]);
        let now = Utc::now();
        for p in &parked {
            t.add_row([
                p.name.clone(),
                p.position.to_string(),
                p.partition.to_string(),
                p.stream_id.to_string(),
                p.event_type.clone(),
                age_or_dash((now - p.parked_at).to_std().ok()),
                if p.replay_requested { "requested" } else { "-" }.to_owned(),
                reason(&p.reason),
            ]);
        }
        print_table(out, &t)?;
        writeln!(out, "{} parked events", parked.len())?;
        Ok(exit::OK)
    }

    pub(crate) async fn replay(
        &self,
        name: &str,
        stream: Option<&StreamId>,
        wait: bool,
        timeout: Duration,
        out: &mut dyn Write,
    ) -> Result<u8, CliError> {
        let matching = |p: &ParkedEvent| stream.is_none_or(|s| &p.stream_id == s);
        let marked: BTreeSet<u64> = self
            .parked_of(Some(name))
            .await?
            .iter()
            .filter(|p| matching(p))
            .map(|p| p.position)
            .collect();
        let coordination = PgCoordination::new(&self.store);
        coordination
            .request_replay(name, stream)
            .await
            .map_err(|e| factum::StoreError::Backend(Box::new(e)))?;
        let held = self
            .admin
            .partitions(Some(name))
            .await?
            .iter()
            .any(|p| p.holder.is_some());
        #[derive(Serialize)]
        struct View<'a> {
            name: &'a str,
            marked: usize,
            waited: bool,
            replayed: Option<usize>,
            still_parked: Option<usize>,
        }
        let mut view = View {
            name,
            marked: marked.len(),
            waited: wait && held && !marked.is_empty(),
            replayed: None,
            still_parked: None,
        };
        if view.waited {
            let deadline = tokio::time::Instant::now() + timeout;
            let still = loop {
                let now_parked = self.parked_of(Some(name)).await?;
                let pending = now_parked
                    .iter()
                    .any(|p| marked.contains(&p.position) && p.replay_requested);
                if !pending {
                    break now_parked
                        .iter()
                        .filter(|p| marked.contains(&p.position))
                        .count();
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(CliError::TimedOut(format!(
                        "the workers of `{name}` have not replayed the marked events within {}; \
                         they stay marked",
                        age(timeout)
                    )));
                }
                tokio::time::sleep(FOLLOW_INTERVAL).await;
            };
            view.replayed = Some(marked.len() - still);
            view.still_parked = Some(still);
        }
        if self.json {
            print_json(out, &view)?;
        } else if marked.is_empty() {
            writeln!(out, "no parked event of `{name}` to replay")?;
        } else if let (Some(replayed), Some(still)) = (view.replayed, view.still_parked) {
            writeln!(
                out,
                "replayed {replayed} of {} parked events of `{name}`; {still} still parked",
                marked.len()
            )?;
        } else if held {
            writeln!(
                out,
                "{} parked events of `{name}` marked for replay",
                marked.len()
            )?;
        } else {
            writeln!(
                out,
                "{} parked events of `{name}` marked for replay; no worker holds `{name}` now: \
                 they are replayed when the application runs it",
                marked.len()
            )?;
        }
        Ok(if view.still_parked.unwrap_or(0) > 0 {
            exit::PROBLEM
        } else {
            exit::OK
        })
    }

    pub(crate) async fn skip(
        &self,
        name: &str,
        stream: Option<&StreamId>,
        position: Option<u64>,
        yes: bool,
        out: &mut dyn Write,
        prompt: &mut dyn Prompt,
    ) -> Result<u8, CliError> {
        let matching = self
            .parked_of(Some(name))
            .await?
            .into_iter()
            .filter(|p| stream.is_none_or(|s| &p.stream_id == s))
            .filter(|p| position.is_none_or(|at| p.position == at))
            .count();
        if matching == 0 {
            if self.json {
                print_json(out, &serde_json::json!({ "name": name, "skipped": 0 }))?;
            } else {
                writeln!(out, "no parked event of `{name}` matches: nothing skipped")?;
            }
            return Ok(exit::OK);
        }
        confirm(
            prompt,
            yes,
            &format!(
                "Skip {matching} parked events of `{name}`: they are removed without being \
                 handled"
            ),
        )?;
        self.announce_wait(&self.admin.partitions(Some(name)).await?);
        let skipped = self.admin.skip(name, stream, position).await?;
        if self.json {
            print_json(
                out,
                &serde_json::json!({ "name": name, "skipped": skipped }),
            )?;
        } else {
            writeln!(out, "skipped {skipped} parked events of `{name}`")?;
        }
        Ok(exit::OK)
    }
}

pub(crate) fn status_table(views: &[PartitionView]) -> comfy_table::Table {
    let mut t = table([
        "NAME",
        "PARTITION",
        "CHECKPOINT",
        "BEHIND",
        "OLDEST UNHANDLED",
        "STATE",
        "HOLDER",
        "PARKED",
    ]);
    for v in views {
        let behind = if v.behind >= BACKLOG_LIMIT {
            format!("{}+", v.behind)
        } else {
            v.behind.to_string()
        };
        t.add_row([
            v.name.clone(),
            v.partition.to_string(),
            v.checkpoint.to_string(),
            behind,
            age_or_dash(v.oldest_unhandled),
            v.state.label().to_owned(),
            v.holder.clone().unwrap_or_else(|| "-".to_owned()),
            v.parked.to_string(),
        ]);
    }
    t
}

fn reason(reason: &ParkReason) -> String {
    match reason {
        ParkReason::Failed { error, attempts } => {
            format!("failed after {attempts} attempts: {error}")
        }
        ParkReason::Waiting { behind } => format!("waits behind position {behind}"),
        other => format!("{other:?}"),
    }
}

/// The time a partition's lease has left, in whichever record holds it.
trait LeaseLeft {
    fn lease_left(&self) -> Option<Duration>;
}

impl LeaseLeft for PartitionView {
    fn lease_left(&self) -> Option<Duration> {
        self.lease_left
    }
}

impl LeaseLeft for factum_postgres::PartitionRecord {
    fn lease_left(&self) -> Option<Duration> {
        self.lease_left
    }
}
