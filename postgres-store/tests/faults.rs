//! Faults from outside the process: connections cut, stalled or refused by the proxy of
//! `factum_postgres::testing::proxy`, backends terminated, races lost. Each scenario states
//! what must hold and checks it exactly.

mod common;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use factum::coordination::{CheckpointStore, CoordinationError};
use factum::projection::{
    HandleContext, ProjectionOptions, ProjectionRunner, ResetContext, RunnerOptions,
    RunningProjections,
};
use factum::store::{ReadAll, StreamRead};
use factum::subscription::{Shutdown, Subscription, SubscriptionOptions};
use factum::{BoxError, EventStore, ExpectedVersion, Projection, RecordedEvent, StoreError};
use factum_postgres::testing::proxy::{ConnectionInfo, Direction, Proxy, Rule, Stall};
use factum_postgres::{
    PgConfig, PgCoordination, PgProjection, PgStore, PgTransaction, Transactional,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::{Notify, watch};
use uuid::Uuid;

use common::{event, events, raw_client, schema, store, stream};

/// How long a scenario waits for a condition before failing.
const PATIENCE: Duration = Duration::from_secs(60);

/// The listener's `application_name`.
const LISTENER: &str = "factum-head-listener";

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Waits until `check` holds, failing after [`PATIENCE`].
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let waited = tokio::time::timeout(PATIENCE, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "timed out waiting for {what}");
}

/// A store on `direct`'s schema, connected through `proxy`.
async fn through(proxy: &Proxy, direct: &PgStore, config: PgConfig) -> PgStore {
    let config = config
        .schema(direct.config().schema.as_str())
        .expect("schema");
    PgStore::connect_with(proxy.url(), config)
        .await
        .expect("connect through the proxy")
}

/// Waits until every connection the proxy cut is closed on the server's side too: the
/// server has run whatever reached it before the cut.
async fn cut_connections_closed(proxy: &Proxy) {
    eventually("the cut connections to close", || async {
        proxy.connections().iter().all(|c| !c.cut || !c.open)
    })
    .await;
}

fn is_closed_connection(error: &StoreError) -> bool {
    let StoreError::Backend(source) = error else {
        return false;
    };
    source
        .downcast_ref::<tokio_postgres::Error>()
        .is_some_and(tokio_postgres::Error::is_closed)
}

// --- The proxy's controls -------------------------------------------------------------------

