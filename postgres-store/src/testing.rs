//! A throwaway PostgreSQL for tests (feature `testing`).
//!
//! [`TestDatabase::get`] returns a connection URL: `DATABASE_URL` when it is set, otherwise
//! a temporary cluster started once per test process from the installed server binaries
//! (`initdb` and `pg_ctl` on `PATH` or under `/usr/lib/postgresql/*/bin`), in a temporary
//! directory, listening only on a Unix socket in that directory. As root, the cluster runs
//! as the `postgres` system user (created when missing), since `initdb` refuses root. A
//! small watchdog process stops the cluster and removes the directory when the test
//! process exits.
//!
//! [`fresh_store`] gives each test its own schema.

use std::fmt::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::{PgConfig, PgError, PgStore};

pub mod proxy;

/// Why no test database could be had.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum TestDatabaseError {
    /// The server binaries are not installed.
    #[error(
        "PostgreSQL server binaries (`initdb`, `pg_ctl`) not found on PATH or under \
         /usr/lib/postgresql/*/bin: install the Debian package `postgresql` \
         (`apt-get install postgresql`) or set DATABASE_URL"
    )]
    BinariesNotFound,
    /// Starting the cluster failed.
    #[error("cannot start a temporary PostgreSQL cluster: {0}")]
    Start(String),
}

/// The database the tests of this process use.
#[derive(Debug)]
pub struct TestDatabase;

static URL: OnceLock<Result<String, TestDatabaseError>> = OnceLock::new();

impl TestDatabase {
    /// A connection URL: `DATABASE_URL`, or the temporary cluster of this process, started
    /// on the first call.
    pub async fn get() -> Result<String, TestDatabaseError> {
        if let Some(url) = URL.get() {
            return url.clone();
        }
        tokio::task::spawn_blocking(|| URL.get_or_init(start).clone())
            .await
            .unwrap_or_else(|e| Err(TestDatabaseError::Start(e.to_string())))
    }
}

/// A store on the test database in a new schema with a random name, migrated.
pub async fn fresh_store() -> Result<PgStore, FreshStoreError> {
    fresh_store_with(PgConfig::default()).await
}

/// Like [`fresh_store`], with `config` (its schema is replaced by a random one).
pub async fn fresh_store_with(config: PgConfig) -> Result<PgStore, FreshStoreError> {
    let url = TestDatabase::get().await?;
    let schema = format!("test_{}", uuid::Uuid::new_v4().simple());
    let store = PgStore::connect_with(&url, config.schema(&schema)?).await?;
    store.migrate().await?;
    Ok(store)
}

