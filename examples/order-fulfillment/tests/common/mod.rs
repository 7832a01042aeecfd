//! Helpers shared by the integration tests.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test file uses a part of the helpers"
)]

use factum::store::ReadAll;
use factum::{EventStore, RecordedEvent};
use factum_postgres::PgStore;

/// A migrated PostgreSQL store in a schema of its own, on the throwaway test cluster (or
/// `DATABASE_URL`). Panics when there is none: these tests are never skipped.
pub async fn postgres() -> PgStore {
    match factum_postgres::testing::fresh_store().await {
        Ok(store) => store,
        Err(e) => panic!("no PostgreSQL for the tests: {e}"),
    }
}

/// Every event of the store, in global order.
pub async fn all_events<S: EventStore>(store: &S) -> Vec<RecordedEvent> {
    let mut events = Vec::new();
    let mut after = 0;
    loop {
        let batch = store
            .read_all(&ReadAll::after(after).limit(500))
            .await
            .expect("read_all");
        let Some(last) = batch.last() else {
            return events;
        };
        after = last.position;
        events.extend(batch);
    }
}

/// The `(stream, event type)` of every event of the store, sorted: equal for two stores
/// when they hold the same events, whatever their order.
pub async fn fingerprint<S: EventStore>(store: &S) -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = all_events(store)
        .await
        .into_iter()
        .map(|e| (e.stream_id.as_str().to_owned(), e.event_type))
        .collect();
    all.sort();
    all
}

/// The event types of one stream, in order.
pub async fn stream_types<S: EventStore>(store: &S, stream: &str) -> Vec<String> {
    let stream = factum::StreamId::parse(stream).expect("stream name");
    store
        .read_stream(&stream, &factum::store::StreamRead::all())
        .await
        .expect("read_stream")
        .into_iter()
        .map(|e| e.event_type)
        .collect()
}

/// Every row of the example's read model tables in `store`'s schema, as `(table, row as
/// JSON)`, sorted: equal when the tables hold the same rows.
pub async fn read_model_tables(store: &PgStore) -> Vec<(String, String)> {
    let schema = store.config().schema.quoted();
    let client = store.pool().get().await.expect("a connection");
    let mut rows = Vec::new();
    for table in [
        "order_list",
        "customer_stats",
        "customer_spent",
        "customer_orders",
        "daily_sales",
    ] {
        let sql = format!("SELECT to_jsonb(t)::text FROM {schema}.{table} AS t");
        for row in client.query(&sql, &[]).await.expect("the table") {
            rows.push((table.to_owned(), row.get::<_, String>(0)));
        }
    }
    rows.sort();
    rows
}

/// The master key of the tests' PostgreSQL key stores: the same for every start, as a
/// deployment's configured key is.
pub fn master_key() -> factum::personal::MasterKey {
    factum::personal::MasterKey::from_bytes([7; 32])
}

/// What a captured output is compared by: runs of digits (positions, times, counts) and of
/// spaces do not count.
fn shape(text: &str) -> String {
    let mut shaped = String::new();
    let mut last = ' ';
    for c in text.chars() {
        let c = match c {
            '0'..='9' => '#',
            '\t' => ' ',
            other => other,
        };
        if (c == '#' || c == ' ') && c == last {
            continue;
        }
        shaped.push(c);
        last = c;
    }
    shaped
}

/// Writes `text` to `tests/output/NAME.txt`, which the book includes, when it differs in
/// more than numbers from what is there, and then fails: the book showed stale output.
pub fn capture(name: &str, text: &str) {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
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
