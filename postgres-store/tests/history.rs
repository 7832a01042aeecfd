//! A history checker in the manner of list-append checks: concurrent writers and readers go
//! through the fault-injection proxy while it cuts connections at random (some right after
//! an append's commit was sent, before its reply), every operation's invocation and outcome
//! is recorded, and the history is checked against what the store holds at the end:
//!
//! - every acknowledged append is stored exactly once, where its result says;
//! - no event of an append that definitely failed is visible, unless a retry with the same
//!   ids was acknowledged or an attempt's outcome was unknown; appends are all-or-nothing;
//! - each stream's versions are gapless and strictly increasing, in position order;
//! - the `read_all` follower sees every committed event exactly once, in an order consistent
//!   with each stream's order;
//! - no reader ever sees a position go backwards, or an event that is not finally stored.
//!
//! The run is driven by a seed, printed at the start; `FACTUM_HISTORY_SEED=<n>` replays the
//! same choices (the interleaving still depends on the scheduler).

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use factum::store::{NewEvent, Payload, ReadAll, StreamRead};
use factum::subscription::{Shutdown, Subscription, SubscriptionOptions};
use factum::{EventStore, ExpectedVersion, Metadata, RecordedEvent, StoreError, StreamId};
use factum_postgres::testing::proxy::{Proxy, Rule};
use factum_postgres::{PgConfig, PgStore};
use uuid::Uuid;

use common::store;

/// Writers, streams and appends per writer: several thousand operations per run.
const WRITERS: usize = 6;
const STREAMS: usize = 4;
const APPENDS_PER_WRITER: usize = 300;
const READERS: usize = 2;
/// How long the run may take to settle before it fails.
const PATIENCE: Duration = Duration::from_secs(60);

// --- The history ----------------------------------------------------------------------------

/// An event as a reader saw it or the store holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    id: Uuid,
    stream: usize,
    version: u64,
    position: u64,
}

/// How an append ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// Acknowledged, with the result the store returned.
    Ok {
        first_version: u64,
        version: u64,
        first_position: u64,
        last_position: u64,
    },
    /// Refused: nothing was written (a version conflict).
    Failed,
    /// The connection failed: it may or may not have been committed.
    Unknown,
}

/// One attempt to append a batch (retries of a batch keep its ids).
#[derive(Debug, Clone)]
struct Append {
    batch: usize,
    stream: usize,
    expected: ExpectedVersion,
    ids: Vec<Uuid>,
    outcome: Outcome,
}

/// A successful stream read by a reader, in the reader's order.
#[derive(Debug, Clone)]
struct Read {
    reader: usize,
    stream: usize,
    events: Vec<Seen>,
}

#[derive(Debug, Default, Clone)]
struct History {
    appends: Vec<Append>,
    reads: Vec<Read>,
    /// What the follower delivered, in delivery order.
    followed: Vec<Seen>,
}

/// What the checker found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Violation {
    /// An acknowledged event is not stored.
    Lost { id: Uuid },
    /// An event is stored more than once.
    Duplicate { id: Uuid },
    /// An acknowledged append is stored elsewhere than its result says.
    WrongResult { batch: usize, why: String },
    /// An event is stored whose every append attempt definitely failed, or that nobody
    /// appended.
    Phantom { id: Uuid },
    /// Part of an append is stored.
    Partial { batch: usize },
    /// A stream's versions are not 1, 2, 3, ... in position order.
    Gap {
        stream: usize,
        expected: u64,
        found: u64,
    },
    /// A reader saw a position lower than one it saw before.
    Backwards { reader: String, from: u64, to: u64 },
    /// A reader saw an event that is not stored as it saw it.
    Unstored { reader: String, id: Uuid },
    /// The follower missed a committed event.
    NotFollowed { id: Uuid },
    /// The follower delivered an event twice.
    FollowedTwice { id: Uuid },
}

