//! Reads from a streaming hot standby: a standby handle serves loads, stream reads, the
//! global order and subscriptions from the standby, refuses writes, keeps the ordering bound
//! of the primary and shows a stale standby as lag.

mod common;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use common::{event, events, stream};
use factum::coordination::CheckpointStore;
use factum::projection::{ProjectionOptions, ProjectionRunner, RunnerOptions};
use factum::store::{ReadAll, StreamRead};
use factum::subscription::{Shutdown, Subscription, SubscriptionOptions};
use factum::testing::{Counter, Increment};
use factum::{
    BoxError, Error, EventStore, ExpectedVersion, Metadata, RecordedEvent, Repository, StoreError,
};
use factum_postgres::testing::replication::ReplicatedPair;
use factum_postgres::{
    PgConfig, PgConnectOptions, PgCoordination, PgError, PgProjection, PgStore, PgTransaction,
    Transactional,
};
use uuid::Uuid;

/// The tests of this file share one pair and pause its replay or hold transactions open on
/// its primary: they run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A migrated store in a new schema on the pair's primary, and its handle on the standby,
/// once the standby holds the schema.
async fn stores(pair: &ReplicatedPair) -> (PgStore, PgStore) {
    let schema = format!("repl_{}", Uuid::new_v4().simple());
    let config = PgConfig::default()
        .schema(&schema)
        .expect("schema")
        .pool_size(4);
    // ANCHOR: standby
    let primary = PgStore::connect_with(&pair.primary_url(), config)
        .await
        .expect("primary");
    primary.migrate().await.expect("migrate");
    pair.catch_up().await.expect("standby catches up");
    // Reads from the standby, writes nothing; `primary` keeps every write.
    let standby = primary.standby(&pair.standby_url()).await.expect("standby");
    // ANCHOR_END: standby
    (primary, standby)
}

async fn raw(url: &str) -> tokio_postgres::Client {
    PgConnectOptions::parse(url)
        .expect("url")
        .connect()
        .await
        .expect("connect")
}

fn is_standby_refusal(error: &StoreError) -> bool {
    matches!(
        error,
        StoreError::Backend(source)
            if matches!(source.downcast_ref::<PgError>(), Some(PgError::StandbyReadOnly { .. }))
    )
}

fn positions(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.position).collect()
}

#[tokio::test]
async fn a_standby_handle_reads_what_the_primary_committed_and_refuses_writes() {
    let _serial = SERIAL.lock().await;
    let pair = ReplicatedPair::shared().await.expect("replicated pair");
    let (primary, standby) = stores(pair).await;
    assert!(standby.is_standby() && !primary.is_standby());
    let order = stream("standby-1");
    let appended = primary
        .append(&order, ExpectedVersion::NoStream, &events(3))
        .await
        .expect("append");
    pair.catch_up().await.expect("replay");

    let on_primary = primary
        .read_stream(&order, &StreamRead::all())
        .await
        .expect("primary read");
    let on_standby = standby
        .read_stream(&order, &StreamRead::all())
        .await
        .expect("standby read");
    assert_eq!(on_standby, on_primary);
    assert_eq!(standby.stream_version(&order).await.expect("version"), 3);
    let all = standby
        .read_all(&ReadAll::after(0))
        .await
        .expect("read all");
    assert_eq!(
        positions(&all),
        positions(&on_primary),
        "the standby's global order"
    );
    assert_eq!(
        standby.head_position().await.expect("head"),
        appended.last_position
    );
    let first = standby
        .event_by_id(on_primary[0].event_id)
        .await
        .expect("by id");
    assert_eq!(first.as_ref(), Some(&on_primary[0]));
    let loaded = standby
        .load_aggregate(&order, 1, None)
        .await
        .expect("aggregate load");
    assert_eq!(loaded.events.len(), 3);

    // Writes are refused before anything is sent, with the cause named.
    let refused = standby
        .append(&order, ExpectedVersion::Exact(3), &events(1))
        .await
        .expect_err("an append on the standby handle");
    assert!(is_standby_refusal(&refused), "{refused:?}");
    assert!(refused.to_string().contains("standby"), "{refused}");
    let record = factum::store::CommandRecord {
        command_id: Uuid::new_v4(),
        stream_id: order.clone(),
        version: 3,
        outcome: factum::store::CommandOutcome::NoEvents,
    };
    let refused = standby
        .record_command(&record)
        .await
        .expect_err("a command record on the standby handle");
    assert!(is_standby_refusal(&refused), "{refused:?}");
    assert_eq!(
        primary.stream_version(&order).await.expect("version"),
        3,
        "nothing was written"
    );
}

