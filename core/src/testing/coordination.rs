//! Conformance cases for the checkpoint, lease and dead-letter stores. Each takes fresh, empty
//! stores and panics on a violation.

use std::time::Duration;

use chrono::{SubsecRound, Utc};
use uuid::Uuid;

use crate::coordination::{
    CheckpointStore, CoordinationError, DeadLetterStore, Lease, LeaseStore, ParkReason, ParkedEvent,
};
use crate::stream::StreamId;

#[track_caller]
fn assert_fenced(result: Result<impl std::fmt::Debug, CoordinationError>) {
    match result {
        Err(e) if e.is_fenced() => {}
        other => panic!("expected a fenced error, got {other:?}"),
    }
}

/// A claim fences out earlier fences: their saves fail and the checkpoint does not move.
pub async fn checkpoint_fencing<C: CheckpointStore>(checkpoints: C) {
    assert_eq!(checkpoints.load("p", 0).await.expect("load"), 0);
    let first = Lease::new("p", 0, "a", 1);
    assert_eq!(checkpoints.claim(&first).await.expect("claim"), 0);
    checkpoints.save(&first, 10).await.expect("save");
    assert_eq!(checkpoints.load("p", 0).await.expect("load"), 10);

    let second = Lease::new("p", 0, "b", 2);
    assert_eq!(
        checkpoints.claim(&second).await.expect("claim"),
        10,
        "a claim returns the saved position"
    );
    assert_fenced(checkpoints.save(&first, 99).await);
    assert_eq!(checkpoints.load("p", 0).await.expect("load"), 10);
    assert_fenced(checkpoints.claim(&first).await);
    checkpoints.save(&second, 20).await.expect("save");
    checkpoints
        .save(&second, 0)
        .await
        .expect("a save may move back");
    assert_eq!(checkpoints.load("p", 0).await.expect("load"), 0);

    // Partitions and names are independent.
    assert_eq!(checkpoints.load("p", 1).await.expect("load"), 0);
    let other = Lease::new("q", 0, "a", 1);
    checkpoints.claim(&other).await.expect("claim");
    checkpoints.save(&other, 5).await.expect("save");
    assert_eq!(checkpoints.load("q", 0).await.expect("load"), 5);
    assert_eq!(checkpoints.load("p", 0).await.expect("load"), 0);
}

/// One holder at a time; renewing keeps the fence, a new holder gets a higher one.
pub async fn lease_exclusive<L: LeaseStore>(leases: L) {
    let ttl = Duration::from_secs(60);
    let a = leases
        .acquire("p", 0, "a", ttl)
        .await
        .expect("acquire")
        .expect("a free lease is granted");
    assert_eq!((a.holder.as_str(), a.partition), ("a", 0));
    assert!(
        leases
            .acquire("p", 0, "b", ttl)
            .await
            .expect("acquire")
            .is_none(),
        "a held lease is not granted to another holder"
    );
    let again = leases
        .acquire("p", 0, "a", ttl)
        .await
        .expect("acquire")
        .expect("the holder may acquire again");
    assert_eq!(again.fence, a.fence, "re-acquiring keeps the fence");
    assert!(leases.renew(&a, ttl).await.expect("renew"));
    assert_eq!(
        leases.holder("p", 0).await.expect("holder"),
        Some(a.clone())
    );
    let other_partition = leases
        .acquire("p", 1, "b", ttl)
        .await
        .expect("acquire")
        .expect("partitions are leased separately");
    assert_eq!(other_partition.holder, "b");

    leases.release(&a).await.expect("release");
    assert_eq!(leases.holder("p", 0).await.expect("holder"), None);
    assert!(
        !leases.renew(&a, ttl).await.expect("renew"),
        "a released lease is lost"
    );
    let b = leases
        .acquire("p", 0, "b", ttl)
        .await
        .expect("acquire")
        .expect("a released lease is granted");
    assert!(b.fence > a.fence, "a new holder gets a higher fence");
    assert!(!leases.renew(&a, ttl).await.expect("renew"));
    // Releasing a stale lease does not release the current holder's.
    leases.release(&a).await.expect("release");
    assert_eq!(leases.holder("p", 0).await.expect("holder"), Some(b));
}