/// Checks `history` against `stored`, everything the store holds at the end in position
/// order.
fn check(history: &History, stored: &[Seen]) -> Vec<Violation> {
    let mut violations = Vec::new();
    let mut by_id: HashMap<Uuid, Seen> = HashMap::new();
    for event in stored {
        if by_id.insert(event.id, *event).is_some() {
            violations.push(Violation::Duplicate { id: event.id });
        }
    }

    // Each stream: versions 1, 2, 3, ... as positions grow.
    let mut next_version: BTreeMap<usize, u64> = BTreeMap::new();
    let mut last_position = 0;
    for event in stored {
        if event.position <= last_position {
            violations.push(Violation::Backwards {
                reader: "store".to_owned(),
                from: last_position,
                to: event.position,
            });
        }
        last_position = last_position.max(event.position);
        let expected = next_version.entry(event.stream).or_insert(1);
        if event.version != *expected {
            violations.push(Violation::Gap {
                stream: event.stream,
                expected: *expected,
                found: event.version,
            });
        }
        *expected = event.version + 1;
    }

    // Appends: acknowledged ones stored as acknowledged; every batch all or nothing; no
    // event of a definitely failed batch.
    let mut batches: BTreeMap<usize, Vec<&Append>> = BTreeMap::new();
    for append in &history.appends {
        batches.entry(append.batch).or_default().push(append);
    }
    let mut appended_ids = HashSet::new();
    for (batch, attempts) in &batches {
        let ids = &attempts[0].ids;
        appended_ids.extend(ids.iter().copied());
        let present: Vec<Option<&Seen>> = ids.iter().map(|id| by_id.get(id)).collect();
        let visible = present.iter().filter(|p| p.is_some()).count();
        if visible != 0 && visible != ids.len() {
            violations.push(Violation::Partial { batch: *batch });
        }
        let mut may_be_stored = false;
        for attempt in attempts {
            match &attempt.outcome {
                Outcome::Ok {
                    first_version,
                    version,
                    first_position,
                    last_position,
                } => {
                    may_be_stored = true;
                    for id in &attempt.ids {
                        if !by_id.contains_key(id) {
                            violations.push(Violation::Lost { id: *id });
                        }
                    }
                    let found: Option<Vec<&Seen>> = present.iter().copied().collect();
                    let Some(found) = found else { continue };
                    let versions: Vec<u64> = found.iter().map(|e| e.version).collect();
                    let wanted: Vec<u64> = (*first_version..=*version).collect();
                    let why = if versions != wanted {
                        Some(format!("versions {versions:?}, result {wanted:?}"))
                    } else if found.iter().any(|e| e.stream != attempt.stream) {
                        Some("stored in another stream".to_owned())
                    } else if found.first().map(|e| e.position) != Some(*first_position)
                        || found.last().map(|e| e.position) != Some(*last_position)
                    {
                        Some(format!(
                            "positions {:?}, result {first_position}..={last_position}",
                            found.iter().map(|e| e.position).collect::<Vec<_>>()
                        ))
                    } else if let ExpectedVersion::Exact(v) = attempt.expected {
                        (*first_version != v + 1)
                            .then(|| format!("expected {v}, appended from {first_version}"))
                    } else {
                        None
                    };
                    if let Some(why) = why {
                        violations.push(Violation::WrongResult { batch: *batch, why });
                    }
                }
                Outcome::Unknown => may_be_stored = true,
                Outcome::Failed => {}
            }
        }
        if !may_be_stored {
            for (id, present) in ids.iter().zip(&present) {
                if present.is_some() {
                    violations.push(Violation::Phantom { id: *id });
                }
            }
        }
    }
    for event in stored {
        if !appended_ids.contains(&event.id) {
            violations.push(Violation::Phantom { id: event.id });
        }
    }

    // Stream readers: each read is a stored prefix of the stream, and a reader's reads of a
    // stream never shrink.
    let mut last_seen: HashMap<(usize, usize), u64> = HashMap::new();
    for read in &history.reads {
        let reader = format!("stream reader {}", read.reader);
        let mut previous = 0;
        for (i, event) in read.events.iter().enumerate() {
            if by_id.get(&event.id) != Some(event) || event.version != i as u64 + 1 {
                violations.push(Violation::Unstored {
                    reader: reader.clone(),
                    id: event.id,
                });
            }
            if event.position <= previous {
                violations.push(Violation::Backwards {
                    reader: reader.clone(),
                    from: previous,
                    to: event.position,
                });
            }
            previous = event.position;
        }
        let last = last_seen.entry((read.reader, read.stream)).or_insert(0);
        if previous < *last {
            violations.push(Violation::Backwards {
                reader,
                from: *last,
                to: previous,
            });
        }
        *last = (*last).max(previous);
    }

    // The follower: every stored event once, positions only growing (so each stream in
    // its order, since the store's versions grow with positions).
    let mut followed = HashSet::new();
    let mut previous = 0;
    for event in &history.followed {
        if !followed.insert(event.id) {
            violations.push(Violation::FollowedTwice { id: event.id });
        }
        if by_id.get(&event.id) != Some(event) {
            violations.push(Violation::Unstored {
                reader: "follower".to_owned(),
                id: event.id,
            });
        }
        if event.position <= previous {
            violations.push(Violation::Backwards {
                reader: "follower".to_owned(),
                from: previous,
                to: event.position,
            });
        }
        previous = previous.max(event.position);
    }
    for event in stored {
        if !followed.contains(&event.id) {
            violations.push(Violation::NotFollowed { id: event.id });
        }
    }
    violations
}

