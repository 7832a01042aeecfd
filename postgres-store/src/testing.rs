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
//!
//! [`TestDatabase::tls`] starts a second cluster, once per process, that speaks TLS with
//! certificates generated on start: see [`TlsTestDatabase`].
//!
//! [`replication::ReplicatedPair`] starts a primary and a streaming hot standby
//! (`pg_basebackup -R`), optionally synchronous, that can fail over.

use std::fmt::Write as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::{PgConfig, PgConnectOptions, PgError, PgStore};

pub mod proxy;
pub mod replication;

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
    /// Starting, following or failing over a replicated pair of clusters failed
    /// ([`replication::ReplicatedPair`]).
    #[error("replicated test clusters: {0}")]
    Replication(String),
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

/// The TLS cluster of this process ([`TestDatabase::tls`]): it listens on `127.0.0.1` and
/// `127.0.0.2` on a free port with `ssl=on`, its certificate (for `localhost` and
/// `127.0.0.1`, not `127.0.0.2`) signed by a CA generated on start. Its `pg_hba.conf` refuses
/// plaintext TCP, except from the role [`plain_user`](Self::plain_user), there for
/// comparisons. The database is `postgres`, its superuser `postgres`.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct TlsTestDatabase {
    /// `127.0.0.1`, a name in the certificate.
    pub host: String,
    /// `127.0.0.2`, the same server under a name the certificate does not hold.
    pub other_host: String,
    /// The port of both.
    pub port: u16,
    /// The PEM file of the CA that signed the server's certificate.
    pub ca_file: PathBuf,
    /// The PEM file of another CA, that signed nothing the server shows.
    pub foreign_ca_file: PathBuf,
    /// A superuser allowed to connect without TLS.
    pub plain_user: String,
}

impl TlsTestDatabase {
    /// A URL to [`host`](Self::host) as `postgres` with `sslmode` and the right CA as
    /// `sslrootcert`.
    pub fn url(&self, sslmode: &str) -> String {
        self.url_to(&self.host, sslmode, Some(&self.ca_file))
    }

    /// A URL to `host` on the cluster's port as `postgres` with `sslmode` and, when given,
    /// `sslrootcert`.
    pub fn url_to(&self, host: &str, sslmode: &str, root_cert: Option<&Path>) -> String {
        let mut url = format!(
            "postgresql://postgres@{host}:{port}/postgres?sslmode={sslmode}",
            port = self.port
        );
        if let Some(path) = root_cert {
            let path = path.to_string_lossy();
            let encoded =
                percent_encoding::utf8_percent_encode(&path, percent_encoding::NON_ALPHANUMERIC);
            let _ = write!(url, "&sslrootcert={encoded}");
        }
        url
    }

    /// A plaintext URL (`sslmode=disable`) as [`plain_user`](Self::plain_user).
    pub fn plain_url(&self) -> String {
        format!(
            "postgresql://{user}@{host}:{port}/postgres?sslmode=disable",
            user = self.plain_user,
            host = self.host,
            port = self.port
        )
    }
}

static TLS: tokio::sync::OnceCell<Result<TlsTestDatabase, TestDatabaseError>> =
    tokio::sync::OnceCell::const_new();

impl TestDatabase {
    /// The TLS cluster of this process, started on the first call (whatever
    /// `DATABASE_URL` says).
    pub async fn tls() -> Result<TlsTestDatabase, TestDatabaseError> {
        TLS.get_or_init(|| async {
            let db = tokio::task::spawn_blocking(start_tls)
                .await
                .unwrap_or_else(|e| Err(TestDatabaseError::Start(e.to_string())))?;
            let create_role = async {
                let client = PgConnectOptions::parse(&db.url("verify-full"))?
                    .connect()
                    .await?;
                client
                    .batch_execute(&format!("CREATE ROLE {PLAIN_USER} LOGIN SUPERUSER"))
                    .await
                    .map_err(|e| PgError::Store(crate::error::backend(e)))
            };
            create_role.await.map_err(|e| {
                TestDatabaseError::Start(format!("cannot create {PLAIN_USER}: {e}"))
            })?;
            Ok(db)
        })
        .await
        .clone()
    }
}

fn start_tls() -> Result<TlsTestDatabase, TestDatabaseError> {
    let bin = find_binaries().ok_or(TestDatabaseError::BinariesNotFound)?;
    Cluster::start_tls(&bin).map_err(TestDatabaseError::Start)
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

/// A multi-threaded runtime shared by the tests of this process, for harnesses that run each
/// case's async body from synchronous code (property tests): connections of
/// [`shared_store`] live on it, so they outlive any one case.
pub fn shared_runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("cannot build the tests' shared runtime: {e}"))
    })
}

