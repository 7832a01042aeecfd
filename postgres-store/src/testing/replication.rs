//! A primary and a streaming hot standby for tests (feature `testing`).
//!
//! [`ReplicatedPair::start`] starts a primary from the installed server binaries, copies it
//! with `pg_basebackup -R` and starts the copy as a hot standby streaming from it, both on
//! `127.0.0.1` on free ports, each in a temporary directory. With
//! [`Replication::Synchronous`] the primary acknowledges a commit only once the standby has
//! it. The pair can then promote its standby ([`ReplicatedPair::promote_standby`]) and stop
//! its primary ([`ReplicatedPair::stop_primary`]), as a failover does.
//!
//! Dropping the pair stops both servers and removes their directories; a watchdog does the
//! same when the test process ends without dropping it. [`ReplicatedPair::shared`] gives the
//! tests of a process one asynchronous pair, started on first use, which they must not
//! promote or stop.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_postgres::types::PgLsn;

use super::{Cluster, TestDatabaseError, find_binaries, run, spawn_watchdog};
use crate::{PgConnectOptions, PgError};

/// Whether the primary waits for the standby before acknowledging a commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Replication {
    /// The primary acknowledges commits at once; the standby follows as fast as it can.
    Asynchronous,
    /// `synchronous_standby_names = '*'` and `synchronous_commit = on`: a commit is
    /// acknowledged once the standby has flushed it, so a promotion loses no acknowledged
    /// commit.
    Synchronous,
}

/// A primary and a hot standby streaming from it; see the [module](self).
#[derive(Debug)]
pub struct ReplicatedPair {
    bin: PathBuf,
    primary: Node,
    standby: Node,
}

#[derive(Debug)]
struct Node {
    cluster: Cluster,
    port: u16,
}

/// The loopback address both servers listen on.
const HOST: &str = "127.0.0.1";

/// How long a test waits, at most, for the standby to replay what it is asked to.
const REPLAY_DEADLINE: Duration = Duration::from_secs(60);

static SHARED: tokio::sync::OnceCell<Result<ReplicatedPair, TestDatabaseError>> =
    tokio::sync::OnceCell::const_new();

impl ReplicatedPair {
    /// Starts a primary and a standby streaming from it, and returns once the standby
    /// accepts read-only connections.
    pub async fn start(replication: Replication) -> Result<Self, TestDatabaseError> {
        tokio::task::spawn_blocking(move || start_pair(replication))
            .await
            .unwrap_or_else(|e| Err(TestDatabaseError::Start(e.to_string())))
    }

    /// One asynchronous pair for the tests of this process, started on the first call.
    /// Tests sharing it must not promote its standby nor stop its primary.
    pub async fn shared() -> Result<&'static Self, TestDatabaseError> {
        SHARED
            .get_or_init(|| Self::start(Replication::Asynchronous))
            .await
            .as_ref()
            .map_err(Clone::clone)
    }

    /// A URL to the primary's database `postgres` as the superuser `postgres`.
    pub fn primary_url(&self) -> String {
        url(self.primary.port)
    }

    /// A URL to the standby's database `postgres` as the superuser `postgres`.
    pub fn standby_url(&self) -> String {
        url(self.standby.port)
    }

    /// A connection string naming both servers, primary first, with
    /// `target_session_attrs=read-write`: it reaches whichever of them accepts writes, the
    /// primary before a failover and the promoted standby after it.
    pub fn failover_url(&self) -> String {
        format!(
            "host={HOST},{HOST} port={},{} user=postgres dbname=postgres sslmode=disable \
             target_session_attrs=read-write connect_timeout=5",
            self.primary.port, self.standby.port
        )
    }

    /// The directories of the primary and the standby, removed when the pair is dropped.
    pub fn directories(&self) -> [&Path; 2] {
        [&self.primary.cluster.base, &self.standby.cluster.base]
    }

    /// The primary's current WAL write position: what the standby must replay to hold
    /// every transaction committed on the primary so far.
    pub async fn primary_lsn(&self) -> Result<PgLsn, PgError> {
        let client = PgConnectOptions::parse(&self.primary_url())?
            .connect()
            .await?;
        let row = client
            .query_one("SELECT pg_current_wal_lsn()", &[])
            .await
            .map_err(|e| PgError::Store(crate::error::backend(e)))?;
        row.try_get(0)
            .map_err(|e| PgError::Store(crate::error::backend(e)))
    }

    /// Waits until the standby has replayed the WAL up to `lsn`, for at most a minute.
    pub async fn wait_for_replay(&self, lsn: PgLsn) -> Result<(), TestDatabaseError> {
        let failed = |e: String| TestDatabaseError::Replication(e);
        let client = PgConnectOptions::parse(&self.standby_url())
            .map_err(|e| failed(e.to_string()))?
            .connect()
            .await
            .map_err(|e| failed(format!("cannot connect to the standby: {e}")))?;
        let deadline = tokio::time::Instant::now() + REPLAY_DEADLINE;
        let mut delay = Duration::from_millis(1);
        loop {
            let row = client
                .query_one("SELECT pg_last_wal_replay_lsn()", &[])
                .await
                .map_err(|e| failed(format!("cannot read the standby's replay position: {e}")))?;
            let replayed: Option<PgLsn> = row
                .try_get(0)
                .map_err(|e| failed(format!("cannot read the standby's replay position: {e}")))?;
            if replayed.is_some_and(|r| r >= lsn) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(failed(format!(
                    "the standby replayed up to {replayed:?}, not {lsn:?}, within {REPLAY_DEADLINE:?}"
                )));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(20));
        }
    }

    /// Waits until the standby has replayed everything committed on the primary so far.
    pub async fn catch_up(&self) -> Result<(), TestDatabaseError> {
        let lsn = self
            .primary_lsn()
            .await
            .map_err(|e| TestDatabaseError::Replication(format!("primary position: {e}")))?;
        self.wait_for_replay(lsn).await
    }

    /// Promotes the standby and returns once it accepts writes.
    pub async fn promote_standby(&self) -> Result<(), TestDatabaseError> {
        let mut cmd = self.standby.cluster.user_cmd(&self.bin.join("pg_ctl"));
        cmd.arg("-D")
            .arg(&self.standby.cluster.data)
            .args(["-w", "-t", "60", "promote"]);
        blocking(move || run(&mut { cmd })).await
    }

    /// Stops the primary at once, as a crash would (`pg_ctl stop -m immediate`): its
    /// sessions end without a word, and a commit it had not acknowledged stays
    /// unacknowledged.
    pub async fn stop_primary(&self) -> Result<(), TestDatabaseError> {
        let cmd = self.primary.cluster.stop_cmd(&self.bin, "immediate");
        blocking(move || run(&mut { cmd })).await
    }
}