async fn proxied_client(proxy: &Proxy) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(proxy.url(), tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Counters, a cut after a number of messages, a stall of replies only, refusal.
#[tokio::test]
async fn the_proxy_counts_cuts_stalls_and_refuses() {
    let proxy = Proxy::to_test_database().await.expect("proxy");
    let client = proxied_client(&proxy).await.expect("connect");
    client.simple_query("SELECT 1").await.expect("query");
    let [info] = &proxy.connections()[..] else {
        panic!("one connection: {:?}", proxy.connections());
    };
    // Startup message and one query at least; the server's replies too.
    assert!(info.messages_to_server >= 2, "{info:?}");
    assert!(info.messages_to_client >= 4, "{info:?}");
    assert!(
        info.bytes_to_server > 0 && info.bytes_to_client > 0,
        "{info:?}"
    );

    // Cut after two more client messages: the second query never gets its answer.
    let armed = proxy.arm(
        Rule::after_messages(Direction::ToServer, 2)
            .scope(factum_postgres::testing::proxy::Scope::Existing),
    );
    client
        .simple_query("SELECT 2")
        .await
        .expect("first message");
    let error = client.simple_query("SELECT 3").await.expect_err("cut");
    assert!(error.is_closed(), "{error}");
    assert_eq!(armed.fired(), 1);
    assert_eq!(proxy.stats().cut, 1);

    // Replies held: the statement runs on the server, its answer waits for the release.
    let client = proxied_client(&proxy).await.expect("reconnect");
    let table = format!("proxy_stall_{}", Uuid::new_v4().simple());
    raw_client()
        .await
        .batch_execute(&format!("CREATE TABLE {table} (n int)"))
        .await
        .expect("table");
    proxy.stall(Stall::ToClient);
    let insert = tokio::spawn({
        let sql = format!("INSERT INTO {table} VALUES (1)");
        async move { client.simple_query(&sql).await.map(drop) }
    });
    eventually("the insert to run on the server", || async {
        raw_client()
            .await
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .expect("count")
            .get::<_, i64>(0)
            == 1
    })
    .await;
    assert!(!insert.is_finished(), "no reply passes a stall");
    proxy.release();
    insert.await.expect("task").expect("the reply arrives");

    // Cut after exactly 7 more bytes to the client, in the middle of the reply.
    let (named, connection) = tokio_postgres::connect(
        &format!("{} application_name=bytes", proxy.url()),
        tokio_postgres::NoTls,
    )
    .await
    .expect("connect");
    tokio::spawn(connection);
    let before = proxy
        .connections()
        .into_iter()
        .find(|c| c.application_name.as_deref() == Some("bytes"))
        .expect("named connection");
    let armed = proxy.arm(Rule::after_bytes(Direction::ToClient, 7).application_name("bytes"));
    let error = named.simple_query("SELECT 5").await.expect_err("cut");
    assert!(error.is_closed(), "{error}");
    assert_eq!(armed.fired(), 1);
    let after = proxy
        .connections()
        .into_iter()
        .find(|c| c.id == before.id)
        .expect("same connection");
    assert_eq!(after.bytes_to_client, before.bytes_to_client + 7);
    assert!(after.cut);

    // A malformed startup message (a negative length) ends that connection, nothing else.
    let mut garbage = tokio::net::TcpStream::connect(proxy.addr())
        .await
        .expect("connect");
    garbage
        .write_all(&[0xff, 0xff, 0xff, 0xff, 0, 3, 0, 0])
        .await
        .expect("write");
    let mut reply = Vec::new();
    let _ = garbage.read_to_end(&mut reply).await;
    assert!(reply.is_empty(), "{reply:?}");

    proxy.refuse_new(true);
    assert!(proxied_client(&proxy).await.is_err(), "refused");
    assert_eq!(proxy.stats().refused, 1);
    proxy.refuse_new(false);
    let last = proxied_client(&proxy).await.expect("accepted again");
    eventually("the earlier connections to close", || async {
        proxy.stats().open == 1
    })
    .await;
    assert_eq!(proxy.cut_all(), 1);
    let error = last.simple_query("SELECT 4").await.expect_err("cut");
    assert!(error.is_closed(), "{error}");
    assert_eq!(proxy.stats().cut, 3);
    raw_client()
        .await
        .batch_execute(&format!("DROP TABLE {table}"))
        .await
        .expect("drop");
}

/// A proxy forwards to a TCP server as well: here, another proxy.
#[tokio::test]
async fn a_proxy_forwards_to_a_tcp_upstream() {
    let inner = Proxy::to_test_database().await.expect("proxy");
    let outer = Proxy::start(inner.url()).await.expect("proxy of the proxy");
    let client = proxied_client(&outer).await.expect("connect");
    let rows = client.simple_query("SELECT 42").await.expect("query");
    assert!(
        rows.iter().any(|m| matches!(
            m,
            tokio_postgres::SimpleQueryMessage::Row(row) if row.get(0) == Some("42")
        )),
        "{rows:?}"
    );
    assert_eq!(inner.stats().accepted, 1);
    assert_eq!(outer.stats().accepted, 1);
    assert_eq!(inner.cut_all(), 1);
    let error = client
        .simple_query("SELECT 1")
        .await
        .expect_err("cut inside");
    assert!(error.is_closed(), "{error}");
}

// --- Unknown outcome ------------------------------------------------------------------------

/// The connection is cut after the client sent the append and its commit (`Sync`, which
/// ends the implicit transaction) and before any reply reached it. The call fails with a
/// typed error; the server committed. A retry with the same event ids stores nothing more
/// and returns the original result, for an exact expected version and for `Any`.
#[tokio::test]
async fn a_commit_whose_reply_is_lost_is_resolved_by_retrying_with_the_same_ids() {
    let direct = store().await;
    let proxy = Proxy::to_test_database().await.expect("proxy");
    let proxied = through(&proxy, &direct, PgConfig::default()).await;

    for (name, expected, n) in [
        ("lost-exact", ExpectedVersion::Exact(2), 1usize),
        ("lost-any", ExpectedVersion::Any, 3),
    ] {
        let s = stream(name);
        direct
            .append(&s, ExpectedVersion::NoStream, &events(2))
            .await
            .expect("first events");
        let batch = events(n as u64);
        // ANCHOR: lost_reply
        let needle = s.as_str().as_bytes().to_vec();
        // The append's Bind carries the stream id; its exchange ends with the Sync.
        let armed = proxy.arm(Rule::on_client_exchange(move |m| {
            m.tag() == Some(b'B') && m.contains(&needle)
        }));
        let error = proxied
            .append(&s, expected, &batch)
            .await
            .expect_err("no reply reaches the client");
        assert!(is_closed_connection(&error), "{error:?}");
        assert_eq!(armed.fired(), 1);
        // ANCHOR_END: lost_reply
        cut_connections_closed(&proxy).await;

        let stored = direct
            .read_stream(&s, &StreamRead::all())
            .await
            .expect("read");
        assert_eq!(stored.len(), 2 + n, "the server committed the append");
        let appended = &stored[2..];
        let ids: Vec<Uuid> = appended.iter().map(|e| e.event_id).collect();
        let batch_ids: Vec<Uuid> = batch.iter().map(|e| e.event_id).collect();
        assert_eq!(ids, batch_ids);

        let retried = proxied
            .append(&s, expected, &batch)
            .await
            .expect("the retry is recognised");
        assert!(retried.replayed);
        assert_eq!(retried.version, 2 + n as u64);
        assert_eq!(retried.first_version, 3);
        assert_eq!(retried.first_position, appended[0].position);
        assert_eq!(retried.last_position, appended[n - 1].position);
        let after = direct
            .read_stream(&s, &StreamRead::all())
            .await
            .expect("read");
        assert_eq!(after.len(), 2 + n, "exactly one copy");
        assert_eq!(
            direct.stream_version(&s).await.expect("version"),
            2 + n as u64
        );
    }
}

// --- A backend terminated in the middle of an append ----------------------------------------

/// A 100-event append is stopped in the middle, after it inserted 49 rows: its 50th event
/// id is held by another transaction, and its backend is terminated while it waits. No row
/// of it is stored, the stream keeps its version, and a follower of the global order reads
/// the next append.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_append_of_100_events_stores_nothing_and_holds_no_reader_back() {
    let store = store().await;
    let s = stream("big");
    let before = store
        .append(&s, ExpectedVersion::NoStream, &events(3))
        .await
        .expect("first events");

    // A follower of the global order, from the start.
    let seen = Arc::new(Mutex::new(Vec::<RecordedEvent>::new()));
    let shutdown = Shutdown::new();
    let follower = tokio::spawn(follow(store.clone(), Arc::clone(&seen), shutdown.clone()));

    // Another transaction holds the id of the append's 50th event.
    let batch = events(100);
    let held_id = batch[49].event_id;
    let side = raw_client().await;
    side.batch_execute("BEGIN").await.expect("begin");
    side.execute(
        &format!(
            "INSERT INTO {}.events (position, event_id, stream_id, stream_version, event_type, \
             schema_version, payload, metadata) VALUES (pg_current_xact_id()::text::bigint * \
             65536, $1, 'order-holder', 1, 'Happened', 1, '{{}}', '{{}}')",
            schema(&store)
        ),
        &[&held_id],
    )
    .await
    .expect("hold the id");
    let side_pid: i32 = side
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0);

    let append = tokio::spawn({
        let (store, s) = (store.clone(), s.clone());
        async move { store.append(&s, ExpectedVersion::Exact(3), &batch).await }
    });
    let observer = raw_client().await;
    let blocked = Arc::new(Mutex::new(None));
    eventually("the append to wait on the held id", || async {
        let row = observer
            .query_opt(
                "SELECT pid, backend_xid IS NOT NULL FROM pg_stat_activity \
                 WHERE $1 = ANY (pg_blocking_pids(pid))",
                &[&side_pid],
            )
            .await
            .expect("activity");
        let found = row.map(|r| (r.get::<_, i32>(0), r.get::<_, bool>(1)));
        *lock(&blocked) = found;
        found.is_some()
    })
    .await;
    let (pid, wrote) = lock(&blocked).expect("blocked");
    assert!(wrote, "the append had written rows before it waited");
    let terminated: bool = observer
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .expect("terminate")
        .get(0);
    assert!(terminated);
    let error = append
        .await
        .expect("task")
        .expect_err("the backend was terminated");
    assert!(matches!(error, StoreError::Backend(_)), "{error:?}");
    side.batch_execute("ROLLBACK").await.expect("rollback");

    assert_eq!(store.stream_version(&s).await.expect("version"), 3);
    assert_eq!(
        store
            .read_stream(&s, &StreamRead::all())
            .await
            .expect("read")
            .len(),
        3
    );
    let stored: i64 = observer
        .query_one(
            &format!(
                "SELECT count(*) FROM {}.events WHERE stream_id = $1",
                schema(&store)
            ),
            &[&s.as_str()],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(stored, 3, "no row of the terminated append");

    // Readers are not held back: the next append reaches the follower and the head.
    let next = store
        .append(&s, ExpectedVersion::Exact(3), &events(1))
        .await
        .expect("next append");
    assert_eq!(next.version, 4);
    eventually("the follower to read the next append", || async {
        lock(&seen).iter().any(|e| e.position == next.last_position)
    })
    .await;
    assert!(store.head_position().await.expect("head") >= next.last_position);
    shutdown.trigger();
    follower.await.expect("follower");
    let seen = lock(&seen);
    let positions: Vec<u64> = seen.iter().map(|e| e.position).collect();
    assert_eq!(positions.len(), 4, "{positions:?}");
    assert_eq!(
        positions[..3],
        [
            before.first_position,
            before.first_position + 1,
            before.last_position
        ]
    );
    assert!(positions.is_sorted());
}