// --- The run --------------------------------------------------------------------------------

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn stream_id(stream: usize) -> StreamId {
    StreamId::new("order", &format!("h{stream}")).expect("stream id")
}

fn stream_index(id: &StreamId) -> usize {
    id.as_str()
        .strip_prefix("order-h")
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX)
}

fn seen(event: &RecordedEvent) -> Seen {
    Seen {
        id: event.event_id,
        stream: stream_index(&event.stream_id),
        version: event.stream_version,
        position: event.position,
    }
}

fn new_event(id: Uuid, writer: usize, op: usize) -> NewEvent {
    NewEvent {
        event_id: id,
        event_type: "Appended".into(),
        schema_version: 1,
        payload: Payload::encode(&serde_json::json!({ "writer": writer, "op": op }))
            .expect("payload"),
        metadata: Metadata::new(),
    }
}

/// One writer: appends of 1 to 3 events to random streams, with the version it last saw or
/// `Any`; after an unknown outcome it mostly retries with the same ids, after a conflict
/// sometimes with `Any`.
async fn writer(
    store: PgStore,
    writer: usize,
    seed: u64,
    next_batch: Arc<AtomicUsize>,
) -> Vec<Append> {
    let mut rng = fastrand::Rng::with_seed(seed.wrapping_add(writer as u64 * 0x9e37_79b9));
    let mut known = [0u64; STREAMS];
    let mut appends = Vec::new();
    for op in 0..APPENDS_PER_WRITER {
        let stream = rng.usize(..STREAMS);
        let ids: Vec<Uuid> = (0..rng.usize(1..=3))
            .map(|_| Uuid::from_u64_pair(rng.u64(..), rng.u64(..)))
            .collect();
        let events: Vec<NewEvent> = ids.iter().map(|&id| new_event(id, writer, op)).collect();
        let mut expected = if rng.bool() {
            ExpectedVersion::Any
        } else {
            ExpectedVersion::Exact(known[stream])
        };
        let batch = next_batch.fetch_add(1, Ordering::SeqCst);
        for _attempt in 0..4 {
            let used = expected;
            let result = store.append(&stream_id(stream), used, &events).await;
            let (outcome, retry) = match result {
                Ok(r) => {
                    known[stream] = r.version;
                    let ok = Outcome::Ok {
                        first_version: r.first_version,
                        version: r.version,
                        first_position: r.first_position,
                        last_position: r.last_position,
                    };
                    (ok, false)
                }
                Err(StoreError::WrongExpectedVersion { actual, .. }) => {
                    known[stream] = actual;
                    let retry = rng.u8(..) < 64;
                    if retry {
                        expected = ExpectedVersion::Any;
                    }
                    (Outcome::Failed, retry)
                }
                Err(_) => (Outcome::Unknown, rng.u8(..) < 200),
            };
            appends.push(Append {
                batch,
                stream,
                expected: used,
                ids: ids.clone(),
                outcome,
            });
            if !retry {
                break;
            }
        }
    }
    appends
}

