//! The operator's page in headless Chromium, driven over WebDriver by `chromedriver`: on
//! PostgreSQL, an event the order list's projection fails on is parked; the page shows it;
//! once the cause is healed, its replay button replays it and the page shows it gone.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them): without them
//! the test fails, saying so.

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use factum::projection::FailurePolicy;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use order_fulfillment::service::DoctorDatabase;
use order_fulfillment::{App, AppOptions, ServiceOptions, http};
use serde_json::json;

/// The browser and its driver, as Debian installs them.
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How long the page may take to show what a step waits for, on a loaded machine.
const DEADLINE: Duration = Duration::from_secs(90);

/// A `chromedriver` process of the test's, ended when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    /// Starts `chromedriver` on a free port and waits until it accepts connections.
    fn start() -> Self {
        Self::start_with(CHROMIUM, CHROMEDRIVER)
    }

    /// Starts `chromedriver` at `driver` for the browser at `chromium`; fails, naming the
    /// packages, when either is missing.
    fn start_with(chromium: &str, driver: &str) -> Self {
        for program in [chromium, driver] {
            assert!(
                Path::new(program).exists(),
                "{program} is missing: the browser test needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver), which .ci/run installs"
            );
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let driver = Self { child, port };
        let started = std::time::Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < DEADLINE,
                "chromedriver does not listen on port {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        driver
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A WebDriver session of headless Chromium with a fresh profile in `profile`, with the
/// flags that keep it from reaching out to a network it does not have.
async fn browser(driver: &Driver, profile: &Path) -> Client {
    let args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1000,1000",
    ]
    .iter()
    .map(|a| (*a).to_owned())
    .chain([format!("--user-data-dir={}", profile.display())])
    .collect::<Vec<_>>();
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({ "binary": CHROMIUM, "args": args }),
    );
    ClientBuilder::new(HttpConnector::new())
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a Chromium session")
}

/// The texts of the elements `css` finds, read in one script run: the page redraws its
/// tables every 2 s, and elements found in one WebDriver call may be gone by the next.
async fn texts(client: &Client, css: &str) -> Vec<String> {
    let script = "return Array.from(document.querySelectorAll(arguments[0]))\
        .map(e => e.innerText.replace(/\\s+/g, ' ').trim());";
    let found = client
        .execute(script, vec![json!(css)])
        .await
        .expect("the script runs");
    serde_json::from_value(found).expect("a list of texts")
}

/// Waits until `check` accepts the texts of the elements `css` finds.
async fn wait_for(client: &Client, css: &str, what: &str, check: impl Fn(&[String]) -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let found = texts(client, css).await;
        if check(&found) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: `{css}` shows {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Without the browser or its driver the test fails, saying what to install; it is never
/// skipped.
#[test]
#[should_panic(
    expected = "is missing: the browser test needs Debian's chromium and chromium-driver"
)]
fn a_missing_browser_fails_the_test_naming_the_packages() {
    let _ = Driver::start_with(CHROMIUM, "/nonexistent/chromedriver");
}