/// Follows the global order into `seen` until `shutdown`, reading again after failures.
async fn follow(store: PgStore, seen: Arc<Mutex<Vec<RecordedEvent>>>, shutdown: Shutdown) {
    let options = SubscriptionOptions::new()
        .poll_interval(Duration::from_millis(100))
        .batch_size(1000);
    let mut subscription = Subscription::new(store, 0, options);
    loop {
        match subscription.next(&shutdown).await {
            Ok(Some(batch)) => lock(&seen).extend(batch.events),
            Ok(None) => return,
            Err(error) => {
                tracing::debug!(%error, "follower read failed; reading again");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

// --- The listener cut -----------------------------------------------------------------------

fn listeners(proxy: &Proxy) -> Vec<ConnectionInfo> {
    proxy
        .connections()
        .into_iter()
        .filter(|c| c.application_name.as_deref() == Some(LISTENER))
        .collect()
}

/// Waits until a listener session of `schema` other than `not` listens (it runs `LISTEN`,
/// then reads the head with a statement naming the schema); returns its process id.
async fn listening(observer: &tokio_postgres::Client, schema: &str, not: Option<i32>) -> i32 {
    let found = Arc::new(Mutex::new(None));
    eventually("the listener to listen", || async {
        let row = observer
            .query_opt(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1 \
                 AND query LIKE '%' || $2 || '%' AND query NOT LIKE 'LISTEN%' \
                 AND pid IS DISTINCT FROM $3",
                &[&LISTENER, &schema, &not],
            )
            .await
            .expect("activity");
        *lock(&found) = row.map(|r| r.get::<_, i32>(0));
        lock(&found).is_some()
    })
    .await;
    lock(&found).expect("found")
}

/// Appends single events to a stream of its own until `head` reaches one of them: only a
/// notification can move it (the listener's own poll is an hour). One may not be enough: the
/// listener reads the head once per notification, and another test's open transaction can
/// hold the head back at that moment.
async fn append_until_notified(
    writer: &PgStore,
    head: &mut watch::Receiver<u64>,
    appended: &mut Vec<u64>,
    what: &str,
) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let r = writer
            .append(&stream("notified"), ExpectedVersion::Any, &events(1))
            .await
            .expect("append");
        appended.push(r.last_position);
        let reached = tokio::time::timeout(
            Duration::from_secs(1),
            head.wait_for(|&h| h >= r.last_position),
        )
        .await;
        if reached.is_ok_and(|r| r.is_ok()) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
    }
}

/// The listener's connection is cut and cannot come back while 100 events are appended by
/// another process: each reaches a live subscriber by polling. Then the listener reconnects,
/// and notifications move the head again (the listener's own poll is an hour).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_listener_loses_no_event_and_reconnects() {
    let writer = store().await;
    let proxy = Proxy::to_test_database().await.expect("proxy");
    let proxied = through(
        &proxy,
        &writer,
        PgConfig::default().poll_interval(Duration::from_secs(3600)),
    )
    .await;
    let seen = Arc::new(Mutex::new(Vec::<RecordedEvent>::new()));
    let shutdown = Shutdown::new();
    let subscriber = tokio::spawn(follow(proxied.clone(), Arc::clone(&seen), shutdown.clone()));
    let mut head = proxied.watch_head();
    let observer = raw_client().await;
    let schema_name = writer.config().schema.as_str().to_owned();
    let first_session = listening(&observer, &schema_name, None).await;

    let mut appended = Vec::new();
    append_until_notified(&writer, &mut head, &mut appended, "the first notification").await;
    eventually("the first events to arrive", || async {
        lock(&seen).len() == appended.len()
    })
    .await;
    let [listener] = &listeners(&proxy)[..] else {
        panic!("one listener connection: {:?}", proxy.connections());
    };
    assert!(listener.open);

    proxy.refuse_new(true);
    assert_eq!(
        proxy.cut_where(|c| c.application_name.as_deref() == Some(LISTENER)),
        1
    );
    let gap_from = appended.len();
    for i in 0..100 {
        let r = writer
            .append(
                &stream(&format!("gap-{}", i % 7)),
                ExpectedVersion::Any,
                &[event(i)],
            )
            .await
            .expect("append");
        appended.push(r.last_position);
    }
    eventually("every event to reach the subscriber", || async {
        lock(&seen).len() >= appended.len()
    })
    .await;
    let positions: Vec<u64> = lock(&seen).iter().map(|e| e.position).collect();
    assert_eq!(positions, appended, "each event once, in order");
    assert!(
        *head.borrow() < appended[gap_from],
        "no notification could arrive: polling delivered them"
    );
    eventually("the listener to try to reconnect", || async {
        proxy.stats().refused >= 1
    })
    .await;

    proxy.refuse_new(false);
    listening(&observer, &schema_name, Some(first_session)).await;
    let again = listeners(&proxy);
    assert!(
        again.len() >= 2 && again.last().is_some_and(|c| c.open),
        "{again:?}"
    );
    append_until_notified(
        &writer,
        &mut head,
        &mut appended,
        "a notification after the reconnect",
    )
    .await;
    eventually("the later events to reach the subscriber", || async {
        lock(&seen).len() == appended.len()
    })
    .await;
    let positions: Vec<u64> = lock(&seen).iter().map(|e| e.position).collect();
    assert_eq!(positions, appended, "each event once, in order");
    shutdown.trigger();
    subscriber.await.expect("subscriber");
}

// --- A transactional projection's connections cut mid-batch --------------------------------

/// What the read model's handler does at one delivery.
enum Hook {
    None,
    /// Records the saved checkpoint, then cuts every connection through the proxy.
    CutAt {
        delivery: u64,
        proxy: Arc<Proxy>,
        checkpoints: PgCoordination,
        checkpoint_at_cut: Mutex<Option<u64>>,
    },
    /// Tells the test, then waits for its go before writing anything.
    HoldAt {
        delivery: u64,
        reached: Notify,
        go: Notify,
    },
}

/// A read model with one row per event and a count of its applications, which a double
/// application would show.
struct Applied {
    name: String,
    table: String,
    deliveries: Mutex<HashMap<Uuid, u32>>,
    total: AtomicU64,
    hook: Hook,
}

impl Applied {
    async fn new(store: &PgStore, name: &str, hook: Hook) -> Arc<Self> {
        let table = format!("{}.{name}", schema(store));
        raw_client()
            .await
            .batch_execute(&format!(
                "CREATE TABLE {table} (event_id uuid PRIMARY KEY, applies int NOT NULL)"
            ))
            .await
            .expect("read model table");
        Arc::new(Self {
            name: name.to_owned(),
            table,
            deliveries: Mutex::default(),
            total: AtomicU64::new(0),
            hook,
        })
    }

    /// The read model: applications per event id.
    async fn applied(&self) -> HashMap<Uuid, i32> {
        raw_client()
            .await
            .query(
                &format!("SELECT event_id, applies FROM {}", self.table),
                &[],
            )
            .await
            .expect("read model")
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect()
    }
}

struct AppliedProjection(Arc<Applied>);

impl PgProjection for AppliedProjection {
    fn name(&self) -> &str {
        &self.0.name
    }

    async fn handle(&self, tx: &PgTransaction<'_>, event: &RecordedEvent) -> Result<(), BoxError> {
        let applied = &self.0;
        let delivery = applied.total.fetch_add(1, Ordering::SeqCst) + 1;
        *lock(&applied.deliveries).entry(event.event_id).or_default() += 1;
        match &applied.hook {
            Hook::CutAt {
                delivery: at,
                proxy,
                checkpoints,
                checkpoint_at_cut,
            } if *at == delivery => {
                let saved = checkpoints.load(&applied.name, 0).await?;
                *lock(checkpoint_at_cut) = Some(saved);
                proxy.cut_all();
            }
            Hook::HoldAt {
                delivery: at,
                reached,
                go,
            } if *at == delivery => {
                reached.notify_one();
                go.notified().await;
            }
            _ => {}
        }
        tx.execute(
            &format!(
                "INSERT INTO {} (event_id, applies) VALUES ($1, 1) \
                 ON CONFLICT (event_id) DO UPDATE SET applies = {0}.applies + 1",
                applied.table
            ),
            &[&event.event_id],
        )
        .await?;
        Ok(())
    }
}

/// Appends `n` events over a few streams; returns them in position order.
async fn append_spread(store: &PgStore, prefix: &str, n: u64) -> Vec<RecordedEvent> {
    for i in 0..n {
        store
            .append(
                &stream(&format!("{prefix}-{}", i % 4)),
                ExpectedVersion::Any,
                &[event(i)],
            )
            .await
            .expect("append");
    }
    let all = store
        .read_all(&ReadAll::after(0).limit(10_000))
        .await
        .expect("read all");
    all.into_iter()
        .filter(|e| {
            e.stream_id
                .as_str()
                .starts_with(&format!("order-{prefix}-"))
        })
        .collect()
}

fn runner_options(worker: &str) -> RunnerOptions {
    RunnerOptions::new()
        .worker_id(worker)
        .lease_ttl(Duration::from_secs(2))
        .lease_retry(Duration::from_millis(100))
}

fn projection_options() -> ProjectionOptions {
    ProjectionOptions::new()
        .batch_size(10)
        .poll_interval(Duration::from_millis(50))
}

async fn wait_for<C: factum::coordination::Coordination>(
    running: &RunningProjections<PgStore, C>,
    name: &str,
    position: u64,
) {
    tokio::time::timeout(PATIENCE, running.wait_for(name, position))
        .await
        .expect("caught up in time")
        .expect("running");
}

/// In the middle of its second batch, every connection of a transactional projection's
/// runner is cut (its reads, its transaction with the checkpoint, its leases, the
/// listener). The events of the batches acknowledged before are not delivered again; those
/// of the batch in flight are; the read model ends with each event applied exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_connections_mid_batch_redeliver_only_unacknowledged_events() {
    let direct = store().await;
    let proxy = Arc::new(Proxy::to_test_database().await.expect("proxy"));
    let proxied = through(&proxy, &direct, PgConfig::default()).await;
    let appended = append_spread(&direct, "cut", 40).await;
    let head = appended.last().expect("events").position;
    let applied = Applied::new(
        &direct,
        "applied_cut",
        Hook::CutAt {
            delivery: 15,
            proxy: Arc::clone(&proxy),
            checkpoints: PgCoordination::new(&direct),
            checkpoint_at_cut: Mutex::new(None),
        },
    )
    .await;
    let running = ProjectionRunner::new(proxied.clone())
        .coordination(PgCoordination::new(&proxied))
        .options(runner_options("a"))
        .register(
            Transactional::new(&proxied, AppliedProjection(Arc::clone(&applied))),
            projection_options(),
        )
        .start();
    wait_for(&running, "applied_cut", head).await;
    running.shutdown().await.expect("shutdown");

    let Hook::CutAt {
        checkpoint_at_cut, ..
    } = &applied.hook
    else {
        unreachable!()
    };
    let acknowledged = lock(checkpoint_at_cut).expect("the cut happened");
    assert!(proxy.stats().cut >= 1);
    assert!(
        acknowledged >= appended[9].position && acknowledged < appended[14].position,
        "the first batch was acknowledged, the one in flight was not ({acknowledged})"
    );
    let deliveries = lock(&applied.deliveries).clone();
    for e in &appended {
        let delivered = deliveries.get(&e.event_id).copied().unwrap_or(0);
        if e.position <= acknowledged {
            assert_eq!(
                delivered, 1,
                "acknowledged event at {} delivered again",
                e.position
            );
        } else if e.position <= appended[14].position {
            assert!(
                delivered >= 2,
                "the event at {} in flight was not redelivered",
                e.position
            );
        } else {
            assert!(delivered >= 1);
        }
    }
    let model = applied.applied().await;
    assert_eq!(model.len(), appended.len());
    assert!(model.values().all(|&n| n == 1), "{model:?}");
    assert_eq!(
        PgCoordination::new(&direct)
            .load("applied_cut", 0)
            .await
            .expect("checkpoint"),
        head
    );
}

