//! `order-fulfillment [demo | rebuild | serve [--addr ADDR] [--multi-tenant] [--tenants LIST]]
//! [--database-url URL] [--schema NAME]` (`--help` says more)
//!
//! Without a database URL (the flag or `DATABASE_URL`) it runs on the in-memory store;
//! with one, on PostgreSQL, migrating the schema first. `serve --multi-tenant` (or
//! `FACTUM_MULTI_TENANT=1`) serves the tenants of a multi-tenant store, each request naming
//! its tenant in `X-Tenant`.

use std::process::ExitCode;
use std::sync::Arc;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser, ValueEnum};
use factum::Coordination;
use factum::MemoryStore;
use factum::personal::MasterKey;
use factum::tenant::TenantId;
use factum_postgres::{PgConfig, PgStore};
use indicatif::{ProgressBar, ProgressStyle};
use order_fulfillment::service::DoctorDatabase;
use order_fulfillment::{
    App, AppError, AppOptions, MemoryTenants, PersonalStore, PgTenants, ServiceOptions, Tenants,
    demo, http,
};

// ANCHOR: cli
/// The order-fulfillment example: a scripted demo, a rebuild of the read models, or the HTTP
/// API with its operator's page at /admin and its figures at /metrics.
///
/// On PostgreSQL, $FACTUM_MASTER_KEY holds the master key (32 bytes in base64) that wraps
/// the customers' data keys; without it a public demo key is used, with a warning.
#[derive(Debug, Parser)]
#[command(name = "order-fulfillment", version)]
struct Cli {
    /// What to run.
    #[arg(value_enum, default_value_t = ModeName::Demo)]
    mode: ModeName,
    /// (serve) The address to listen on.
    #[arg(long, value_name = "ADDR")]
    addr: Option<String>,
    /// Run on PostgreSQL (else in memory); TLS as the URL's sslmode and sslrootcert say,
    /// e.g. postgresql://app@db/app?sslmode=verify-full&sslrootcert=/etc/ca.pem
    #[arg(long, value_name = "URL", env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// The PostgreSQL schema of the events (default: factum).
    #[arg(long, value_name = "NAME")]
    schema: Option<String>,
    /// (serve) Run multi-tenant: every request names its tenant in the X-Tenant header and
    /// runs on that tenant's streams, read models and workers, started on its first request
    /// (default: $FACTUM_MULTI_TENANT=1).
    #[arg(long)]
    multi_tenant: bool,
    /// (serve) Multi-tenant, starting these tenants' workers at start-up so their read
    /// models catch up at once (default: $FACTUM_TENANTS).
    #[arg(long, value_name = "A,B")]
    tenants: Option<String>,
}

/// The modes, as typed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ModeName {
    /// Run the scripted scenario and print the read models.
    Demo,
    /// Rebuild the read models from the stored events, with a progress bar, and print them
    /// (in memory, after running the scenario).
    Rebuild,
    /// Start the HTTP API (default address 127.0.0.1:3000).
    Serve,
}
// ANCHOR_END: cli

#[derive(Debug, PartialEq)]
enum Mode {
    Demo,
    Rebuild,
    Serve { addr: String },
}

#[derive(Debug)]
struct Args {
    mode: Mode,
    database_url: Option<String>,
    schema: Option<String>,
    /// Multi-tenant, with the tenants to start at start-up.
    tenants: Option<Vec<TenantId>>,
}

// ANCHOR: tenants_flag
/// The environment variable that turns the multi-tenant mode on (`1`).
const MULTI_TENANT_VAR: &str = "FACTUM_MULTI_TENANT";
/// The environment variable listing the tenants to start at start-up.
const TENANTS_VAR: &str = "FACTUM_TENANTS";

/// The tenants of `--tenants acme,globex`: each a valid tenant id, none twice.
fn tenant_list(list: &str) -> Result<Vec<TenantId>, String> {
    let mut tenants: Vec<TenantId> = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let tenant = TenantId::new(part).map_err(|e| format!("--tenants: `{part}`: {e}"))?;
        if !tenants.contains(&tenant) {
            tenants.push(tenant);
        }
    }
    Ok(tenants)
}
// ANCHOR_END: tenants_flag