/// One reader: reads random streams until `stop`.
async fn reader(store: PgStore, reader: usize, seed: u64, stop: Arc<AtomicBool>) -> Vec<Read> {
    let mut rng = fastrand::Rng::with_seed(seed.wrapping_mul(31).wrapping_add(reader as u64));
    let mut reads = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let stream = rng.usize(..STREAMS);
        if let Ok(events) = store
            .read_stream(&stream_id(stream), &StreamRead::all())
            .await
        {
            reads.push(Read {
                reader,
                stream,
                events: events.iter().map(seen).collect(),
            });
        }
    }
    reads
}

/// The follower: a subscription to the global order, into `followed`.
async fn follower(store: PgStore, followed: Arc<Mutex<Vec<Seen>>>, shutdown: Shutdown) {
    let options = SubscriptionOptions::new()
        .batch_size(500)
        .poll_interval(Duration::from_millis(50));
    let mut subscription = Subscription::new(store, 0, options);
    loop {
        match subscription.next(&shutdown).await {
            Ok(Some(batch)) => lock(&followed).extend(batch.events.iter().map(seen)),
            Ok(None) => return,
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Cuts connections at random until `stop`: an open connection at once, or the next append
/// right after its commit was sent.
async fn chaos(proxy: Arc<Proxy>, seed: u64, stop: Arc<AtomicBool>) {
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x5eed);
    while !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(rng.u64(20..80))).await;
        if rng.bool() {
            let open: Vec<u64> = proxy
                .connections()
                .iter()
                .filter(|c| c.open && !c.cut)
                .map(|c| c.id)
                .collect();
            if !open.is_empty() {
                let victim = open[rng.usize(..open.len())];
                proxy.cut_where(|c| c.id == victim);
            }
        } else {
            // A one-shot cut of the next append (its Bind carries the event type name).
            proxy.arm(Rule::on_client_exchange(|m| {
                m.tag() == Some(b'B') && m.contains(b"Appended")
            }));
        }
    }
}

