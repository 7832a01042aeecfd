//! The `factum` binary against a throwaway PostgreSQL cluster holding real data: events, a
//! projection run by the runtime with its checkpoint and parked events, a session holding the
//! head back. Each subcommand's output and exit code are checked; some outputs are captured
//! for the book (`cli/tests/output/`), and a test fails when a captured file is stale.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use factum::coordination::DeadLetterStore;
use factum::projection::{FailurePolicy, ProjectionOptions, ProjectionRunner, RunnerOptions};
use factum::testing::projections::{RecordingProjection, append_tested, eventually};
use factum_cli::{Cli, CliError, Prompt};
use factum_postgres::testing::{OpenTransaction, TestDatabase, fresh_store};
use factum_postgres::{PgCoordination, PgStore};
use serde_json::Value;

use clap::Parser as _;

/// How long a wait for the runtime may take on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(60);

async fn url() -> String {
    TestDatabase::get().await.expect("a test database")
}

fn schema(store: &PgStore) -> String {
    store.config().schema.as_str().to_owned()
}

/// Runs `factum --schema SCHEMA ARGS...` with `DATABASE_URL` set and stdin closed (no
/// terminal to confirm on).
async fn factum(url: &str, schema: &str, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_factum"));
    command
        .env("DATABASE_URL", url)
        .arg("--schema")
        .arg(schema)
        .args(args)
        .stdin(Stdio::null());
    tokio::task::spawn_blocking(move || command.output().expect("run factum"))
        .await
        .expect("the process ends")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts the exit code, showing the output when it differs.
fn assert_exit(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "exit code; stdout:\n{}\nstderr:\n{}",
        stdout(output),
        stderr(output)
    );
}

fn json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", stdout(output)))
}

/// What a captured output is compared by: digits and runs of spaces or dashes do not
/// count (positions, process ids, times and column widths differ from run to run).
fn shape(text: &str) -> String {
    let mut shaped = String::new();
    let mut last = ' ';
    for c in text.chars() {
        let c = match c {
            '0'..='9' => '#',
            ' ' | '\t' => ' ',
            other => other,
        };
        if (c == '#' || c == ' ' || c == '-') && c == last {
            continue;
        }
        shaped.push(c);
        last = c;
    }
    shaped
}

/// Writes `text` to `cli/tests/output/NAME.txt` for the book when it differs in more than
/// numbers and widths from what is there, and then fails: the book showed stale output.
fn capture(name: &str, text: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/output")
        .join(format!("{name}.txt"));
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    if shape(&old) != shape(text) {
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("output directory");
        std::fs::write(&path, text).expect("write the captured output");
        panic!(
            "the book's captured output {} was stale; it is rewritten: review and commit it",
            path.display()
        );
    }
}

/// Runs `RecordingProjection` `tally` on `store` with PostgreSQL coordination, one
/// partition, parking an event after one failed attempt.
fn run_tally(
    store: &PgStore,
    tally: &Arc<RecordingProjection>,
) -> factum::projection::RunningProjections<PgStore, PgCoordination> {
    ProjectionRunner::new(store.clone())
        .coordination(PgCoordination::new(store))
        .options(
            RunnerOptions::new()
                .worker_id("worker-1")
                .lease_ttl(Duration::from_secs(2))
                .lease_retry(Duration::from_millis(100)),
        )
        .register(
            Arc::clone(tally),
            ProjectionOptions::new()
                .poll_interval(Duration::from_millis(50))
                .failure(
                    FailurePolicy::park_after(1)
                        .backoff(Duration::from_millis(5), Duration::from_millis(5)),
                ),
        )
        .start()
}