/// The arguments, checked together: a usage error names what is wrong.
fn parse(args: impl IntoIterator<Item = String>) -> Result<Args, clap::Error> {
    let cli = Cli::try_parse_from(std::iter::once("order-fulfillment".to_owned()).chain(args))?;
    check(cli).map_err(|message| Cli::command().error(ErrorKind::ArgumentConflict, message))
}

fn check(cli: Cli) -> Result<Args, String> {
    let Cli {
        mode,
        addr,
        database_url,
        schema,
        mut multi_tenant,
        mut tenants,
    } = cli;
    let mode = match mode {
        ModeName::Serve => Mode::Serve {
            addr: addr.unwrap_or_else(|| "127.0.0.1:3000".to_owned()),
        },
        _ if addr.is_some() => return Err("--addr only goes with `serve`".into()),
        ModeName::Rebuild => Mode::Rebuild,
        ModeName::Demo => Mode::Demo,
    };
    let database_url = database_url.filter(|u| !u.is_empty());
    if schema.is_some() && database_url.is_none() {
        return Err("--schema only goes with a database URL".into());
    }
    if (tenants.is_some() || multi_tenant) && !matches!(mode, Mode::Serve { .. }) {
        return Err("--multi-tenant and --tenants only go with `serve`".into());
    }
    if matches!(mode, Mode::Serve { .. }) {
        // The environment's defaults, for `serve` only.
        multi_tenant |= std::env::var(MULTI_TENANT_VAR).is_ok_and(|v| v.trim() == "1");
        tenants = tenants.or_else(|| {
            std::env::var(TENANTS_VAR)
                .ok()
                .filter(|l| !l.trim().is_empty())
        });
    }
    let tenants = match (tenants, multi_tenant) {
        (Some(list), _) => Some(tenant_list(&list)?),
        (None, true) => Some(Vec::new()),
        (None, false) => None,
    };
    Ok(Args {
        mode,
        database_url,
        schema,
        tenants,
    })
}

fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(args) => args,
        // Help and version on standard output with 0, usage errors on standard error with 2.
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(2));
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    if matches!(args.mode, Mode::Serve { .. }) {
        // Before the workers start, so that /metrics has their figures from the first.
        let _ = order_fulfillment::service::metrics_handle();
    }
    if let (Some(tenants), Mode::Serve { addr }) = (&args.tenants, &args.mode) {
        return serve_tenants(args.database_url, args.schema, tenants, addr).await;
    }
    match args.database_url {
        None => {
            eprintln!("store: in memory");
            let app = App::in_memory(MemoryStore::new(), &AppOptions::default());
            run_on(app, args.mode, ServiceOptions::default()).await
        }
        Some(url) => {
            let master = master_key()?;
            let store = connect(&url, args.schema.as_deref()).await?;
            let service = on_postgres(&url, &store);
            let app = App::on_postgres(store, master, &AppOptions::default()).await?;
            run_on(app, args.mode, service).await
        }
    }
}

/// The service's options on the PostgreSQL store `store` at `url`: the operator's page
/// runs the `factum` tool's doctor on it.
fn on_postgres(url: &str, store: &PgStore) -> ServiceOptions {
    ServiceOptions {
        doctor_database: Some(DoctorDatabase {
            url: url.to_owned(),
            schema: store.config().schema.as_str().to_owned(),
        }),
        ..ServiceOptions::default()
    }
}

// ANCHOR: master_key
/// The environment variable holding the master key on PostgreSQL.
const MASTER_KEY_VAR: &str = "FACTUM_MASTER_KEY";

/// The example's public demo master key (32 bytes in base64), used when `FACTUM_MASTER_KEY`
/// is not set so that a first run needs nothing but a database URL. Everyone can read it
/// here: it protects nothing, and the program says so at start.
const DEMO_MASTER_KEY: &str = "ZmFjdHVtIG9yZGVyLWZ1bGZpbGxtZW50IGRlbW8gMzI=";