// --- A partitioned worker past its lease ----------------------------------------------------

/// Records the lost leases its projection reports.
struct FenceWatch<P> {
    inner: P,
    fenced: Arc<AtomicU64>,
}

impl<P> FenceWatch<P> {
    fn note(&self, error: &BoxError) {
        if error
            .downcast_ref::<CoordinationError>()
            .is_some_and(CoordinationError::is_fenced)
        {
            self.fenced.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl<P: Projection> Projection for FenceWatch<P> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn handle(&self, event: &RecordedEvent) -> Result<(), BoxError> {
        self.inner.handle(event).await
    }

    async fn handle_in(
        &self,
        event: &RecordedEvent,
        context: &HandleContext,
    ) -> Result<(), BoxError> {
        let result = self.inner.handle_in(event, context).await;
        if let Err(error) = &result {
            self.note(error);
        }
        result
    }

    async fn handle_batch_in(
        &self,
        events: &[&RecordedEvent],
        context: &HandleContext,
    ) -> Result<bool, BoxError> {
        let result = self.inner.handle_batch_in(events, context).await;
        if let Err(error) = &result {
            self.note(error);
        }
        result
    }

    async fn reset_in(&self, context: &ResetContext) -> Result<bool, BoxError> {
        self.inner.reset_in(context).await
    }
}

/// Worker `a` holds its second batch when the proxy partitions it from the database for
/// longer than its lease; worker `b` takes the lease over and catches up. When `a` comes
/// back, its transaction's checkpoint save is refused by the fence (its writes roll back),
/// and `b`'s checkpoint is never moved back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_worker_past_its_lease_is_fenced_off() {
    let direct = store().await;
    let proxy = Proxy::to_test_database().await.expect("proxy");
    let proxied = through(&proxy, &direct, PgConfig::default()).await;
    let appended = append_spread(&direct, "fence", 30).await;
    let head = appended.last().expect("events").position;
    let name = "applied_fence";
    let stale = Applied::new(
        &direct,
        name,
        Hook::HoldAt {
            delivery: 11,
            reached: Notify::new(),
            go: Notify::new(),
        },
    )
    .await;
    let fresh = Arc::new(Applied {
        name: name.to_owned(),
        table: stale.table.clone(),
        deliveries: Mutex::default(),
        total: AtomicU64::new(0),
        hook: Hook::None,
    });
    let fenced = Arc::new(AtomicU64::new(0));
    let a = ProjectionRunner::new(proxied.clone())
        .coordination(PgCoordination::new(&proxied))
        .options(runner_options("a"))
        .register(
            FenceWatch {
                inner: Transactional::new(&proxied, AppliedProjection(Arc::clone(&stale))),
                fenced: Arc::clone(&fenced),
            },
            projection_options(),
        )
        .start();
    let Hook::HoldAt { reached, go, .. } = &stale.hook else {
        unreachable!()
    };
    tokio::time::timeout(PATIENCE, reached.notified())
        .await
        .expect("a holds its second batch");
    let checkpoints = PgCoordination::new(&direct);
    let held_from = checkpoints.load(name, 0).await.expect("checkpoint");
    assert_eq!(
        held_from, appended[9].position,
        "a acknowledged its first batch"
    );

    // ANCHOR: partition
    proxy.stall(Stall::Both);
    let b = ProjectionRunner::new(direct.clone())
        .coordination(checkpoints.clone())
        .options(runner_options("b"))
        .register(
            Transactional::new(&direct, AppliedProjection(Arc::clone(&fresh))),
            projection_options(),
        )
        .start();
    wait_for(&b, name, head).await;
    assert_eq!(checkpoints.load(name, 0).await.expect("checkpoint"), head);

    // `a` comes back and goes on with the batch it held.
    go.notify_one();
    proxy.release();
    // ANCHOR_END: partition
    eventually("a's checkpoint save to be refused", || async {
        fenced.load(Ordering::SeqCst) >= 1
    })
    .await;
    assert_eq!(
        checkpoints.load(name, 0).await.expect("checkpoint"),
        head,
        "never moved back"
    );
    let next = direct
        .append(&stream("fence-0"), ExpectedVersion::Any, &events(1))
        .await
        .expect("append");
    wait_for(&b, name, next.last_position).await;
    assert_eq!(
        checkpoints.load(name, 0).await.expect("checkpoint"),
        next.last_position
    );
    let model = stale.applied().await;
    assert_eq!(model.len(), appended.len() + 1);
    assert!(
        model.values().all(|&n| n == 1),
        "no event applied twice: {model:?}"
    );
    a.shutdown().await.expect("a shuts down");
    b.shutdown().await.expect("b shuts down");
    assert_eq!(
        checkpoints.load(name, 0).await.expect("checkpoint"),
        next.last_position
    );
}

// --- Lost races of `Any` appends ------------------------------------------------------------

/// Append retries the store logged, per stream.
fn retries() -> &'static Mutex<HashMap<String, u64>> {
    static RETRIES: OnceLock<Arc<Mutex<HashMap<String, u64>>>> = OnceLock::new();
    RETRIES.get_or_init(|| {
        use tracing_subscriber::layer::SubscriberExt as _;
        let counts = Arc::new(Mutex::new(HashMap::new()));
        let subscriber = tracing_subscriber::registry().with(RetryCounter(Arc::clone(&counts)));
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
        counts
    })
}