/// One migrated store (a fresh schema) for the whole test process, created on first use.
/// Call it on [`shared_runtime`], where its connections live; give each case new stream ids.
pub async fn shared_store() -> PgStore {
    static STORE: tokio::sync::OnceCell<PgStore> = tokio::sync::OnceCell::const_new();
    STORE
        .get_or_init(|| async {
            fresh_store()
                .await
                .unwrap_or_else(|e| panic!("no PostgreSQL for the tests: {e}"))
        })
        .await
        .clone()
}

/// A connection string to the server and database of `url` as `role`, with no password:
/// for tests that create roles on a cluster trusting local connections.
pub fn url_as(url: &str, role: &str) -> Result<String, PgError> {
    let config: tokio_postgres::Config = url.parse().map_err(PgError::InvalidUrl)?;
    let mut parts = vec![format!("user={role}")];
    match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Unix(path)) => {
            parts.push(format!("host={}", path.display()));
        }
        Some(tokio_postgres::config::Host::Tcp(host)) => parts.push(format!("host={host}")),
        None => {}
    }
    if let Some(port) = config.get_ports().first() {
        parts.push(format!("port={port}"));
    }
    if let Some(dbname) = config.get_dbname() {
        parts.push(format!("dbname={dbname}"));
    }
    Ok(parts.join(" "))
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
    pub async fn begin(url: &str, application_name: &str) -> Result<Self, PgError> {
        let client = PgConnectOptions::parse(url)?.connect().await?;
        let backend = |e: tokio_postgres::Error| PgError::Store(crate::error::backend(e));
        client
            .query_one(
                "SELECT set_config('application_name', $1, false)",
                &[&application_name],
            )
            .await
            .map_err(backend)?;
        client.batch_execute("BEGIN").await.map_err(backend)?;
        let row = client
            .query_one("SELECT pg_backend_pid(), pg_current_xact_id()::text", &[])
            .await
            .map_err(backend)?;
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
    Cluster::start_plain(&bin).map_err(TestDatabaseError::Start)
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

/// A cluster directory with an initialised data directory, not started yet.
#[derive(Debug)]
struct Cluster {
    base: PathBuf,
    data: PathBuf,
    log: PathBuf,
    as_root: bool,
}

impl Cluster {
    /// Creates the directory and runs `initdb`.
    fn init(bin: &Path) -> Result<Self, String> {
        let cluster = Self::empty()?;
        run(cluster
            .user_cmd(&bin.join("initdb"))
            .arg("-D")
            .arg(&cluster.data)
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ]))?;
        Ok(cluster)
    }

    /// Creates the directory, for a data directory not there yet.
    fn empty() -> Result<Self, String> {
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
        let cluster = Self {
            data: base.join("data"),
            log: base.join("server.log"),
            base,
            as_root,
        };
        if as_root {
            ensure_postgres_user()?;
        }
        cluster.own(&cluster.base)?;
        Ok(cluster)
    }

    /// `pg_ctl stop` of this cluster in `mode` (`fast`, `immediate`).
    fn stop_cmd(&self, bin: &Path, mode: &str) -> Command {
        let mut cmd = self.user_cmd(&bin.join("pg_ctl"));
        cmd.arg("-D")
            .arg(&self.data)
            .args(["-w", "-t", "60", "-m", mode, "stop"]);
        cmd
    }

    fn user_cmd(&self, program: &Path) -> Command {
        if self.as_root {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(program);
            cmd
        } else {
            Command::new(program)
        }
    }

    /// Gives `path` to the `postgres` user when running as root.
    fn own(&self, path: &Path) -> Result<(), String> {
        if self.as_root {
            run(Command::new("chown").arg("postgres:").arg(path))?;
        }
        Ok(())
    }

    /// Starts the server with `options` and waits until it accepts connections.
    fn start(&self, bin: &Path, options: &str) -> Result<(), String> {
        run(self
            .user_cmd(&bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&self.log)
            .args(["-w", "-t", "60", "-o", options, "start"]))
        .map_err(|e| {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            format!("{e}\nserver log:\n{log}")
        })
    }

    /// The plain cluster: a Unix socket in its directory, no TCP listener at all.
    fn start_plain(bin: &Path) -> Result<String, String> {
        let cluster = Self::init(bin)?;
        let options = format!(
            "-c listen_addresses='' -k {} -p 5432 -c max_connections=300 -c shared_buffers=256MB",
            cluster.base.display()
        );
        cluster.start(bin, &options)?;
        spawn_watchdog(bin, &cluster.base, &cluster.data, cluster.as_root)?;
        Ok(format!(
            "postgresql://postgres@/postgres?host={}&port=5432",
            cluster.base.display()
        ))
    }

    /// The TLS cluster ([`TlsTestDatabase`]).
    fn start_tls(bin: &Path) -> Result<TlsTestDatabase, String> {
        let cluster = Self::init(bin)?;
        spawn_watchdog(bin, &cluster.base, &cluster.data, cluster.as_root)?;
        let files = write_certificates(&cluster.base)?;
        for path in [&files.server_cert, &files.server_key] {
            cluster.own(path)?;
        }
        let hba = cluster.base.join("pg_hba.conf");
        std::fs::write(
            &hba,
            format!(
                "local all all trust\n\
                 hostssl all all 127.0.0.0/8 trust\n\
                 hostnossl all {PLAIN_USER} 127.0.0.0/8 trust\n\
                 hostnossl all all 0.0.0.0/0 reject\n"
            ),
        )
        .map_err(|e| format!("write {}: {e}", hba.display()))?;
        cluster.own(&hba)?;
        // Another process may take the free port before the server binds it: try again.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let port = free_port()?;
            let options = format!(
                "-c listen_addresses='{TLS_HOST},{OTHER_HOST}' -p {port} -k {base} \
                 -c max_connections=100 -c shared_buffers=256MB -c ssl=on -c ssl_cert_file='{cert}' \
                 -c ssl_key_file='{key}' -c hba_file='{hba}'",
                base = cluster.base.display(),
                cert = files.server_cert.display(),
                key = files.server_key.display(),
                hba = hba.display(),
            );
            match cluster.start(bin, &options) {
                Ok(()) => {
                    return Ok(TlsTestDatabase {
                        host: TLS_HOST.to_owned(),
                        other_host: OTHER_HOST.to_owned(),
                        port,
                        ca_file: files.ca,
                        foreign_ca_file: files.foreign_ca,
                        plain_user: PLAIN_USER.to_owned(),
                    });
                }
                Err(e) if attempts >= 5 => return Err(e),
                Err(_) => {}
            }
        }
    }
}