/// The master key that wraps the data keys in the database, from `FACTUM_MASTER_KEY`. A
/// malformed key stops the program before it connects. Without one, the fixed demo key is
/// used, with a warning: a key generated per run would leave every data key wrapped with it
/// unreadable after a restart.
fn master_key() -> Result<MasterKey, String> {
    let text = match std::env::var(MASTER_KEY_VAR) {
        Ok(text) => text,
        Err(_) => {
            eprintln!(
                "warning: {MASTER_KEY_VAR} is not set: using the example's public demo master key, which protects nothing; set {MASTER_KEY_VAR} to 32 random bytes in base64 (e.g. `openssl rand -base64 32`) before storing real personal data"
            );
            DEMO_MASTER_KEY.to_owned()
        }
    };
    MasterKey::from_base64(text.trim())
        .map_err(|e| format!("{MASTER_KEY_VAR} is not a master key: {e}"))
}
// ANCHOR_END: master_key

// ANCHOR: connect
/// Connects to PostgreSQL and creates or upgrades the store's tables in `schema` (default
/// `factum`); the read model tables are created when the application starts.
async fn connect(url: &str, schema: Option<&str>) -> Result<PgStore, factum_postgres::PgError> {
    connect_with(url, schema, PgConfig::default()).await
}

/// Connects with `config` (a multi-tenant one for `serve --multi-tenant`) and migrates, in
/// `schema` when given.
async fn connect_with(
    url: &str,
    schema: Option<&str>,
    mut config: PgConfig,
) -> Result<PgStore, factum_postgres::PgError> {
    if let Some(schema) = schema {
        config = config.schema(schema)?;
    }
    let store = PgStore::connect_with(url, config).await?;
    store.migrate().await?;
    eprintln!(
        "store: PostgreSQL, schema `{}`{} (migrated)",
        store.config().schema.as_str(),
        if store.config().multi_tenant {
            ", multi-tenant"
        } else {
            ""
        }
    );
    Ok(store)
}
// ANCHOR_END: connect

// ANCHOR: serve_tenants
/// Serves the tenants of a multi-tenant store: in memory, or on PostgreSQL with
/// `PgConfig::multi_tenant`; the workers of `tenants` start now, any other tenant's on its
/// first request.
async fn serve_tenants(
    database_url: Option<String>,
    schema: Option<String>,
    tenants: &[TenantId],
    addr: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let options = AppOptions::default();
    match database_url {
        None => {
            eprintln!("store: in memory, multi-tenant");
            let tenants = MemoryTenants::in_memory(&options, tenants)?;
            serve_all(tenants, addr, ServiceOptions::default()).await
        }
        Some(url) => {
            let master = master_key()?;
            let config = PgConfig::default().multi_tenant(true);
            let store = connect_with(&url, schema.as_deref(), config).await?;
            let service = on_postgres(&url, &store);
            let tenants = PgTenants::on_postgres(store, master, &options, tenants).await?;
            serve_all(tenants, addr, service).await
        }
    }
}

async fn serve_all<S: PersonalStore, C: Coordination>(
    tenants: Tenants<S, C>,
    addr: &str,
    service: ServiceOptions,
) -> Result<(), Box<dyn std::error::Error>> {
    let started = tenants.started();
    if !started.is_empty() {
        let names: Vec<&str> = started.iter().map(TenantId::as_str).collect();
        eprintln!("tenants started: {}", names.join(", "));
    }
    let tenants = Arc::new(tenants);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!(
        "listening on http://{} (multi-tenant: each request names its tenant in X-Tenant)",
        listener.local_addr()?
    );
    let router = http::multi_tenant_router_with(Arc::clone(&tenants), &service);
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    if let Ok(tenants) = Arc::try_unwrap(tenants) {
        tenants.shutdown().await?;
    }
    Ok(())
}
// ANCHOR_END: serve_tenants