/// Everything the store holds, in position order, read directly.
async fn stored(store: &PgStore) -> Vec<Seen> {
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let page = store
            .read_all(&ReadAll::after(after).limit(10_000))
            .await
            .expect("read all");
        let Some(last) = page.last() else {
            return all;
        };
        after = last.position;
        all.extend(page.iter().map(seen));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_and_reads_through_cut_connections_keep_the_history_consistent() {
    let seed = std::env::var("FACTUM_HISTORY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    println!("history seed: {seed} (replay with FACTUM_HISTORY_SEED={seed})");

    let direct = store().await;
    let proxy = Arc::new(Proxy::to_test_database().await.expect("proxy"));
    let proxied = PgStore::connect_with(
        proxy.url(),
        PgConfig::default()
            .schema(direct.config().schema.as_str())
            .expect("schema")
            .pool_size(WRITERS + READERS + 2),
    )
    .await
    .expect("connect through the proxy");

    let stop = Arc::new(AtomicBool::new(false));
    let shutdown = Shutdown::new();
    let followed = Arc::new(Mutex::new(Vec::new()));
    let follow = tokio::spawn(follower(
        proxied.clone(),
        Arc::clone(&followed),
        shutdown.clone(),
    ));
    let readers: Vec<_> = (0..READERS)
        .map(|r| tokio::spawn(reader(proxied.clone(), r, seed, Arc::clone(&stop))))
        .collect();
    let chaos = tokio::spawn(chaos(Arc::clone(&proxy), seed, Arc::clone(&stop)));
    let next_batch = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| tokio::spawn(writer(proxied.clone(), w, seed, Arc::clone(&next_batch))))
        .collect();

    let started = std::time::Instant::now();
    let mut history = History::default();
    for writer in writers {
        history.appends.extend(writer.await.expect("writer"));
    }
    stop.store(true, Ordering::SeqCst);
    let writing = started.elapsed();
    chaos.await.expect("chaos");
    for reader in readers {
        history.reads.extend(reader.await.expect("reader"));
    }
    let stored = stored(&direct).await;
    let last = stored.last().map_or(0, |e| e.position);
    let caught_up = tokio::time::timeout(PATIENCE, async {
        while lock(&followed).last().map_or(0, |e| e.position) < last {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    shutdown.trigger();
    follow.await.expect("follower");
    history.followed = lock(&followed).clone();
    assert!(caught_up.is_ok(), "the follower did not reach {last}");

    let unknown = history
        .appends
        .iter()
        .filter(|a| a.outcome == Outcome::Unknown)
        .count();
    let failed = history
        .appends
        .iter()
        .filter(|a| a.outcome == Outcome::Failed)
        .count();
    let operations = history.appends.len() + history.reads.len();
    println!(
        "{} appends ({unknown} unknown, {failed} refused), {} stream reads, {} events stored, \
         {} followed, {} connections cut; writers done after {writing:?}, checked after {:?}",
        history.appends.len(),
        history.reads.len(),
        stored.len(),
        history.followed.len(),
        proxy.stats().cut,
        started.elapsed()
    );
    assert!(operations >= 2_000, "{operations} operations");
    assert!(unknown > 0, "no append met a cut connection");
    let violations = check(&history, &stored);
    assert!(violations.is_empty(), "seed {seed}: {violations:#?}");
}

// --- The checker's own test -----------------------------------------------------------------

fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

/// A small consistent history: two streams, a retried unknown outcome, a refused append,
/// a reader and the follower.
fn valid() -> (History, Vec<Seen>) {
    let stored = vec![
        Seen {
            id: id(1),
            stream: 0,
            version: 1,
            position: 10,
        },
        Seen {
            id: id(2),
            stream: 0,
            version: 2,
            position: 11,
        },
        Seen {
            id: id(3),
            stream: 1,
            version: 1,
            position: 20,
        },
        Seen {
            id: id(4),
            stream: 0,
            version: 3,
            position: 30,
        },
    ];
    let ok = |first_version, version, first_position, last_position| Outcome::Ok {
        first_version,
        version,
        first_position,
        last_position,
    };
    let appends = vec![
        Append {
            batch: 0,
            stream: 0,
            expected: ExpectedVersion::Exact(0),
            ids: vec![id(1), id(2)],
            outcome: ok(1, 2, 10, 11),
        },
        Append {
            batch: 1,
            stream: 1,
            expected: ExpectedVersion::Any,
            ids: vec![id(3)],
            outcome: Outcome::Unknown,
        },
        Append {
            batch: 1,
            stream: 1,
            expected: ExpectedVersion::Any,
            ids: vec![id(3)],
            outcome: ok(1, 1, 20, 20),
        },
        Append {
            batch: 2,
            stream: 0,
            expected: ExpectedVersion::Exact(0),
            ids: vec![id(9)],
            outcome: Outcome::Failed,
        },
        Append {
            batch: 3,
            stream: 0,
            expected: ExpectedVersion::Exact(2),
            ids: vec![id(4)],
            outcome: Outcome::Unknown,
        },
    ];
    let reads = vec![
        Read {
            reader: 0,
            stream: 0,
            events: stored[..2].to_vec(),
        },
        Read {
            reader: 0,
            stream: 0,
            events: vec![stored[0], stored[1], stored[3]],
        },
    ];
    let history = History {
        appends,
        reads,
        followed: stored.clone(),
    };
    (history, stored)
}

#[test]
fn the_checker_accepts_a_consistent_history_and_reports_each_corruption() {
    let (history, stored) = valid();
    assert_eq!(check(&history, &stored), []);

    // A duplicate: an acknowledged event stored twice.
    let mut twice = stored.clone();
    twice.push(Seen {
        position: 40,
        version: 4,
        ..stored[0]
    });
    assert!(check(&history, &twice).contains(&Violation::Duplicate { id: id(1) }));

    // A gap: version 2 of stream 0 missing (and with it part of batch 0).
    let gap: Vec<Seen> = stored.iter().copied().filter(|e| e.id != id(2)).collect();
    let mut followed_gap = history.clone();
    followed_gap.followed = gap.clone();
    followed_gap.reads.clear();
    let found = check(&followed_gap, &gap);
    assert!(
        found.contains(&Violation::Gap {
            stream: 0,
            expected: 2,
            found: 3
        }),
        "{found:?}"
    );
    assert!(found.contains(&Violation::Lost { id: id(2) }), "{found:?}");
    assert!(
        found.contains(&Violation::Partial { batch: 0 }),
        "{found:?}"
    );

    // A position going backwards for the follower, and for a reader.
    let mut backwards = history.clone();
    backwards.followed.swap(2, 3);
    let found = check(&backwards, &stored);
    assert!(
        found.contains(&Violation::Backwards {
            reader: "follower".into(),
            from: 30,
            to: 20
        }),
        "{found:?}"
    );
    let mut shrinking = history.clone();
    shrinking.reads.reverse();
    let found = check(&shrinking, &stored);
    assert!(
        found.contains(&Violation::Backwards {
            reader: "stream reader 0".into(),
            from: 30,
            to: 11
        }),
        "{found:?}"
    );

    // A lost acknowledgement: the acknowledged event 3 is not stored.
    let lost: Vec<Seen> = stored.iter().copied().filter(|e| e.id != id(3)).collect();
    let mut without = history.clone();
    without.followed = lost.clone();
    assert!(check(&without, &lost).contains(&Violation::Lost { id: id(3) }));

    // An event of a refused append is visible.
    let mut phantom = stored.clone();
    phantom.push(Seen {
        id: id(9),
        stream: 0,
        version: 4,
        position: 40,
    });
    let mut seen_all = history.clone();
    seen_all.followed = phantom.clone();
    assert_eq!(
        check(&seen_all, &phantom),
        [Violation::Phantom { id: id(9) }]
    );

    // An acknowledged result that does not say where the events are.
    let mut wrong = history.clone();
    wrong.appends[0].outcome = Outcome::Ok {
        first_version: 1,
        version: 2,
        first_position: 10,
        last_position: 12,
    };
    assert!(matches!(
        &check(&wrong, &stored)[..],
        [Violation::WrongResult { batch: 0, .. }]
    ));

    // A reader saw an event that was never stored (a dirty read).
    let mut dirty = history.clone();
    dirty.reads[0].events.push(Seen {
        id: id(9),
        stream: 0,
        version: 3,
        position: 12,
    });
    assert_eq!(
        check(&dirty, &stored),
        [Violation::Unstored {
            reader: "stream reader 0".into(),
            id: id(9)
        }]
    );

    // The follower misses an event, and delivers another twice.
    let mut missed = history.clone();
    missed.followed.remove(1);
    missed.followed.push(stored[3]);
    let found = check(&missed, &stored);
    assert!(
        found.contains(&Violation::NotFollowed { id: id(2) }),
        "{found:?}"
    );
    assert!(
        found.contains(&Violation::FollowedTwice { id: id(4) }),
        "{found:?}"
    );
}