async fn wait_for<C: factum::Coordination>(
    running: &factum::projection::RunningProjections<PgStore, C>,
    position: u64,
) {
    tokio::time::timeout(PATIENCE, running.wait_for("tally", position))
        .await
        .expect("the projection caught up in time")
        .expect("the projection runs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_and_streams() {
    let url = url().await;
    let schema = format!("cli_{}", uuid::Uuid::new_v4().simple());

    let output = factum(&url, &schema, &["streams", "list"]).await;
    assert_exit(&output, 4);
    assert!(
        stderr(&output).contains("is not migrated"),
        "{}",
        stderr(&output)
    );

    let output = factum(&url, &schema, &["migrate"]).await;
    assert_exit(&output, 0);
    let text = stdout(&output);
    assert!(
        text.contains(&format!("schema `{schema}` is up to date")),
        "{text}"
    );
    assert!(
        text.contains("coordination") && text.contains("keys"),
        "{text}"
    );

    let store = PgStore::connect_with(
        &url,
        factum_postgres::PgConfig::default()
            .schema(&schema)
            .expect("schema"),
    )
    .await
    .expect("connect");
    let (first, _) = append_tested(&store, "order-1", 1).await;
    append_tested(&store, "order-1", 2).await;
    append_tested(&store, "order-2", 3).await;
    append_tested(&store, "customer-7", 4).await;

    let output = factum(&url, &schema, &["streams", "list"]).await;
    assert_exit(&output, 0);
    let text = stdout(&output);
    assert!(
        text.contains("order-1") && text.contains("customer-7"),
        "{text}"
    );
    assert!(text.contains("3 streams"), "{text}");

    let output = factum(&url, &schema, &["streams", "list", "--limit", "2"]).await;
    assert_exit(&output, 0);
    let text = stdout(&output);
    assert!(
        text.contains("customer-7") && text.contains("order-1"),
        "{text}"
    );
    assert!(!text.contains("order-2"), "{text}");
    assert!(text.contains("the next page: --after order-1"), "{text}");
    let output = factum(
        &url,
        &schema,
        &["--json", "streams", "list", "--after", "order-1"],
    )
    .await;
    assert_exit(&output, 0);
    let page = json(&output);
    assert_eq!(page.as_array().map(Vec::len), Some(1), "{page}");
    assert_eq!(page[0]["stream"], "order-2", "{page}");

    let output = factum(
        &url,
        &schema,
        &["--json", "streams", "list", "--category", "order"],
    )
    .await;
    assert_exit(&output, 0);
    let listed = json(&output);
    let streams: Vec<(&str, u64)> = listed
        .as_array()
        .expect("an array")
        .iter()
        .map(|s| {
            (
                s["stream"].as_str().expect("stream"),
                s["version"].as_u64().expect("version"),
            )
        })
        .collect();
    assert_eq!(streams, [("order-1", 2), ("order-2", 1)]);

    let output = factum(&url, &schema, &["streams", "show", "order-1", "--json"]).await;
    assert_exit(&output, 0);
    let events = json(&output);
    let events = events.as_array().expect("an array");
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["event_type"], "Tested");
    assert_eq!(events[0]["version"], 1);
    assert_eq!(events[0]["event_id"], first.to_string());
    assert!(events[0]["payload"].is_object(), "{}", events[0]);
    assert!(events[0]["metadata"].is_object(), "{}", events[0]);
    assert!(events[0]["recorded_at"].is_string(), "{}", events[0]);

    let output = factum(
        &url,
        &schema,
        &["streams", "show", "order-1", "--from", "2"],
    )
    .await;
    assert_exit(&output, 0);
    let text = stdout(&output);
    assert!(
        text.contains("order-1 v2  Tested") && !text.contains("order-1 v1"),
        "{text}"
    );
    assert!(
        text.contains("payload:") && text.contains("1 events"),
        "{text}"
    );

    let output = factum(&url, &schema, &["streams", "show", "order-404"]).await;
    assert_exit(&output, 3);
    assert!(
        stderr(&output).contains("unknown stream `order-404`"),
        "{}",
        stderr(&output)
    );

    let output = factum(&url, &schema, &["streams", "show", "nodash"]).await;
    assert_exit(&output, 2);
    assert!(
        stderr(&output).contains("invalid stream `nodash`"),
        "{}",
        stderr(&output)
    );

    let output = factum(&url, &schema, &["streams", "frobnicate"]).await;
    assert_exit(&output, 2);
    assert!(
        stderr(&output).contains("frobnicate"),
        "{}",
        stderr(&output)
    );

    let mut no_url = Command::new(env!("CARGO_BIN_EXE_factum"));
    no_url.env_remove("DATABASE_URL").args(["doctor"]);
    let output = tokio::task::spawn_blocking(move || no_url.output().expect("run"))
        .await
        .expect("ends");
    assert_exit(&output, 2);
    assert!(
        stderr(&output).contains("no database"),
        "{}",
        stderr(&output)
    );
}

