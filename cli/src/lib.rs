//! The `factum` command-line tool: an operator's view of a PostgreSQL store of `factum`
//! without writing code. It lists and shows streams, reports each projection's partitions
//! (checkpoint, lag, state, lease holder, parked events), rewinds and rebuilds projections,
//! lists, replays and skips parked events, and checks the store's health (`doctor`).
//!
//! The tool runs no handler code: it works on the store's coordination tables, and the
//! workers of the running application do the handling (`docs/adr/21-command-line-tool.md`).
//! The binary is a thin wrapper of [`run`]; tests and other programs call it with their own
//! output and [`Prompt`].
//!
//! Exit codes ([`exit`]): 0 success, 1 a problem found (`doctor`, or replayed events parked
//! again), 2 a usage error, 3 an unknown stream or projection, 4 the database failed (or is
//! not migrated), 5 a destructive command not confirmed, 6 timed out following the
//! application's progress.

#![forbid(unsafe_code)]
#![warn(missing_docs, clippy::unwrap_used)]

use std::io::{BufRead as _, IsTerminal as _, Write};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use factum::{StoreError, StreamId};
use factum_postgres::{AdminError, PgConfig, PgError, PgStore};

mod commands;
mod doctor;
mod output;

/// The exit codes of the tool.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// `doctor` found a problem, or replayed events were parked again.
    pub const PROBLEM: u8 = 1;
    /// A usage error: an unknown subcommand or option, a malformed value.
    pub const USAGE: u8 = 2;
    /// An unknown stream or projection.
    pub const NOT_FOUND: u8 = 3;
    /// The database failed (cannot connect, a statement failed, the schema is not migrated),
    /// or the output could not be written.
    pub const DATABASE: u8 = 4;
    /// A destructive command was not confirmed.
    pub const NOT_CONFIRMED: u8 = 5;
    /// Following the running application's progress timed out.
    pub const TIMED_OUT: u8 = 6;
}

/// Operate a `factum` event store on PostgreSQL.
#[derive(Debug, Parser)]
#[command(name = "factum", version, about, long_about = None)]
pub struct Cli {
    /// The store's database (TLS through `sslmode` and `sslrootcert` in the URL).
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,
    /// The store's schema.
    #[arg(long, global = true, default_value = "factum")]
    pub schema: String,
    /// Print JSON instead of tables, for scripts.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or upgrade the store's tables, then list the applied migrations.
    Migrate,
    /// List and show streams.
    #[command(subcommand)]
    Streams(StreamsCommand),
    /// Projections and process managers: status, rewind, rebuild.
    #[command(subcommand)]
    Projections(ProjectionsCommand),
    /// Parked events (dead letters): list, replay, skip.
    #[command(subcommand)]
    DeadLetters(DeadLettersCommand),
    /// Check the store's health; exits with 1 when something is wrong.
    Doctor(DoctorArgs),
}

/// `streams ...`
#[derive(Debug, Subcommand)]
pub enum StreamsCommand {
    /// The streams, by name, with their version and last event.
    List {
        /// Only streams of this category (the part of the name before the first `-`).
        #[arg(long)]
        category: Option<String>,
        /// At most this many streams.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// The streams after this one (by name): the next page.
        #[arg(long)]
        after: Option<String>,
    },
    /// The events of one stream: type, version, position, time, metadata, payload.
    Show {
        /// The stream, such as `order-42`.
        stream: String,
        /// From this stream version on.
        #[arg(long, default_value_t = 1)]
        from: u64,
    },
}

/// `projections ...`
#[derive(Debug, Subcommand)]
pub enum ProjectionsCommand {
    /// Each projection's partitions: checkpoint, lag, state, lease holder, parked events.
    Status(StatusArgs),
    /// Rewind a projection to the start and follow the application's workers handling every
    /// event again, with a progress bar.
    Rebuild(RewindArgs),
    /// Rewind a projection to the start: its checkpoints go to 0 and its parked events are
    /// removed; the application's workers then handle every event again.
    Reset(RewindArgs),
}

/// Options of `projections status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only this projection.
    pub name: Option<String>,
    /// A partition behind the head whose checkpoint has not moved for this long is stalled.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub stalled_after: Duration,
}