impl Drop for ReplicatedPair {
    fn drop(&mut self) {
        for node in [&self.standby, &self.primary] {
            let _ = run(&mut node.cluster.stop_cmd(&self.bin, "immediate"));
            let _ = std::fs::remove_dir_all(&node.cluster.base);
        }
    }
}

async fn blocking(
    f: impl FnOnce() -> Result<(), String> + Send + 'static,
) -> Result<(), TestDatabaseError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| TestDatabaseError::Replication(e.to_string()))?
        .map_err(TestDatabaseError::Replication)
}

fn url(port: u16) -> String {
    format!("postgresql://postgres@{HOST}:{port}/postgres?sslmode=disable")
}

/// Options both servers run with: loopback only, a socket in the node's directory, and no
/// `fsync` (the tests stop servers, never the machine).
fn common_options(base: &Path, port: u16) -> String {
    format!(
        "-c listen_addresses='{HOST}' -p {port} -k {base} -c max_connections=100 \
         -c shared_buffers=32MB -c fsync=off -c full_page_writes=off",
        base = base.display()
    )
}

fn start_pair(replication: Replication) -> Result<ReplicatedPair, TestDatabaseError> {
    let bin = find_binaries().ok_or(TestDatabaseError::BinariesNotFound)?;
    let failed = TestDatabaseError::Replication;
    let primary = Cluster::init(&bin).map_err(failed)?;
    spawn_watchdog(&bin, &primary.base, &primary.data, primary.as_root).map_err(failed)?;
    let synchronous = match replication {
        Replication::Asynchronous => "",
        Replication::Synchronous => " -c synchronous_standby_names='*' -c synchronous_commit=on",
    };
    let primary_port = start_on_free_port(&bin, &primary, |port| {
        format!(
            "{} -c wal_level=replica -c max_wal_senders=4 -c wal_keep_size=128MB{synchronous}",
            common_options(&primary.base, port)
        )
    })?;
    let primary = Node {
        cluster: primary,
        port: primary_port,
    };

    let standby = Cluster::empty().map_err(failed)?;
    spawn_watchdog(&bin, &standby.base, &standby.data, standby.as_root).map_err(failed)?;
    run(standby
        .user_cmd(&tool(&bin, "pg_basebackup"))
        .arg("-D")
        .arg(&standby.data)
        .args(["-h", HOST, "-p", &primary_port.to_string()])
        .args([
            "-U",
            "postgres",
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
            "--no-sync",
        ]))
    .map_err(failed)?;
    // The standby keeps no synchronous standby of its own: promoted, it accepts commits
    // alone.
    let standby_port = start_on_free_port(&bin, &standby, |port| {
        format!(
            "{} -c hot_standby=on -c hot_standby_feedback=on -c synchronous_standby_names=''",
            common_options(&standby.base, port)
        )
    })?;
    Ok(ReplicatedPair {
        bin,
        primary,
        standby: Node {
            cluster: standby,
            port: standby_port,
        },
    })
}

/// The server program `name` beside `pg_ctl`: in `bin`, or where `bin/pg_ctl` links to
/// (`initdb` and `pg_ctl` alone may be linked onto `PATH`).
fn tool(bin: &Path, name: &str) -> PathBuf {
    let beside = bin.join(name);
    if beside.is_file() {
        return beside;
    }
    std::fs::canonicalize(bin.join("pg_ctl"))
        .ok()
        .and_then(|pg_ctl| pg_ctl.parent().map(|dir| dir.join(name)))
        .filter(|path| path.is_file())
        .unwrap_or(beside)
}

/// Starts `cluster` with the options for a free port, again on another port when another
/// process took the first one meanwhile.
fn start_on_free_port(
    bin: &Path,
    cluster: &Cluster,
    options: impl Fn(u16) -> String,
) -> Result<u16, TestDatabaseError> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let port = std::net::TcpListener::bind((HOST, 0))
            .and_then(|listener| listener.local_addr())
            .map_err(|e| TestDatabaseError::Replication(format!("no free port on {HOST}: {e}")))?
            .port();
        match cluster.start(bin, &options(port)) {
            Ok(()) => return Ok(port),
            Err(e) if attempts >= 5 => return Err(TestDatabaseError::Replication(e)),
            Err(_) => {}
        }
    }
}