/// Answers every confirmation with `answer`, counting the questions.
struct Answer {
    answer: bool,
    asked: usize,
}

impl Prompt for Answer {
    fn interactive(&self) -> bool {
        true
    }

    fn confirm(&mut self, _question: &str) -> std::io::Result<bool> {
        self.asked += 1;
        Ok(self.answer)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projections_and_dead_letters() {
    let url = url().await;
    let store = fresh_store().await.expect("a store");
    let schema = schema(&store);
    let tally = RecordingProjection::new("tally");
    for n in 0..3 {
        append_tested(&store, "order-a", n).await;
    }
    let (poison, _) = append_tested(&store, "order-p", 10).await;
    let (behind, head) = append_tested(&store, "order-p", 11).await;
    tally.fail_on(poison);
    let running = run_tally(&store, &tally);
    wait_for(&running, head).await;

    // Status: the checkpoint at the head, the worker holding the lease, two parked events.
    let output = factum(&url, &schema, &["--json", "projections", "status"]).await;
    assert_exit(&output, 0);
    let status = json(&output);
    let partition = &status[0];
    assert_eq!(partition["name"], "tally");
    assert_eq!(partition["partition"], 0);
    assert_eq!(partition["checkpoint"], head);
    assert_eq!(partition["behind"], 0);
    assert_eq!(partition["state"], "running");
    assert_eq!(partition["holder"], "worker-1");
    assert_eq!(partition["parked"], 2);
    let output = factum(&url, &schema, &["projections", "status"]).await;
    assert_exit(&output, 0);
    let text = stdout(&output);
    assert!(text.contains("tally") && text.contains("running") && text.contains("worker-1"));
    capture("projections-status", &text);

    let output = factum(&url, &schema, &["projections", "status", "nope"]).await;
    assert_exit(&output, 3);
    assert!(
        stderr(&output).contains("unknown projection `nope`: known: tally"),
        "{}",
        stderr(&output)
    );

    // The parked events: the poisoned one failed, the next of its stream waits behind it.
    let output = factum(&url, &schema, &["--json", "dead-letters", "list", "tally"]).await;
    assert_exit(&output, 0);
    let parked = json(&output);
    let parked = parked.as_array().expect("an array");
    assert_eq!(parked.len(), 2);
    assert_eq!(parked[0]["event_id"], poison.to_string());
    assert!(parked[0]["reason"]["Failed"].is_object(), "{}", parked[0]);
    assert_eq!(parked[1]["event_id"], behind.to_string());
    assert!(parked[1]["reason"]["Waiting"].is_object(), "{}", parked[1]);
    let output = factum(&url, &schema, &["dead-letters", "list"]).await;
    assert_exit(&output, 0);
    let text = stdout(&output);
    assert!(
        text.contains("failed after 1 attempts") && text.contains("waits behind"),
        "{text}"
    );
    assert!(text.contains("2 parked events"), "{text}");
    capture("dead-letters-list", &text);

    // The doctor counts parked events as a problem.
    let output = factum(&url, &schema, &["--json", "doctor"]).await;
    assert_exit(&output, 1);
    let report = json(&output);
    assert_eq!(report["healthy"], false);
    let projections = report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .find(|f| f["check"] == "projections")
        .expect("a projections finding")
        .clone();
    assert_eq!(projections["status"], "fail", "{projections}");

    // Skip refuses without a terminal or --yes, and changes nothing.
    let output = factum(&url, &schema, &["dead-letters", "skip", "tally"]).await;
    assert_exit(&output, 5);
    assert!(
        stderr(&output).contains("give --yes"),
        "{}",
        stderr(&output)
    );
    assert_eq!(running.parked("tally").await.expect("parked").len(), 2);

    // Replay while the handler still fails: the worker parks them again, and the tool says so
    // with exit code 1.
    let output = factum(
        &url,
        &schema,
        &["--json", "dead-letters", "replay", "tally"],
    )
    .await;
    assert_exit(&output, 1);
    let replay = json(&output);
    assert_eq!(replay["marked"], 2, "{replay}");
    assert_eq!(replay["replayed"], 0, "{replay}");
    assert_eq!(replay["still_parked"], 2, "{replay}");

    // Replay: the healed handler takes both events; the tool waits for the worker.
    tally.heal(poison);
    let output = factum(
        &url,
        &schema,
        &["dead-letters", "replay", "tally", "--stream", "order-p"],
    )
    .await;
    assert_exit(&output, 0);
    assert!(
        stdout(&output).contains("replayed 2 of 2 parked events of `tally`; 0 still parked"),
        "{}",
        stdout(&output)
    );
    let applied = tally.recording().applied;
    assert!(applied.contains_key(&poison) && applied.contains_key(&behind));
    assert!(running.parked("tally").await.expect("parked").is_empty());

    // Skip, confirmed: the stream is no longer held back, its next event is handled.
    let (stuck, _) = append_tested(&store, "order-q", 20).await;
    tally.fail_on(stuck);
    let coordination = PgCoordination::new(&store);
    eventually("the event parked", || async {
        coordination.list("tally").await.expect("list").len() == 1
    })
    .await;
    let output = factum(
        &url,
        &schema,
        &[
            "dead-letters",
            "skip",
            "tally",
            "--stream",
            "order-q",
            "--yes",
        ],
    )
    .await;
    assert_exit(&output, 0);
    assert!(
        stdout(&output).contains("skipped 1 parked events"),
        "{}",
        stdout(&output)
    );
    let (next, head) = append_tested(&store, "order-q", 21).await;
    wait_for(&running, head).await;
    assert!(tally.recording().applied.contains_key(&next));
    assert!(!tally.recording().applied.contains_key(&stuck));
    assert!(running.parked("tally").await.expect("parked").is_empty());

    // Rebuild: the worker handles every event again (the skipped one too, healed now); the
    // tool follows it to the head.
    tally.heal(stuck);
    let before = tally.recording().deliveries;
    let output = factum(&url, &schema, &["projections", "rebuild", "tally", "--yes"]).await;
    assert_exit(&output, 0);
    let text = stdout(&output);
    assert!(
        text.contains("projection `tally` reset: 1 checkpoints at 0"),
        "{text}"
    );
    assert!(text.contains("projection `tally` rebuilt"), "{text}");
    assert!(
        tally.recording().deliveries >= before + 7,
        "every event handled again: {} then {}",
        before,
        tally.recording().deliveries
    );
    assert!(tally.recording().applied.contains_key(&stuck));
    assert!(running.parked("tally").await.expect("parked").is_empty());

    // Reset through the library: declined, nothing changes; confirmed, the checkpoint goes to
    // 0 and the named table is emptied in the same transaction.
    running.shutdown().await.expect("shut down");
    let client = factum_postgres::PgAdmin::new(&store);
    let checkpoint = client.partitions(Some("tally")).await.expect("partitions")[0].checkpoint;
    assert!(checkpoint >= head);
    let raw = store.pool().get().await.expect("a connection");
    raw.batch_execute(&format!(
        "CREATE TABLE \"{schema}\".tally_rows (n int); INSERT INTO \"{schema}\".tally_rows VALUES (1)"
    ))
    .await
    .expect("a read-model table");
    let cli = |args: &[&str]| {
        Cli::try_parse_from(
            ["factum", "--database-url", &url, "--schema", &schema]
                .iter()
                .chain(args),
        )
        .expect("arguments")
    };
    let reset = cli(&["projections", "reset", "tally", "--truncate", "tally_rows"]);
    let mut no = Answer {
        answer: false,
        asked: 0,
    };
    let declined = factum_cli::run(&reset, &mut Vec::new(), &mut no).await;
    assert!(
        matches!(declined, Err(CliError::NotConfirmed(_))),
        "{declined:?}"
    );
    assert_eq!(declined.map_err(|e| e.exit_code()).err(), Some(5));
    assert_eq!(no.asked, 1);
    let unchanged = client.partitions(Some("tally")).await.expect("partitions");
    assert_eq!(unchanged[0].checkpoint, checkpoint);

    let bad = cli(&[
        "projections",
        "reset",
        "tally",
        "--yes",
        "--truncate",
        "x;y",
    ]);
    let refused = factum_cli::run(&bad, &mut Vec::new(), &mut no).await;
    assert_eq!(refused.map_err(|e| e.exit_code()).err(), Some(2));

    let mut yes = Answer {
        answer: true,
        asked: 0,
    };
    let mut out = Vec::new();
    let code = factum_cli::run(&reset, &mut out, &mut yes)
        .await
        .expect("reset");
    assert_eq!((code, yes.asked), (0, 1));
    let after = client.partitions(Some("tally")).await.expect("partitions");
    assert_eq!(after[0].checkpoint, 0);
    let rows: i64 = raw
        .query_one(
            &format!("SELECT count(*) FROM \"{schema}\".tally_rows"),
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(rows, 0);
    drop(raw);

    // With no worker and a checkpoint at 0, the status shows the partition behind.
    let output = factum(&url, &schema, &["--json", "projections", "status", "tally"]).await;
    assert_exit(&output, 0);
    let status = json(&output);
    assert_eq!(status[0]["state"], "no-worker");
    assert_eq!(status[0]["behind"], 7, "{status}");

    // A rebuild with no worker to follow rewinds and says who will do the work.
    let output = factum(&url, &schema, &["projections", "rebuild", "tally", "--yes"]).await;
    assert_exit(&output, 0);
    assert!(
        stdout(&output).contains("no worker holds `tally` now"),
        "{}",
        stdout(&output)
    );
}

/// Held by the tests that look at the cluster's replication: a standby is the whole
/// cluster's.
static REPLICATION: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_names_the_session_holding_the_head_back() {
    let _replication = REPLICATION.lock().await;
    // A database of its own: any transaction of the store's database holds its head back,
    // and the other tests of this process migrate and append in theirs.
    let shared = url().await;
    let database = format!("cli_doctor_{}", uuid::Uuid::new_v4().simple());
    let admin = factum_postgres::PgConnectOptions::parse(&shared)
        .expect("the test URL")
        .connect()
        .await
        .expect("connect");
    admin
        .batch_execute(&format!("CREATE DATABASE {database}"))
        .await
        .expect("a database for the test");
    let user = shared
        .parse::<factum_postgres::tokio_postgres::Config>()
        .expect("the test URL")
        .get_user()
        .unwrap_or("postgres")
        .to_owned();
    let url = format!(
        "{} dbname={database}",
        factum_postgres::testing::url_as(&shared, &user).expect("a URL")
    );
    let store = PgStore::connect(&url).await.expect("connect");
    store.migrate().await.expect("migrate");
    let schema = schema(&store);
    let tally = RecordingProjection::new("tally");
    let (_, head) = append_tested(&store, "order-1", 1).await;
    let running = run_tally(&store, &tally);
    wait_for(&running, head).await;
    running.shutdown().await.expect("shut down");

    let output = factum(&url, &schema, &["doctor"]).await;
    assert_exit(&output, 0);
    let text = stdout(&output);
    assert!(text.contains("[ok  ] schema"), "{text}");
    assert!(text.contains("[ok  ] head"), "{text}");
    assert!(text.contains("[ok  ] replication  no standby"), "{text}");
    assert!(text.contains("tally/0: idle, 0 events behind"), "{text}");
    assert!(text.ends_with("healthy\n"), "{text}");

    // A forgotten transaction holding a transaction id, then an event committed after it.
    let open = OpenTransaction::begin(&url, "stuck-writer")
        .await
        .expect("an open transaction");
    append_tested(&store, "order-1", 2).await;
    let args = ["doctor", "--held-back-after", "0s", "--stalled-after", "1h"];
    let output = factum(&url, &schema, &args).await;
    assert_exit(&output, 1);
    let text = stdout(&output);
    assert!(text.contains("[FAIL] head"), "{text}");
    assert!(
        text.contains(&format!("pid {} (stuck-writer)", open.pid())),
        "{text}"
    );
    assert!(text.contains("idle in transaction"), "{text}");
    assert!(
        text.contains("last query: SELECT pg_backend_pid()"),
        "{text}"
    );
    assert!(text.contains("[ok  ] projections"), "{text}");
    assert!(text.ends_with("problems found\n"), "{text}");
    capture("doctor", &text.replace(&schema, "factum"));

    let mut json_args = vec!["--json"];
    json_args.extend(args);
    let output = factum(&url, &schema, &json_args).await;
    assert_exit(&output, 1);
    let report = json(&output);
    assert_eq!(report["healthy"], false);
    assert_eq!(report["findings"][1]["check"], "head");
    assert_eq!(report["findings"][1]["status"], "fail");

    open.commit().await.expect("commit");
    let output = factum(&url, &schema, &args).await;
    assert_exit(&output, 0);
    assert!(
        stdout(&output).contains("[ok  ] head"),
        "{}",
        stdout(&output)
    );
}

/// A streaming standby of the test cluster (`pg_basebackup -R`), on a Unix socket in its own
/// directory; stopped and removed when dropped.
struct Standby {
    dir: PathBuf,
    bin: PathBuf,
    as_root: bool,
}

impl Standby {
    /// The server binaries: on `PATH`, or the newest under `/usr/lib/postgresql`.
    fn binaries() -> PathBuf {
        let has = |dir: &std::path::Path| {
            dir.join("pg_basebackup").is_file() && dir.join("pg_ctl").is_file()
        };
        if let Some(dir) =
            std::env::var_os("PATH").and_then(|path| std::env::split_paths(&path).find(|d| has(d)))
        {
            return dir;
        }
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries under /usr/lib/postgresql")
            .filter_map(Result::ok)
            .filter_map(|e| {
                let version = e.file_name().to_str()?.parse().ok()?;
                Some((version, e.path().join("bin")))
            })
            .filter(|(_, bin)| has(bin))
            .collect();
        versions.sort();
        versions.pop().expect("pg_basebackup installed").1
    }

    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        if self.as_root {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    fn run(command: &mut Command) -> Result<(), String> {
        let output = command.output().expect("run a server binary");
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{command:?} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }

    /// Copies the cluster of `url` and starts a standby of it, allowing `max_connections`
    /// (a hot standby allows at least as many as its primary).
    fn start(url: &str, max_connections: &str) -> Self {
        use std::os::unix::fs::MetadataExt as _;
        let config: factum_postgres::tokio_postgres::Config = url.parse().expect("the test URL");
        let host = match config.get_hosts().first().expect("a host") {
            factum_postgres::tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
            factum_postgres::tokio_postgres::config::Host::Tcp(host) => host.clone(),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let user = config.get_user().unwrap_or("postgres").to_owned();
        let as_root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
        let dir =
            PathBuf::from("/tmp").join(format!("factum-standby-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("the standby's directory");
        let standby = Self {
            dir,
            bin: Self::binaries(),
            as_root,
        };
        if as_root {
            Self::run(Command::new("chown").arg("postgres:").arg(&standby.dir)).expect("chown");
        }
        let data = standby.dir.join("data");
        Self::run(
            standby
                .command("pg_basebackup")
                .arg("-D")
                .arg(&data)
                .args(["-R", "-X", "stream", "--checkpoint=fast", "--no-sync"])
                .args(["-h", &host, "-p", &port.to_string(), "-U", &user]),
        )
        .expect("a base backup");
        Self::run(
            standby
                .command("pg_ctl")
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(standby.dir.join("server.log"))
                .args(["-w", "-t", "60", "-o"])
                .arg(format!(
                    "-c listen_addresses='' -k {} -p {STANDBY_PORT} -c shared_buffers=16MB \
                     -c max_connections={max_connections}",
                    standby.dir.display()
                ))
                .arg("start"),
        )
        .unwrap_or_else(|e| {
            let log = std::fs::read_to_string(standby.dir.join("server.log")).unwrap_or_default();
            panic!("{e}\nthe standby's log:\n{log}")
        });
        standby
    }

    fn url(&self) -> String {
        format!(
            "postgresql://postgres@/postgres?host={}&port={STANDBY_PORT}",
            self.dir.display()
        )
    }
}

const STANDBY_PORT: u16 = 5433;

impl Drop for Standby {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_reports_replication_on_the_primary_and_on_a_standby() {
    let _replication = REPLICATION.lock().await;
    let url = url().await;
    let store = fresh_store().await.expect("a store");
    let schema = schema(&store);
    let raw = factum_postgres::PgConnectOptions::parse(&url)
        .expect("the test URL")
        .connect()
        .await
        .expect("connect");
    let max_connections: String = raw
        .query_one("SHOW max_connections", &[])
        .await
        .expect("max_connections")
        .get(0);
    let shared = url.clone();
    let standby = tokio::task::spawn_blocking(move || Standby::start(&shared, &max_connections))
        .await
        .expect("the standby starts");
    let admin = factum_postgres::PgAdmin::new(&store);
    eventually("the standby streams", || async {
        admin
            .replication()
            .await
            .expect("replication")
            .standbys
            .iter()
            .any(|s| s.state.as_deref() == Some("streaming"))
    })
    .await;

    let output = factum(&url, &schema, &["--json", "doctor"]).await;
    let report = json(&output);
    let replication = &report["findings"][3];
    assert_eq!(replication["check"], "replication", "{report}");
    assert_eq!(replication["status"], "ok", "{report}");
    assert!(
        replication["summary"]
            .as_str()
            .is_some_and(|s| s.ends_with("standbys") && !s.starts_with("0 ")),
        "{report}"
    );
    assert!(
        replication["details"]
            .as_array()
            .expect("details")
            .iter()
            .any(|d| d.as_str().is_some_and(|d| d.contains(": streaming, async"))),
        "{report}"
    );

    // On the standby: the store's schema is there, read-only, and the doctor says where it
    // runs.
    let output = factum(&standby.url(), &schema, &["doctor"]).await;
    let text = stdout(&output);
    assert!(
        text.contains("replication  this server is a standby; last replayed transaction"),
        "{text}\n{}",
        stderr(&output)
    );
    assert!(text.contains("[ok  ] schema"), "{text}");
    assert_exit(&output, 0);

    // Stopped, it leaves the primary's list (before the other tests look at replication).
    drop(standby);
    eventually("the standby gone", || async {
        admin
            .replication()
            .await
            .expect("replication")
            .standbys
            .is_empty()
    })
    .await;
}

/// The tool connects as the store does: `sslmode` and `sslrootcert` in the URL apply, and a
/// certificate it cannot verify is a connection error (exit 4) naming TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_urls_work_as_for_the_store() {
    let tls = TestDatabase::tls().await.expect("the TLS test cluster");
    let schema = format!("cli_{}", uuid::Uuid::new_v4().simple());
    let url = tls.url("verify-full");
    let output = factum(&url, &schema, &["migrate"]).await;
    assert_exit(&output, 0);
    let output = factum(&url, &schema, &["projections", "status"]).await;
    assert_exit(&output, 0);
    assert!(
        stdout(&output).contains("no projection has run on this store yet"),
        "{}",
        stdout(&output)
    );

    let foreign = tls.url_to(&tls.host, "verify-full", Some(&tls.foreign_ca_file));
    let output = factum(&foreign, &schema, &["doctor"]).await;
    assert_exit(&output, 4);
    assert!(
        stderr(&output).contains("TLS connection to"),
        "{}",
        stderr(&output)
    );
}