/// Options of `projections reset` and `projections rebuild`.
#[derive(Debug, Args)]
pub struct RewindArgs {
    /// The projection.
    pub name: String,
    /// A read-model table to empty in the same transaction (`table` in the store's schema,
    /// or `schema.table`); repeat for several. Without it the read model is kept, and the
    /// events are handled again over it.
    #[arg(long = "truncate", value_name = "TABLE")]
    pub truncate: Vec<String>,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// How long `rebuild` follows the application's progress before giving up.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// `dead-letters ...`
#[derive(Debug, Subcommand)]
pub enum DeadLettersCommand {
    /// The parked events (of one projection, or all).
    List {
        /// Only this projection's.
        name: Option<String>,
    },
    /// Ask the application's workers to handle parked events again, and wait for them.
    Replay {
        /// The projection.
        name: String,
        /// Only this stream's parked events.
        #[arg(long)]
        stream: Option<String>,
        /// Only mark them; do not wait for the workers.
        #[arg(long)]
        no_wait: bool,
        /// How long to wait for the workers.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Remove parked events without handling them.
    Skip {
        /// The projection.
        name: String,
        /// Only this stream's parked events.
        #[arg(long)]
        stream: Option<String>,
        /// Only the parked event at this global position.
        #[arg(long)]
        position: Option<u64>,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

/// Options of `doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// A head held back by a transaction open this long is a problem.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub held_back_after: Duration,
    /// A projection partition behind the head with no progress for this long is stalled.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub stalled_after: Duration,
    /// A transaction open this long is reported (a warning: it may hold back vacuum).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub long_transaction: Duration,
    /// A standby replaying this far behind is reported (a warning).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub replication_lag: Duration,
}

/// What the tool reports on failure; [`exit_code`](Self::exit_code) maps it to [`exit`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// Neither `--database-url` nor `DATABASE_URL`.
    #[error("no database: give --database-url or set DATABASE_URL")]
    NoDatabase,
    /// A value given is malformed.
    #[error("{0}")]
    Usage(String),
    /// Connecting or migrating failed.
    #[error(transparent)]
    Connect(#[from] PgError),
    /// A statement failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The schema has no migrations.
    #[error("schema `{0}` is not migrated: run `factum migrate` (or start the application)")]
    NotMigrated(String),
    /// No such stream.
    #[error("unknown stream `{0}`: it has no events")]
    UnknownStream(String),
    /// No such projection in the coordination tables.
    #[error("unknown projection `{name}`: {}", known_names(.known))]
    UnknownProjection {
        /// The name given.
        name: String,
        /// The names the coordination tables know.
        known: Vec<String>,
    },
    /// A destructive command was declined, or stdin is no terminal to ask on.
    #[error("{0}")]
    NotConfirmed(String),
    /// Following the application's progress took longer than the timeout.
    #[error("{0}")]
    TimedOut(String),
    /// Writing the output failed.
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

fn known_names(known: &[String]) -> String {
    if known.is_empty() {
        "no projection has saved a checkpoint, held a lease or parked an event yet".to_owned()
    } else {
        format!("known: {}", known.join(", "))
    }
}

impl From<AdminError> for CliError {
    fn from(error: AdminError) -> Self {
        match error {
            AdminError::TableName(e) => CliError::Usage(e.to_string()),
            AdminError::Store(e) => CliError::Store(e),
            other => CliError::Store(StoreError::Backend(Box::new(other))),
        }
    }
}

impl CliError {
    /// The exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::NoDatabase | CliError::Usage(_) => exit::USAGE,
            CliError::UnknownStream(_) | CliError::UnknownProjection { .. } => exit::NOT_FOUND,
            CliError::NotConfirmed(_) => exit::NOT_CONFIRMED,
            CliError::TimedOut(_) => exit::TIMED_OUT,
            CliError::Connect(_)
            | CliError::Store(_)
            | CliError::NotMigrated(_)
            | CliError::Output(_) => exit::DATABASE,
        }
    }
}

/// Asks the operator to confirm a destructive command.
pub trait Prompt {
    /// Whether there is someone to ask (stdin is a terminal).
    fn interactive(&self) -> bool;
    /// Asks `question`; `true` for yes.
    fn confirm(&mut self, question: &str) -> std::io::Result<bool>;
}

/// The terminal: asks on stderr, reads the answer from stdin.
#[derive(Debug, Default)]
pub struct Terminal;

impl Prompt for Terminal {
    fn interactive(&self) -> bool {
        std::io::stdin().is_terminal()
    }