struct RetryCounter(Arc<Mutex<HashMap<String, u64>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for RetryCounter {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().fields().field("append_retry").is_none() {
            return;
        }
        let mut stream = StreamField(None);
        event.record(&mut stream);
        if let Some(stream) = stream.0 {
            *lock(&self.0).entry(stream).or_default() += 1;
        }
    }
}

struct StreamField(Option<String>);

impl tracing::field::Visit for StreamField {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "stream" {
            self.0 = Some(format!("{value:?}"));
        }
    }
}

/// Eight `Any` appends race for the same next version, which an open transaction already
/// took; when it commits, each of them loses (a unique violation) and retries. All succeed,
/// the versions are gapless, and each retry is logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_any_appends_all_succeed_through_the_retry_path() {
    let retries = retries();
    let store = factum_postgres::testing::fresh_store_with(PgConfig::default().pool_size(16))
        .await
        .expect("store");
    let s = stream("any-race");
    store
        .append(&s, ExpectedVersion::NoStream, &events(2))
        .await
        .expect("first events");
    // An open transaction holds version 3.
    let side = raw_client().await;
    side.batch_execute("BEGIN").await.expect("begin");
    side.execute(
        &format!(
            "INSERT INTO {}.events (position, event_id, stream_id, stream_version, event_type, \
             schema_version, payload, metadata) VALUES (pg_current_xact_id()::text::bigint * \
             65536, $1, $2, 3, 'Happened', 1, '{{}}', '{{}}')",
            schema(&store)
        ),
        &[&Uuid::now_v7(), &s.as_str()],
    )
    .await
    .expect("take version 3");
    let side_pid: i32 = side
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0);
    const WRITERS: usize = 8;
    let writers: Vec<_> = (0..WRITERS as u64)
        .map(|w| {
            let (store, s) = (store.clone(), s.clone());
            tokio::spawn(async move { store.append(&s, ExpectedVersion::Any, &[event(w)]).await })
        })
        .collect();
    let observer = raw_client().await;
    eventually("every writer to wait for version 3", || async {
        let waiting: i64 = observer
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY (pg_blocking_pids(pid))",
                &[&side_pid],
            )
            .await
            .expect("activity")
            .get(0);
        waiting == WRITERS as i64
    })
    .await;
    side.batch_execute("COMMIT").await.expect("commit");
    let mut versions = Vec::new();
    for writer in writers {
        let result = writer
            .await
            .expect("task")
            .expect("every Any append succeeds");
        assert_eq!(result.first_version, result.version);
        assert!(!result.replayed);
        versions.push(result.version);
    }
    versions.sort_unstable();
    assert_eq!(versions, (4..4 + WRITERS as u64).collect::<Vec<_>>());
    let read = store
        .read_stream(&s, &StreamRead::all())
        .await
        .expect("read");
    let stored: Vec<u64> = read.iter().map(|e| e.stream_version).collect();
    assert_eq!(stored, (1..=3 + WRITERS as u64).collect::<Vec<_>>());
    let logged = lock(retries).get(s.as_str()).copied().unwrap_or(0);
    assert!(
        logged >= WRITERS as u64,
        "each writer lost the race for version 3 and retried: {logged} retries logged"
    );
}
