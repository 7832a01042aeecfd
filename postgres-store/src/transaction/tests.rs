//! What a transactional projection's handler sees of its transaction: the store's schema on
//! the `search_path`, and its statements prepared once per transaction.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use factum::projection::{ProjectionOptions, ProjectionRunner};
use factum::store::ReadAll;
use factum::testing::projections::append_tested;
use factum::{BoxError, EventStore, Projection, RecordedEvent};
use uuid::Uuid;

use crate::testing::fresh_store;
use crate::{PgCoordination, PgProjection, PgStore, PgTransaction, Transactional};

const PATIENCE: Duration = Duration::from_secs(120);

/// Runs `projection` with `PgCoordination` until its checkpoint reaches `head`, then rebuilds
/// it and waits for the rebuild; returns once both are done.
async fn catch_up_and_rebuild<P: Projection>(store: &PgStore, projection: P, head: u64) {
    let name = projection.name().to_owned();
    let coordination = PgCoordination::new(store);
    let running = ProjectionRunner::new(store.clone())
        .coordination(coordination)
        .register(
            projection,
            ProjectionOptions::new()
                .batch_size(10)
                .poll_interval(Duration::from_millis(20)),
        )
        .start();
    tokio::time::timeout(PATIENCE, running.wait_for(&name, head))
        .await
        .expect("caught up in time")
        .expect("caught up");
    let target = tokio::time::timeout(PATIENCE, running.rebuild(&name, |_| {}))
        .await
        .expect("rebuilt in time")
        .expect("rebuilt");
    assert!(target >= head);
    running.shutdown().await.expect("clean shutdown");
}

async fn append(store: &PgStore, count: u64) -> u64 {
    let mut head = 0;
    for i in 0..count {
        head = append_tested(store, &format!("order-{}", i % 3), i).await.1;
    }
    head
}

async fn count(store: &PgStore, table: &str) -> i64 {
    store
        .pool()
        .get()
        .await
        .expect("client")
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .expect("count")
        .get(0)
}

/// Creates its table and inserts each event id, naming the table plainly; its reset empties
/// the table, named plainly too.
struct PlainNames {
    table: String,
}

impl PgProjection for PlainNames {
    fn name(&self) -> &str {
        "plain_names"
    }

    fn event_types(&self) -> Vec<String> {
        vec!["Tested".to_owned()]
    }

    async fn handle(&self, tx: &PgTransaction<'_>, event: &RecordedEvent) -> Result<(), BoxError> {
        let table = &self.table;
        tx.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (event_id uuid PRIMARY KEY)"
        ))
        .await?;
        tx.execute(
            &format!("INSERT INTO {table} (event_id) VALUES ($1) ON CONFLICT DO NOTHING"),
            &[&event.event_id],
        )
        .await?;
        Ok(())
    }

    async fn reset(&self, tx: &PgTransaction<'_>) -> Result<(), BoxError> {
        tx.execute(&format!("DELETE FROM {}", self.table), &[])
            .await?;
        Ok(())
    }
}

/// A table named plainly in handlers and reset is the one in the store's schema, created
/// there, whatever `public` holds: in batch transactions, per-event transactions and the
/// rebuild's reset.
async fn plain_names_resolve_to_the_store_schema(batched: bool) {
    let store = fresh_store().await.expect("test database");
    let table = format!("plain_{}", Uuid::new_v4().simple());
    // A table of the same name in `public`, with a row the rebuild must not delete: where
    // plain names resolved without the store's schema on the path.
    store
        .pool()
        .get()
        .await
        .expect("client")
        .batch_execute(&format!(
            "CREATE TABLE public.{table} (event_id uuid PRIMARY KEY);
             INSERT INTO public.{table} VALUES ('00000000-0000-0000-0000-000000000001')"
        ))
        .await
        .expect("public table");
    let head = append(&store, 25).await;
    let projection = Transactional::new(
        &store,
        PlainNames {
            table: table.clone(),
        },
    );
    let projection = if batched {
        projection
    } else {
        projection.per_event_transactions()
    };
    catch_up_and_rebuild(&store, projection, head).await;

    let in_schema = format!("{}.{table}", store.config().schema.quoted());
    assert_eq!(
        count(&store, &in_schema).await,
        25,
        "every event is in the table the handler created in the store's schema"
    );
    assert_eq!(
        count(&store, &format!("public.{table}")).await,
        1,
        "nothing was written to or deleted from `public`"
    );
}

#[tokio::test]
async fn plain_table_names_resolve_to_the_store_schema_in_batch_transactions() {
    plain_names_resolve_to_the_store_schema(true).await;
}

#[tokio::test]
async fn plain_table_names_resolve_to_the_store_schema_in_per_event_transactions() {
    plain_names_resolve_to_the_store_schema(false).await;
}