    fn confirm(&mut self, question: &str) -> std::io::Result<bool> {
        let mut err = std::io::stderr().lock();
        write!(err, "{question} [y/N] ")?;
        err.flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
    }
}

/// Asks `prompt` to confirm `what` unless `yes`; refuses when there is no one to ask.
fn confirm(prompt: &mut dyn Prompt, yes: bool, what: &str) -> Result<(), CliError> {
    if yes {
        return Ok(());
    }
    if !prompt.interactive() {
        return Err(CliError::NotConfirmed(format!(
            "{what}: stdin is not a terminal to confirm on; give --yes to go ahead"
        )));
    }
    if prompt.confirm(&format!("{what}. Go ahead?"))? {
        Ok(())
    } else {
        Err(CliError::NotConfirmed(
            "not confirmed; nothing changed".to_owned(),
        ))
    }
}

fn stream_id(stream: &str) -> Result<StreamId, CliError> {
    StreamId::parse(stream).map_err(|e| CliError::Usage(format!("invalid stream `{stream}`: {e}")))
}

/// The store of `cli`'s URL and schema.
async fn connect(cli: &Cli) -> Result<PgStore, CliError> {
    let url = cli
        .database_url
        .as_deref()
        .filter(|u| !u.is_empty())
        .ok_or(CliError::NoDatabase)?;
    let config = PgConfig::default()
        .schema(&cli.schema)
        .map_err(|e| CliError::Usage(e.to_string()))?;
    Ok(PgStore::connect_with(url, config).await?)
}

/// Runs `cli`, writing its report to `out` and asking `prompt` before destructive changes.
/// Returns the exit code of a command that ran ([`exit::OK`], or [`exit::PROBLEM`] when it
/// found something wrong).
pub async fn run(cli: &Cli, out: &mut dyn Write, prompt: &mut dyn Prompt) -> Result<u8, CliError> {
    let store = connect(cli).await?;
    let json = cli.json;
    if let Command::Migrate = cli.command {
        return commands::migrate(&store, json, out).await;
    }
    let admin = factum_postgres::PgAdmin::new(&store);
    if admin.applied_migrations().await?.is_none() {
        return Err(CliError::NotMigrated(cli.schema.clone()));
    }
    let ctx = commands::Context { store, admin, json };
    match &cli.command {
        Command::Migrate => Ok(exit::OK),
        Command::Streams(StreamsCommand::List {
            category,
            limit,
            after,
        }) => {
            ctx.streams_list(category.as_deref(), after.as_deref(), *limit, out)
                .await
        }
        Command::Streams(StreamsCommand::Show { stream, from }) => {
            ctx.streams_show(&stream_id(stream)?, *from, out).await
        }
        Command::Projections(ProjectionsCommand::Status(args)) => ctx.status(args, out).await,
        Command::Projections(ProjectionsCommand::Reset(args)) => {
            ctx.rewind(args, false, out, prompt).await
        }
        Command::Projections(ProjectionsCommand::Rebuild(args)) => {
            ctx.rewind(args, true, out, prompt).await
        }
        Command::DeadLetters(DeadLettersCommand::List { name }) => {
            ctx.parked_list(name.as_deref(), out).await
        }
        Command::DeadLetters(DeadLettersCommand::Replay {
            name,
            stream,
            no_wait,
            timeout,
        }) => {
            let stream = stream.as_deref().map(stream_id).transpose()?;
            ctx.replay(name, stream.as_ref(), !no_wait, *timeout, out)
                .await
        }
        Command::DeadLetters(DeadLettersCommand::Skip {
            name,
            stream,
            position,
            yes,
        }) => {
            let stream = stream.as_deref().map(stream_id).transpose()?;
            ctx.skip(name, stream.as_ref(), *position, *yes, out, prompt)
                .await
        }
        Command::Doctor(args) => doctor::run(&ctx, args, out).await,
    }
}

/// The binary's `main`: parses the arguments (usage errors exit with 2), runs, prints an
/// error on stderr, and returns the exit code.
pub fn run_from_env() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::from(exit::DATABASE);
        }
    };
    let mut out = std::io::stdout().lock();
    let code = runtime.block_on(async {
        match run(&cli, &mut out, &mut Terminal).await {
            Ok(code) => code,
            Err(error) => {
                eprintln!("error: {error}");
                error.exit_code()
            }
        }
    });
    let _ = out.flush();
    std::process::ExitCode::from(code)
}