#[tokio::test]
async fn repositories_load_from_the_standby_and_decide_only_on_the_primary() {
    let _serial = SERIAL.lock().await;
    let pair = ReplicatedPair::shared().await.expect("replicated pair");
    let (primary, standby) = stores(pair).await;
    // ANCHOR: repositories
    // Commands decide on the primary; queries may read a little behind.
    let commands = Repository::<Counter, _>::new(primary.clone());
    let queries = Repository::<Counter, _>::new(standby.clone());
    // ANCHOR_END: repositories
    for by in [2, 3] {
        commands
            .execute_on("c-1", Increment { by }, Metadata::new())
            .await
            .expect("command on the primary");
    }
    pair.catch_up().await.expect("replay");
    let loaded = queries.load("c-1").await.expect("load from the standby");
    assert_eq!((loaded.state.value, loaded.version), (5, 2));

    // A command through the standby handle fails on its append: nothing is decided there.
    let refused = queries
        .execute_on("c-1", Increment { by: 1 }, Metadata::new())
        .await
        .expect_err("a command on the standby handle");
    match &refused {
        Error::Store(store) => assert!(is_standby_refusal(store), "{refused:?}"),
        other => panic!("expected the standby's refusal, got {other:?}"),
    }
    assert_eq!(commands.load("c-1").await.expect("load").version, 2);
}