/// The address of the TLS cluster, in its certificate.
const TLS_HOST: &str = "127.0.0.1";
/// Another address of the TLS cluster, not in its certificate.
const OTHER_HOST: &str = "127.0.0.2";
/// The role the TLS cluster accepts plaintext TCP from.
const PLAIN_USER: &str = "plain_tcp";

/// A TCP port free on both addresses of the TLS cluster, now.
fn free_port() -> Result<u16, String> {
    for _ in 0..20 {
        let listener = std::net::TcpListener::bind((TLS_HOST, 0))
            .map_err(|e| format!("cannot bind {TLS_HOST}: {e}"))?;
        let port = listener
            .local_addr()
            .map_err(|e| format!("cannot read the bound port: {e}"))?
            .port();
        if std::net::TcpListener::bind((OTHER_HOST, port)).is_ok() {
            return Ok(port);
        }
    }
    Err("no TCP port free on both 127.0.0.1 and 127.0.0.2".to_owned())
}

struct CertificateFiles {
    ca: PathBuf,
    foreign_ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
}

/// A CA, a server certificate for `localhost` and `127.0.0.1` signed by it, and another
/// CA, written as PEM files in `dir` (the server's key with mode 0600).
fn write_certificates(dir: &Path) -> Result<CertificateFiles, String> {
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose};
    let err = |e: rcgen::Error| format!("cannot generate the test certificates: {e}");
    let ca = new_ca("factum test CA")?;
    let foreign_ca = new_ca("factum foreign test CA")?;
    let mut params =
        CertificateParams::new(vec!["localhost".to_owned(), TLS_HOST.to_owned()]).map_err(err)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().map_err(err)?;
    let cert = params.signed_by(&key, &ca).map_err(err)?;
    let files = CertificateFiles {
        ca: dir.join("ca.pem"),
        foreign_ca: dir.join("foreign-ca.pem"),
        server_cert: dir.join("server.crt"),
        server_key: dir.join("server.key"),
    };
    let write = |path: &Path, pem: String| {
        std::fs::write(path, pem).map_err(|e| format!("write {}: {e}", path.display()))
    };
    write(&files.ca, ca.pem())?;
    write(&files.foreign_ca, foreign_ca.pem())?;
    write(&files.server_cert, cert.pem())?;
    write(&files.server_key, key.serialize_pem())?;
    std::fs::set_permissions(&files.server_key, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("chmod {}: {e}", files.server_key.display()))?;
    Ok(files)
}

fn new_ca(name: &str) -> Result<rcgen::CertifiedIssuer<'static, rcgen::KeyPair>, String> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let err = |e: rcgen::Error| format!("cannot generate the test CA: {e}");
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    rcgen::CertifiedIssuer::self_signed(params, KeyPair::generate().map_err(err)?).map_err(err)
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
