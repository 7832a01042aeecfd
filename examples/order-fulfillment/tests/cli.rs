//! The command line, as README tells to run it: the demo in memory, and on PostgreSQL twice
//! on the same schema.

use std::process::{Command, Output};

/// The master key the binary reads on PostgreSQL.
const MASTER_KEY: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";

const ORDERS: [&str; 4] = [
    "o-1001   alice    shipped         89.97 EUR  tracking DHL-o-1001",
    "o-1002   bob      shipped        189.00 USD  tracking UPS-o-1002",
    "o-1003   alice    cancelled       19.99 EUR  changed my mind",
    "o-1004   carol    cancelled      427.99 EUR  out of stock: monitor (requested 2, available 1)",
];

fn run(args: &[&str]) -> String {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(env!("CARGO_BIN_EXE_order-fulfillment"))
        .args(args)
        .env_remove("DATABASE_URL")
        .env("FACTUM_MASTER_KEY", MASTER_KEY)
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&stdout).into_owned();
    assert!(
        status.success(),
        "{status}\n{stdout}\n{}",
        String::from_utf8_lossy(&stderr)
    );
    stdout
}

fn assert_read_models(printed: &str) {
    for row in ORDERS {
        assert!(printed.contains(row), "missing {row:?} in\n{printed}");
    }
    assert!(
        printed.contains("alice    orders 2  spent 89.97 EUR"),
        "{printed}"
    );
    assert!(
        printed.contains("mouse     on hand 23  reserved  0  available 23"),
        "{printed}"
    );
    assert!(
        printed.contains("== Event stream order-o-1001"),
        "{printed}"
    );
}

#[test]
fn the_demo_runs_in_memory_by_default() {
    assert_read_models(&run(&[]));
    assert_read_models(&run(&["demo"]));
}

/// Runs the binary and returns what it printed on standard output and standard error.
fn run_with_stderr(args: &[&str]) -> (String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_order-fulfillment"))
        .args(args)
        .env_remove("DATABASE_URL")
        .env("FACTUM_MASTER_KEY", MASTER_KEY)
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "{}\n{stdout}\n{stderr}",
        output.status
    );
    (stdout, stderr)
}

#[test]
fn rebuild_reports_each_read_model_and_prints_the_same_read_models() {
    let (stdout, stderr) = run_with_stderr(&["rebuild"]);
    for name in ["order_list", "customer_stats", "daily_sales"] {
        assert!(stderr.contains(&format!("rebuilt {name}")), "{stderr}");
    }
    assert_read_models(&stdout);
}

#[tokio::test]
async fn the_demo_runs_on_postgres_and_again_on_the_same_schema() {
    let url = match factum_postgres::testing::TestDatabase::get().await {
        Ok(url) => url,
        Err(e) => panic!("no PostgreSQL for the tests: {e}"),
    };
    let schema = format!("demo_{}", uuid::Uuid::new_v4().simple());
    let args = ["--database-url", url.as_str(), "--schema", schema.as_str()];
    let first = run(&args);
    assert_read_models(&first);
    assert!(!first.contains("ran on this store before"), "{first}");

    let second = run(&args);
    assert!(second.contains("ran on this store before"), "{second}");
    assert_read_models(&second);

    // The tables rebuilt from the stored events hold the same read models.
    let rebuild: Vec<&str> = std::iter::once("rebuild").chain(args).collect();
    let (rebuilt, stderr) = run_with_stderr(&rebuild);
    assert!(stderr.contains("rebuilt daily_sales"), "{stderr}");
    assert_read_models(&rebuilt);
}

#[test]
fn bad_arguments_print_the_usage() {
    let output = Command::new(env!("CARGO_BIN_EXE_order-fulfillment"))
        .arg("--nonsense")
        .output()
        .expect("the binary runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("unexpected argument '--nonsense'"),
        "{stderr}"
    );
    assert!(stderr.contains("Usage: order-fulfillment"), "{stderr}");
}

#[tokio::test]
async fn the_demo_runs_over_tls_and_names_an_unknown_authority() {
    let db = match factum_postgres::testing::TestDatabase::tls().await {
        Ok(db) => db,
        Err(e) => panic!("no PostgreSQL for the tests: {e}"),
    };
    let schema = format!("demo_tls_{}", uuid::Uuid::new_v4().simple());
    let url = db.url_to("localhost", "verify-full", Some(&db.ca_file));
    assert_read_models(&run(&["--database-url", &url, "--schema", &schema]));

    // Another CA: the binary stops before running anything, naming the cause.
    let url = db.url_to("localhost", "verify-full", Some(&db.foreign_ca_file));
    let output = Command::new(env!("CARGO_BIN_EXE_order-fulfillment"))
        .args(["--database-url", &url, "--schema", &schema])
        .env("FACTUM_MASTER_KEY", MASTER_KEY)
        .output()
        .expect("the binary runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "TLS connection to `localhost` failed: certificate signed by an unknown authority"
        ),
        "{stderr}"
    );
}

#[test]
fn a_malformed_master_key_refuses_to_start_and_a_missing_one_warns() {
    let run = |key: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_order-fulfillment"));
        // The key is read before connecting; nothing listens on this port.
        command.args(["--database-url", "postgresql://nobody@127.0.0.1:1/none"]);
        match key {
            Some(key) => command.env("FACTUM_MASTER_KEY", key),
            None => command.env_remove("FACTUM_MASTER_KEY"),
        };
        let output = command.output().expect("the binary runs");
        assert!(!output.status.success(), "no server to connect to");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };

    let stderr = run(Some("not-a-key"));
    assert!(
        stderr.contains("FACTUM_MASTER_KEY is not a master key"),
        "{stderr}"
    );
    assert!(!stderr.contains("store: PostgreSQL"), "{stderr}");

    // Without a key, the demo key is used (with a warning) and the program goes on to connect.
    let stderr = run(None);
    assert!(
        stderr.contains("warning: FACTUM_MASTER_KEY is not set")
            && stderr.contains("public demo master key"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("is not a master key"),
        "the demo key is a valid key: {stderr}"
    );
}

#[test]
fn the_database_url_comes_from_the_environment_and_an_empty_one_means_in_memory() {
    let run = |url: &str| {
        Command::new(env!("CARGO_BIN_EXE_order-fulfillment"))
            .env("DATABASE_URL", url)
            .env("FACTUM_MASTER_KEY", MASTER_KEY)
            .output()
            .expect("the binary runs")
    };
    // Nothing listens on this port: the program tried PostgreSQL.
    let output = run("postgresql://nobody@127.0.0.1:1/none");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(!stderr.contains("store: in memory"), "{stderr}");

    let output = run("");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("store: in memory"), "{stderr}");
    assert_read_models(&String::from_utf8_lossy(&output.stdout));
}