/// Outside a runner, `Projection::handle` and `Projection::reset` run in the schema too.
#[tokio::test]
async fn plain_table_names_resolve_to_the_store_schema_outside_a_runner() {
    let store = fresh_store().await.expect("test database");
    let table = format!("plain_{}", Uuid::new_v4().simple());
    append(&store, 1).await;
    let event = store
        .read_all(&ReadAll::after(0))
        .await
        .expect("read")
        .remove(0);
    let projection = Transactional::new(
        &store,
        PlainNames {
            table: table.clone(),
        },
    );
    Projection::handle(&projection, &event)
        .await
        .expect("handled");
    let in_schema = format!("{}.{table}", store.config().schema.quoted());
    assert_eq!(count(&store, &in_schema).await, 1);
    Projection::reset(&projection).await.expect("reset");
    assert_eq!(count(&store, &in_schema).await, 0);
}

/// Runs one statement per event, then records which prepared statements of that text the
/// connection holds, and in which transaction.
struct Prepares {
    table: String,
    /// Transaction id → the names of the prepared statements with the insert's text, as
    /// seen after each of its events.
    seen: Mutex<BTreeMap<i64, Vec<Vec<String>>>>,
}

impl Prepares {
    fn insert(&self) -> String {
        format!("INSERT INTO {} (event_id) VALUES ($1)", self.table)
    }
}

struct Shared(Arc<Prepares>);

impl PgProjection for Shared {
    fn name(&self) -> &str {
        "prepares"
    }

    fn event_types(&self) -> Vec<String> {
        vec!["Tested".to_owned()]
    }

    async fn handle(&self, tx: &PgTransaction<'_>, event: &RecordedEvent) -> Result<(), BoxError> {
        let insert = self.0.insert();
        tx.execute(&insert, &[&event.event_id]).await?;
        // Through the plain transaction: the probes themselves are not cached.
        let txid: i64 = tx
            .transaction()
            .query_one("SELECT txid_current()::bigint", &[])
            .await?
            .get(0);
        let names = tx
            .transaction()
            .query(
                "SELECT name FROM pg_prepared_statements WHERE statement = $1 ORDER BY name",
                &[&insert],
            )
            .await?
            .iter()
            .map(|row| row.try_get(0))
            .collect::<Result<Vec<String>, _>>()?;
        self.0
            .seen
            .lock()
            .expect("not poisoned")
            .entry(txid)
            .or_default()
            .push(names);
        Ok(())
    }
}

/// A handler running the same SQL text for every event of a batch has it prepared once per
/// transaction: one prepared statement of that text on the connection while the batch runs,
/// the same for all of its events, a new one in the next transaction.
#[tokio::test]
async fn a_statement_is_prepared_once_per_batch() {
    let store = fresh_store().await.expect("test database");
    let table = format!("{}.prepared", store.config().schema.quoted());
    store
        .pool()
        .get()
        .await
        .expect("client")
        .batch_execute(&format!("CREATE TABLE {table} (event_id uuid PRIMARY KEY)"))
        .await
        .expect("table");
    let head = append(&store, 30).await;
    let prepares = Arc::new(Prepares {
        table: table.clone(),
        seen: Mutex::new(BTreeMap::new()),
    });
    let coordination = PgCoordination::new(&store);
    let running = ProjectionRunner::new(store.clone())
        .coordination(coordination)
        .register(
            Transactional::new(&store, Shared(Arc::clone(&prepares))),
            ProjectionOptions::new()
                .batch_size(10)
                .poll_interval(Duration::from_millis(20)),
        )
        .start();
    tokio::time::timeout(PATIENCE, running.wait_for("prepares", head))
        .await
        .expect("caught up in time")
        .expect("caught up");
    running.shutdown().await.expect("clean shutdown");
    assert_eq!(count(&store, &table).await, 30);

    let seen = prepares.seen.lock().expect("not poisoned").clone();
    let mut statements = BTreeSet::new();
    for (txid, events) in &seen {
        let first = &events[0];
        assert_eq!(
            first.len(),
            1,
            "transaction {txid}: one prepared statement of the insert's text, found {first:?}"
        );
        assert!(
            events.iter().all(|names| names == first),
            "transaction {txid}: every event ran the statement prepared for the first: {events:?}"
        );
        assert!(
            statements.insert(first[0].clone()),
            "transaction {txid} prepared its own statement: {seen:?}"
        );
    }
    assert!(
        seen.values().any(|events| events.len() >= 2),
        "some transaction handled several events: {seen:?}"
    );
    assert_eq!(seen.values().map(Vec::len).sum::<usize>(), 30);
}