// ANCHOR: browser_test
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_page_shows_a_parked_event_and_replays_it() {
    // The order list's table goes away: its projection parks the order after two attempts.
    let store = common::postgres().await;
    let options = AppOptions {
        failure: FailurePolicy::park_after(2)
            .backoff(Duration::from_millis(10), Duration::from_millis(50)),
        ..AppOptions::default()
    };
    let app = Arc::new(
        App::on_postgres(store.clone(), common::master_key(), &options)
            .await
            .unwrap(),
    );
    let schema = store.config().schema.quoted();
    let client = store.pool().get().await.unwrap();
    let rename = |from: &str, to: &str| format!("ALTER TABLE {schema}.{from} RENAME TO {to}");
    client
        .batch_execute(&rename("order_list", "order_list_away"))
        .await
        .unwrap();
    app.receive_stock("keyboard", 5, None).await.unwrap();
    let order = serde_json::from_value(json!({
        "order_id": "o-1",
        "customer_id": "alice",
        "lines": [{"sku": "keyboard", "quantity": 1, "unit_price_cents": 4999}],
    }))
    .unwrap();
    app.place_order(order, None).await.unwrap();
    app.settle().await.unwrap();
    assert_eq!(app.dead_letters().await.unwrap().len(), 1);

    // The server, sampling the lag often so that the chart has points at once, with the
    // `factum` tool's doctor on the store.
    let url = factum_postgres::testing::TestDatabase::get().await.unwrap();
    let service = ServiceOptions {
        lag_sample_every: Duration::from_millis(200),
        doctor_database: Some(DoctorDatabase {
            url,
            schema: store.config().schema.as_str().to_owned(),
        }),
        ..ServiceOptions::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let server = tokio::spawn(
        axum::serve(listener, http::router_with(Arc::clone(&app), &service)).into_future(),
    );

    let driver = Driver::start();
    let profile = std::env::temp_dir().join(format!("factum-chromium-{}", uuid::Uuid::new_v4()));
    let browser = browser(&driver, &profile).await;
    browser
        .goto(&format!("http://{addr}/admin"))
        .await
        .expect("the page loads");

    // The parked event, the doctor's warning and a line per worker in the chart.
    wait_for(&browser, "tr.parked", "the parked event", |rows| {
        rows.len() == 1 && rows[0].contains("order_list") && rows[0].contains("OrderPlaced")
    })
    .await;
    wait_for(&browser, "tr.finding", "the doctor's findings", |rows| {
        let has = |status: &str, text: &str| {
            rows.iter()
                .any(|r| r.starts_with(status) && r.contains(text))
        };
        // The application's own check, and the tool's on the store.
        has("WARN", "1 parked events") && has("OK schema", "") && has("FAIL projections", "parked")
    })
    .await;
    let lines = browser
        .find_all(Locator::Css("#lag polyline"))
        .await
        .unwrap();
    assert!(lines.len() >= 4, "a line per worker: {}", lines.len());
    // For the book: the doctor's findings as the page shows them, the summaries of those
    // that depend on the moment (sessions, positions) left out.
    let findings: Vec<String> = texts(&browser, "tr.finding")
        .await
        .iter()
        .map(|row| {
            let words: Vec<&str> = row.split_whitespace().collect();
            match words.get(1) {
                Some(&"workers" | &"dead") => words.join(" "),
                _ => words.iter().take(2).copied().collect::<Vec<_>>().join(" ") + " ...",
            }
        })
        .collect();
    common::capture("admin-doctor", &(findings.join("\n") + "\n"));
    let screenshot = browser.screenshot().await.expect("a screenshot");
    assert!(screenshot.starts_with(b"\x89PNG"), "a PNG");
    save_screenshot(&screenshot);

    // The table is back: the button replays the event, which leaves the page.
    client
        .batch_execute(&rename("order_list_away", "order_list"))
        .await
        .unwrap();
    browser
        .find(Locator::Css("#replay"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for(&browser, "#replay-result", "the replay's answer", |r| {
        r.first()
            .is_some_and(|t| t == "replay requested for 1 event(s)")
    })
    .await;
    wait_for(
        &browser,
        "tr.parked",
        "the parked event gone",
        <[String]>::is_empty,
    )
    .await;
    wait_for(&browser, "tr.finding", "the doctor's all clear", |rows| {
        let has = |status: &str, text: &str| {
            rows.iter()
                .any(|r| r.starts_with(status) && r.contains(text))
        };
        has("OK", "no parked event") && has("OK projections", "")
    })
    .await;
    assert_eq!(app.order("o-1").await.unwrap().status, "placed");

    browser.close().await.unwrap();
    drop(driver);
    server.abort();
    let _ = std::fs::remove_dir_all(&profile);
}
// ANCHOR_END: browser_test

/// Writes the page's screenshot to `book/src/images/admin.png` when `FACTUM_SCREENSHOT` is
/// set (the book shows the one committed), else to the test's temporary directory.
fn save_screenshot(png: &[u8]) {
    let path = if std::env::var_os("FACTUM_SCREENSHOT").is_some() {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../book/src/images/admin.png")
    } else {
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("admin.png")
    };
    std::fs::write(&path, png).expect("write the screenshot");
}
