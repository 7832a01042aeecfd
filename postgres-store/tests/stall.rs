//! A transaction that holds the readable head back is reported: health turns unhealthy and
//! names its session, the lag grows, and once it commits every event is delivered in order.
//!
//! In a test process of its own: the open transaction holds back every reader of the
//! database, which would disturb the health checks of other tests.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use factum::process::{ProcessManagerRunner, ProcessOptions};
use factum::projection::{
    Health, HealthProblem, ProjectionOptions, ProjectionRunner, RunnerOptions, WorkerState,
};
use factum::testing::process_managers::{CounterDispatcher, FlowProcess};
use factum::testing::projections::{RecordingProjection, append_tested, eventually};
use factum_postgres::PgCoordination;
use factum_postgres::testing::OpenTransaction;

use common::{store, url};

/// What the tests set: health reports a held-back head after a second.
const HELD_BACK_AFTER: Duration = Duration::from_secs(1);

/// The pid of the blocker `health` names, when it reports the head held back and nothing
/// else.
fn blocking_pid(health: &Health) -> Option<u32> {
    match &health.problems[..] {
        [HealthProblem::HeadHeldBack { blocker, .. }] => blocker.as_ref()?.pid,
        _ => None,
    }
}

#[tokio::test]
async fn an_open_transaction_holding_the_head_back_is_named_in_health_until_it_commits() {
    let events = store().await;
    let coordination = PgCoordination::new(&events);
    let runner_options = RunnerOptions::new()
        .worker_id("stall")
        .head_held_back_after(HELD_BACK_AFTER);
    let projection = RecordingProjection::new("held");
    let projections = ProjectionRunner::new(events.clone())
        .coordination(coordination.clone())
        .options(runner_options.clone())
        .register(
            Arc::clone(&projection),
            ProjectionOptions::new().poll_interval(Duration::from_millis(50)),
        )
        .start();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let processes = ProcessManagerRunner::new(events.clone())
        .coordination(coordination)
        .options(runner_options)
        .register_with(
            FlowProcess,
            CounterDispatcher::new(events.clone(), calls),
            ProcessOptions::new().poll_interval(Duration::from_millis(50)),
        )
        .start();

    let (_, first) = append_tested(&events, "order-a", 1).await;
    tokio::time::timeout(
        Duration::from_secs(120),
        projections.wait_for("held", first),
    )
    .await
    .expect("delivered in time")
    .expect("running");
    assert!(
        projections.health(Duration::from_secs(60)).is_healthy(),
        "{:?}",
        projections.health(Duration::from_secs(60))
    );

    // A session of this database, idle in a transaction that has an id.
    let idle = OpenTransaction::begin(&url().await, "stalling-session")
        .await
        .expect("open the transaction");
    let pid = idle.pid();

    let mut during = Vec::new();
    for n in 2..=4 {
        during.push(append_tested(&events, &format!("order-{n}"), n).await);
    }
    let last = during.last().expect("appended").1;

    eventually("projection health to name the blocking session", || async {
        blocking_pid(&projections.health(Duration::from_secs(60))) == Some(pid)
    })
    .await;
    eventually(
        "process-manager health to name the blocking session",
        || async { blocking_pid(&processes.health(Duration::from_secs(60))) == Some(pid) },
    )
    .await;
    let health = projections.health(Duration::from_secs(60));
    let [
        HealthProblem::HeadHeldBack {
            readable,
            committed,
            blocker: Some(blocker),
            ..
        },
    ] = &health.problems[..]
    else {
        panic!("{health:?}");
    };
    assert!(readable < committed, "{health:?}");
    assert_eq!(*committed, last, "{health:?}");
    assert_eq!(
        blocker.application_name.as_deref(),
        Some("stalling-session")
    );
    assert_eq!(blocker.state.as_deref(), Some("idle in transaction"));
    let status = &health.partitions[0];
    assert_eq!(status.state, WorkerState::Running);
    assert_eq!(status.committed, last);
    assert!(status.lag_events > 0, "{status:?}");
    assert!(
        processes
            .status()
            .iter()
            .all(|p| p.committed == last && p.lag_events > 0),
        "{:?}",
        processes.status()
    );
    assert_eq!(
        projection.recording().applied.len(),
        1,
        "nothing past the open transaction is delivered"
    );

    idle.commit().await.expect("commit");
    tokio::time::timeout(Duration::from_secs(120), projections.wait_for("held", last))
        .await
        .expect("delivered in time")
        .expect("running");
    let recording = projection.recording();
    let mut positions: Vec<u64> = recording.applied.values().copied().collect();
    positions.sort_unstable();
    let mut expected = vec![first];
    expected.extend(during.iter().map(|(_, position)| *position));
    assert_eq!(positions, expected, "every event, nothing skipped");
    assert_eq!(recording.deliveries, 4, "each delivered once");
    eventually("health to recover", || async {
        projections.health(Duration::from_secs(60)).is_healthy()
            && processes.health(Duration::from_secs(60)).is_healthy()
    })
    .await;
    assert_eq!(projections.status()[0].lag_events, 0);

    projections.shutdown().await.expect("clean shutdown");
    processes.shutdown().await.expect("clean shutdown");
}