/// A lease that is not renewed expires and another holder takes it over.
pub async fn lease_expiry<L: LeaseStore>(leases: L) {
    let ttl = Duration::from_millis(300);
    let a = leases
        .acquire("p", 0, "a", ttl)
        .await
        .expect("acquire")
        .expect("granted");
    super::projections::eventually("the lease to expire", || async {
        leases.holder("p", 0).await.expect("holder").is_none()
    })
    .await;
    let b = leases
        .acquire("p", 0, "b", Duration::from_secs(60))
        .await
        .expect("acquire")
        .expect("an expired lease is granted to another holder");
    assert!(b.fence > a.fence);
    assert!(
        !leases.renew(&a, ttl).await.expect("renew"),
        "the old holder lost it"
    );
    // An expired holder that acquires again after a takeover is refused.
    assert!(
        leases
            .acquire("p", 0, "a", ttl)
            .await
            .expect("acquire")
            .is_none()
    );
}

fn parked(
    name: &str,
    partition: u32,
    position: u64,
    stream: &str,
    reason: ParkReason,
) -> ParkedEvent {
    ParkedEvent {
        name: name.to_owned(),
        partition,
        position,
        event_id: Uuid::now_v7(),
        stream_id: StreamId::parse(stream).expect("stream"),
        event_type: "Tested".to_owned(),
        reason,
        // Stores may keep microseconds only (PostgreSQL does).
        parked_at: Utc::now().trunc_subsecs(6),
        replay_requested: false,
    }
}

/// Parked events are listed by position, marked for replay, removed and cleared.
pub async fn dead_letters<D: DeadLetterStore>(dead_letters: D) {
    let failed = ParkReason::Failed {
        error: "boom".to_owned(),
        attempts: 3,
    };
    let a5 = parked("p", 0, 5, "order-a", failed.clone());
    let a7 = parked("p", 0, 7, "order-a", ParkReason::Waiting { behind: 5 });
    let b6 = parked("p", 1, 6, "order-b", failed.clone());
    let other = parked("q", 0, 5, "order-a", failed);
    for p in [&a7, &b6, &a5, &other] {
        dead_letters.park(p).await.expect("park");
    }
    let all = dead_letters.list("p").await.expect("list");
    assert_eq!(
        all.iter().map(|p| p.position).collect::<Vec<_>>(),
        [5, 6, 7],
        "listed by position, only this name"
    );
    assert_eq!(all[0], a5, "an entry round-trips");
    let partition0 = dead_letters.list_partition("p", 0).await.expect("list");
    assert_eq!(
        partition0.iter().map(|p| p.position).collect::<Vec<_>>(),
        [5, 7]
    );

    let stream_a = StreamId::parse("order-a").expect("stream");
    assert_eq!(
        dead_letters
            .request_replay("p", Some(&stream_a))
            .await
            .expect("request"),
        2
    );
    let marked: Vec<_> = dead_letters
        .list("p")
        .await
        .expect("list")
        .into_iter()
        .filter(|p| p.replay_requested)
        .map(|p| p.position)
        .collect();
    assert_eq!(marked, [5, 7]);

    // Parking again replaces the entry.
    let mut again = a5.clone();
    again.reason = ParkReason::Failed {
        error: "still".to_owned(),
        attempts: 6,
    };
    dead_letters.park(&again).await.expect("park");
    let all = dead_letters.list("p").await.expect("list");
    assert_eq!(all.len(), 3);
    assert_eq!(all[0].reason, again.reason);

    dead_letters.remove("p", 5).await.expect("remove");
    assert_eq!(
        dead_letters
            .list("p")
            .await
            .expect("list")
            .iter()
            .map(|p| p.position)
            .collect::<Vec<_>>(),
        [6, 7]
    );
    dead_letters.clear("p").await.expect("clear");
    assert!(dead_letters.list("p").await.expect("list").is_empty());
    assert_eq!(dead_letters.list("q").await.expect("list").len(), 1);
}

/// Members join with a time to live, are listed sorted while alive, and leave.
pub async fn lease_membership<L: LeaseStore>(leases: L) {
    // Long enough for every listing below, however slow the machine; `b` then rejoins with
    // a short time to live, which replaces the long one, and is waited out.
    let long = Duration::from_secs(600);
    let short = Duration::from_millis(200);
    assert!(leases.members("p").await.expect("members").is_empty());
    leases.join("p", "b", long).await.expect("join");
    leases.join("p", "a", long).await.expect("join");
    leases.join("q", "c", long).await.expect("join");
    assert_eq!(leases.members("p").await.expect("members"), ["a", "b"]);
    leases.join("p", "b", short).await.expect("join");
    super::projections::eventually("a member that stops joining to expire", || async {
        leases.members("p").await.expect("members") == ["a"]
    })
    .await;
    leases.join("p", "b", long).await.expect("join");
    leases.leave("p", "a").await.expect("leave");
    assert_eq!(leases.members("p").await.expect("members"), ["b"]);
    assert_eq!(leases.members("q").await.expect("members"), ["c"]);
}