async fn run_on<S: PersonalStore, C: Coordination>(
    app: App<S, C>,
    mode: Mode,
    service: ServiceOptions,
) -> Result<(), Box<dyn std::error::Error>> {
    match mode {
        Mode::Demo => {
            app.settle().await?;
            let printed = demo::run(&app).await?;
            print!("{printed}");
            app.shutdown().await?;
        }
        Mode::Rebuild => {
            app.settle().await?;
            // Makes sure there is history to rebuild from: runs the scenario on a fresh store.
            demo::run(&app).await?;
            rebuild_with_progress(&app).await?;
            print!("{}", demo::report(&app).await?);
            app.shutdown().await?;
        }
        Mode::Serve { addr } => {
            let app = Arc::new(app);
            let listener = tokio::net::TcpListener::bind(&addr).await?;
            eprintln!("listening on http://{}", listener.local_addr()?);
            eprintln!("operator's page: http://{}/admin", listener.local_addr()?);
            axum::serve(listener, http::router_with(Arc::clone(&app), &service))
                .with_graceful_shutdown(async {
                    let _ = tokio::signal::ctrl_c().await;
                })
                .await?;
            if let Ok(app) = Arc::try_unwrap(app) {
                app.shutdown().await?;
            }
        }
    }
    Ok(())
}

// ANCHOR: rebuild
/// Rebuilds every read model, drawing one progress bar per read model on the terminal
/// (nothing when standard error is not one) and a line per finished rebuild.
async fn rebuild_with_progress<S: PersonalStore, C: Coordination>(
    app: &App<S, C>,
) -> Result<(), AppError> {
    let style = ProgressStyle::with_template("{prefix:>14} [{bar:40}] {percent:>3}%")
        .map(|style| style.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    // The projection being rebuilt, its bar, and the position its first batch reached:
    // positions are sparse, so the bar spans from there to the target.
    let mut current: Option<(String, ProgressBar, u64)> = None;
    app.rebuild_read_models_with(|p| {
        if current.as_ref().is_none_or(|(name, ..)| *name != p.name) {
            if let Some((name, bar, _)) = current.take() {
                bar.finish_and_clear();
                eprintln!("rebuilt {name}");
            }
            let bar = ProgressBar::new(100)
                .with_style(style.clone())
                .with_prefix(p.name.clone());
            current = Some((p.name.clone(), bar, p.position));
        }
        if let Some((_, bar, start)) = &current {
            let span = p.target.saturating_sub(*start).max(1);
            let done = p.position.saturating_sub(*start).min(span);
            bar.set_position(done * 100 / span);
        }
    })
    .await?;
    if let Some((name, bar, _)) = current {
        bar.finish_and_clear();
        eprintln!("rebuilt {name}");
    }
    Ok(())
}
// ANCHOR_END: rebuild

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Args, String> {
        parse(list.iter().map(|s| (*s).to_owned())).map_err(|e| e.to_string())
    }

    #[test]
    fn parses_modes_and_flags() {
        assert_eq!(args(&[]).map(|a| a.mode), Ok(Mode::Demo));
        assert_eq!(args(&["demo"]).map(|a| a.mode), Ok(Mode::Demo));
        assert_eq!(args(&["rebuild"]).map(|a| a.mode), Ok(Mode::Rebuild));
        assert_eq!(
            args(&["serve", "--addr", "0.0.0.0:8080"]).map(|a| a.mode),
            Ok(Mode::Serve {
                addr: "0.0.0.0:8080".into()
            })
        );
        let a = args(&["--database-url=postgres://x/y", "demo"]).map(|a| a.database_url);
        assert_eq!(a, Ok(Some("postgres://x/y".into())));
        assert!(args(&["nonsense"]).is_err());
        assert!(args(&["--addr", "x"]).is_err());
        assert!(args(&["--database-url"]).is_err());
    }

    #[test]
    fn parses_the_tenants() {
        let a = args(&["serve", "--multi-tenant"]).map(|a| a.tenants);
        assert_eq!(a, Ok(Some(Vec::new())));
        let a = args(&["serve", "--tenants", "acme, globex,acme"]).map(|a| a.tenants);
        let expected = vec![
            TenantId::new("acme").unwrap(),
            TenantId::new("globex").unwrap(),
        ];
        assert_eq!(a, Ok(Some(expected)));
        let too_long = format!("--tenants=acme,{}", "x".repeat(129));
        let error = args(&["serve", &too_long]).unwrap_err();
        assert!(
            error.contains("--tenants") && error.contains("129 bytes"),
            "{error}"
        );
        let error = args(&["demo", "--multi-tenant"]).unwrap_err();
        assert!(error.contains("only go with `serve`"), "{error}");
    }
}