/// Opens a transaction on the primary that calls the store's append function and stays
/// open, holding its position until the caller commits.
async fn open_append(schema: &str, client: &tokio_postgres::Client, stream: &str) -> (u64, Uuid) {
    let id = Uuid::now_v7();
    client.batch_execute("BEGIN").await.expect("begin");
    let row = client
        .query_one(
            &format!(
                "SELECT status, version, first_position \
                 FROM {schema}.append($1, -1, $2, $3, $4, $5, $6)"
            ),
            &[
                &stream,
                &vec![id],
                &vec!["Slow"],
                &vec![1i32],
                &vec![r#"{"slow":true}"#],
                &vec!["{}"],
            ],
        )
        .await
        .expect("open append");
    assert_eq!(row.get::<_, i32>(0), 0);
    let position: i64 = row.get(2);
    (u64::try_from(position).expect("position"), id)
}

/// Follows the global order of `store` into `seen` until `shutdown`.
async fn follow(store: PgStore, seen: Arc<Mutex<Vec<RecordedEvent>>>, shutdown: Shutdown) {
    let options = SubscriptionOptions::new()
        .poll_interval(Duration::from_millis(50))
        .batch_size(100);
    let mut subscription = Subscription::new(store, 0, options);
    while let Some(batch) = subscription.next(&shutdown).await.expect("follow") {
        lock(&seen).extend(batch.events);
    }
}

/// Waits, for at most a minute, until `seen` holds `count` events.
async fn wait_for_count(seen: &Mutex<Vec<RecordedEvent>>, count: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while lock(seen).len() < count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the follower saw {:?}, not {count} events",
            positions(&lock(seen))
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_follower_on_the_standby_waits_for_a_transaction_open_on_the_primary() {
    let _serial = SERIAL.lock().await;
    let pair = ReplicatedPair::shared().await.expect("replicated pair");
    let (primary, standby) = stores(pair).await;
    let schema = primary.config().schema.quoted();
    let before = primary
        .append(&stream("early"), ExpectedVersion::Any, &events(2))
        .await
        .expect("append");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let shutdown = Shutdown::new();
    let follower = tokio::spawn(follow(standby.clone(), Arc::clone(&seen), shutdown.clone()));
    wait_for_count(&seen, 2).await;

    let slow = raw(&pair.primary_url()).await;
    let slow_pid: i32 = slow
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0);
    let (p, slow_id) = open_append(&schema, &slow, "order-slow").await;
    let fast = primary
        .append(&stream("fast"), ExpectedVersion::Any, &[event(9)])
        .await
        .expect("append");
    assert!(fast.first_position > p);
    // The standby has replayed the later commit, and the earlier insert still open.
    pair.catch_up().await.expect("replay");
    assert_eq!(
        standby
            .read_stream(&stream("fast"), &StreamRead::all())
            .await
            .expect("by stream")
            .len(),
        1,
        "the later commit is on the standby"
    );
    for _ in 0..3 {
        let tail = standby
            .read_all(&ReadAll::after(before.last_position))
            .await
            .expect("read all");
        assert!(
            tail.is_empty(),
            "read past an open position: {:?}",
            positions(&tail)
        );
        assert_eq!(
            standby.head_position().await.expect("head"),
            before.last_position
        );
    }
    // The held-back head names the primary's session that holds it.
    let status = standby.head_status().await.expect("head status");
    assert_eq!(status.readable, before.last_position);
    assert!(status.committed >= fast.last_position, "{status:?}");
    let blocker = status.held_back_by.expect("a blocker");
    assert_eq!(blocker.pid, Some(slow_pid.unsigned_abs()));
    assert_eq!(
        positions(&lock(&seen)),
        [before.first_position, before.last_position],
        "the follower did not pass the open position"
    );

    slow.batch_execute("COMMIT").await.expect("commit");
    wait_for_count(&seen, 4).await;
    shutdown.trigger();
    follower.await.expect("follower");
    let seen = lock(&seen);
    assert_eq!(
        positions(&seen),
        [
            before.first_position,
            before.last_position,
            p,
            fast.first_position
        ]
    );
    assert_eq!(seen[2].event_id, slow_id);
}

#[tokio::test]
async fn a_stale_standby_shows_as_lag_not_as_missing_events() {
    let _serial = SERIAL.lock().await;
    let pair = ReplicatedPair::shared().await.expect("replicated pair");
    let (primary, standby) = stores(pair).await;
    let control = raw(&pair.standby_url()).await;
    control
        .batch_execute("SELECT pg_wal_replay_pause()")
        .await
        .expect("pause replay");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let state: String = control
            .query_one("SELECT pg_get_wal_replay_pause_state()", &[])
            .await
            .expect("pause state")
            .get(0);
        if state == "paused" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "replay not paused");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let appended = primary
        .append(&stream("late"), ExpectedVersion::NoStream, &events(2))
        .await
        .expect("append");

    let lag = standby.standby_lag().await.expect("lag");
    assert!(lag.wal_bytes > 0 && !lag.promoted, "{lag:?}");
    assert!(lag.last_replayed_age.is_some(), "{lag:?}");
    let status = standby.head_status().await.expect("head status");
    assert!(status.is_held_back(), "{status:?}");
    assert!(status.readable < appended.first_position, "{status:?}");
    assert_eq!(status.committed, appended.last_position);
    let stale = standby
        .read_all(&ReadAll::after(0))
        .await
        .expect("read all");
    assert!(stale.iter().all(|e| e.position < appended.first_position));

    control
        .batch_execute("SELECT pg_wal_replay_resume()")
        .await
        .expect("resume replay");
    pair.catch_up().await.expect("replay");
    let caught_up = standby
        .read_all(&ReadAll::after(0))
        .await
        .expect("read all");
    assert_eq!(
        positions(&caught_up),
        [appended.first_position, appended.last_position]
    );
    // The lag goes back to nothing (the primary may write a little more meanwhile).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let lag = standby.standby_lag().await.expect("lag");
        if lag.wal_bytes == 0 {
            assert_eq!(lag.last_replayed_age, None);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still behind: {lag:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !standby
            .head_status()
            .await
            .expect("head status")
            .is_held_back(),
        "caught up"
    );
    // A primary handle has no lag.
    assert_eq!(
        primary.standby_lag().await.expect("lag"),
        Default::default()
    );
}

/// A read model of the events delivered, in delivery order.
struct Delivered;

impl PgProjection for Delivered {
    fn name(&self) -> &str {
        "delivered"
    }

    async fn handle(&self, tx: &PgTransaction<'_>, event: &RecordedEvent) -> Result<(), BoxError> {
        tx.execute(
            "INSERT INTO delivered (event_id) VALUES ($1)",
            &[&event.event_id],
        )
        .await?;
        Ok(())
    }
}

#[tokio::test]
async fn a_transactional_projection_follows_the_standby_and_writes_on_the_primary() {
    let _serial = SERIAL.lock().await;
    let pair = ReplicatedPair::shared().await.expect("replicated pair");
    let (primary, standby) = stores(pair).await;
    let schema = primary.config().schema.quoted();
    raw(&pair.primary_url())
        .await
        .batch_execute(&format!(
            "CREATE TABLE {schema}.delivered (delivery bigserial PRIMARY KEY, event_id uuid NOT NULL)"
        ))
        .await
        .expect("read model table");
    for n in 0..3 {
        primary
            .append(
                &stream(&format!("projected-{n}")),
                ExpectedVersion::NoStream,
                &events(2),
            )
            .await
            .expect("append");
    }
    let head = primary.head_position().await.expect("head");

    // Events from the standby; the read model, checkpoints and leases on the primary.
    let running = ProjectionRunner::new(standby.clone())
        .coordination(PgCoordination::new(&standby))
        .options(RunnerOptions::new().worker_id("standby"))
        .register(
            Transactional::new(&standby, Delivered),
            ProjectionOptions::new().poll_interval(Duration::from_millis(50)),
        )
        .start();
    tokio::time::timeout(Duration::from_secs(60), running.wait_for("delivered", head))
        .await
        .expect("delivered in time")
        .expect("running");
    running.shutdown().await.expect("shutdown");

    let rows = raw(&pair.primary_url())
        .await
        .query(
            &format!("SELECT event_id FROM {schema}.delivered ORDER BY delivery"),
            &[],
        )
        .await
        .expect("read model");
    let delivered: Vec<Uuid> = rows.iter().map(|row| row.get(0)).collect();
    let expected: Vec<Uuid> = primary
        .read_all(&ReadAll::after(0))
        .await
        .expect("read all")
        .iter()
        .map(|e| e.event_id)
        .collect();
    assert_eq!(expected.len(), 6);
    assert_eq!(delivered, expected);
    assert_eq!(
        PgCoordination::new(&primary)
            .load("delivered", 0)
            .await
            .expect("checkpoint on the primary"),
        head
    );
}