/// Why [`fresh_store`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FreshStoreError {
    /// No database.
    #[error(transparent)]
    Database(#[from] TestDatabaseError),
    /// Connecting or migrating failed.
    #[error(transparent)]
    Store(#[from] PgError),
}

/// A session left idle inside a transaction that holds a transaction id, as a forgotten
/// `BEGIN` would be: in the store's database it holds the global order back (and is named in
/// the store's head status) until [`commit`](Self::commit).
#[derive(Debug)]
pub struct OpenTransaction {
    client: tokio_postgres::Client,
    pid: u32,
}

impl OpenTransaction {
    /// Connects to `url` as `application_name`, begins a transaction, takes a transaction id
    /// and leaves the session idle.
    pub async fn begin(url: &str, application_name: &str) -> Result<Self, tokio_postgres::Error> {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        client
            .query_one(
                "SELECT set_config('application_name', $1, false)",
                &[&application_name],
            )
            .await?;
        client.batch_execute("BEGIN").await?;
        let row = client
            .query_one("SELECT pg_backend_pid(), pg_current_xact_id()::text", &[])
            .await?;
        let pid: i32 = row.get(0);
        Ok(Self {
            client,
            pid: pid.unsigned_abs(),
        })
    }

    /// The server process id of its session.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Commits the transaction, releasing what it held back.
    pub async fn commit(self) -> Result<(), tokio_postgres::Error> {
        self.client.batch_execute("COMMIT").await
    }
}

fn start() -> Result<String, TestDatabaseError> {
    if let Ok(url) = std::env::var("DATABASE_URL") {
        if !url.is_empty() {
            return Ok(url);
        }
    }
    let bin = find_binaries().ok_or(TestDatabaseError::BinariesNotFound)?;
    Cluster::start(&bin).map_err(TestDatabaseError::Start)
}

fn find_binaries() -> Option<PathBuf> {
    find_binaries_in(
        std::env::var_os("PATH").as_deref(),
        Path::new("/usr/lib/postgresql"),
    )
}

/// `initdb` and `pg_ctl` on `path`, or under the newest `<debian_root>/<version>/bin`.
fn find_binaries_in(path: Option<&std::ffi::OsStr>, debian_root: &Path) -> Option<PathBuf> {
    let has_both = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(path) = path {
        if let Some(dir) = std::env::split_paths(path).find(|d| has_both(d)) {
            return Some(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(debian_root)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            has_both(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

struct Cluster;

impl Cluster {
    fn start(bin: &Path) -> Result<String, String> {
        let as_root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
        // The `postgres` user must reach the directory: as root, stay out of a private
        // `TMPDIR`.
        let tmp = if as_root {
            PathBuf::from("/tmp")
        } else {
            std::env::temp_dir()
        };
        let base = tmp.join(format!(
            "factum-pg-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&base).map_err(|e| format!("create {}: {e}", base.display()))?;
        let data = base.join("data");
        let log = base.join("server.log");
        if as_root {
            ensure_postgres_user()?;
            run(Command::new("chown").arg("postgres:").arg(&base))?;
        }
        let user_cmd = |program: &Path| -> Command {
            if as_root {
                let mut cmd = Command::new("runuser");
                cmd.args(["-u", "postgres", "--"]).arg(program);
                cmd
            } else {
                Command::new(program)
            }
        };
        run(user_cmd(&bin.join("initdb")).arg("-D").arg(&data).args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]))?;
        // Sockets only in our own directory; no TCP listener at all.
        let options = format!(
            "-c listen_addresses='' -k {} -p 5432 -c max_connections=300 -c shared_buffers=256MB",
            base.display()
        );
        run(user_cmd(&bin.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "-o", &options, "start"]))
        .map_err(|e| {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            format!("{e}\nserver log:\n{log}")
        })?;
        spawn_watchdog(bin, &base, &data, as_root)?;
        Ok(format!(
            "postgresql://postgres@/postgres?host={}&port=5432",
            base.display()
        ))
    }
}

/// Stops the cluster and removes its directory once this process is gone.
fn spawn_watchdog(bin: &Path, base: &Path, data: &Path, as_root: bool) -> Result<(), String> {
    let pg_ctl = bin.join("pg_ctl");
    let mut stop = String::new();
    if as_root {
        stop.push_str("runuser -u postgres -- ");
    }
    let _ = write!(
        stop,
        "'{}' -D '{}' -m immediate stop",
        pg_ctl.display(),
        data.display()
    );
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf '{base}'",
        pid = std::process::id(),
        base = base.display(),
    );
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map(drop)
        .map_err(|e| format!("cannot start the cleanup watchdog: {e}"))
}

fn ensure_postgres_user() -> Result<(), String> {
    let exists = Command::new("id")
        .args(["-u", "postgres"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if exists {
        return Ok(());
    }
    run(Command::new("useradd").args([
        "--system",
        "--user-group",
        "--no-create-home",
        "--home-dir",
        "/nonexistent",
        "--shell",
        "/usr/sbin/nologin",
        "postgres",
    ]))
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binaries_name_the_package() {
        let nowhere = std::env::temp_dir().join(format!("factum-none-{}", uuid::Uuid::new_v4()));
        assert_eq!(find_binaries_in(None, &nowhere), None);
        assert_eq!(find_binaries_in(Some(nowhere.as_os_str()), &nowhere), None);
        let message = TestDatabaseError::BinariesNotFound.to_string();
        assert!(message.contains("`postgresql`"), "{message}");
        assert!(message.contains("DATABASE_URL"), "{message}");
    }

    #[test]
    fn the_newest_debian_version_is_chosen() {
        let root = std::env::temp_dir().join(format!("factum-bins-{}", uuid::Uuid::new_v4()));
        for version in ["9", "15", "13"] {
            let bin = root.join(version).join("bin");
            std::fs::create_dir_all(&bin).unwrap();
            std::fs::write(bin.join("initdb"), "").unwrap();
            std::fs::write(bin.join("pg_ctl"), "").unwrap();
        }
        std::fs::create_dir_all(root.join("17").join("bin")).unwrap();
        let found = find_binaries_in(None, &root);
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(found, Some(root.join("15").join("bin")));
    }
}
