//! Status cells shared by the workers and the handle.

use std::collections::BTreeMap;
#[cfg(feature = "metrics")]
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::head::HeadStatus;
use crate::projection::{Health, HealthProblem, PartitionStatus, WorkerState};
use crate::runtime::head_monitor::HeadWatch;
#[cfg(feature = "metrics")]
use crate::subscription::Shutdown;

/// Status cells shared by the workers and the handle (of projections and process managers).
#[derive(Debug, Default)]
pub(crate) struct Shared {
    statuses: Mutex<BTreeMap<(String, u32), StatusCell>>,
    changed: watch::Sender<u64>,
    /// The highest committed position the head monitor saw: what the lag is measured to.
    committed: AtomicU64,
    /// Whether, since when and by what the readable head is held back.
    head: Mutex<HeadWatch>,
}

#[derive(Debug)]
pub(crate) struct StatusCell {
    pub(crate) state: WorkerState,
    pub(crate) checkpoint: u64,
    pub(crate) position: u64,
    pub(crate) head: u64,
    last_progress: Instant,
    behind_since: Option<Instant>,
    pub(crate) error: Option<String>,
    /// The transient failures the worker is retrying after, until it gets through a batch.
    failing: Option<Failing>,
}

/// A streak of transient failures (store, coordination or dead-letter store unavailable).
#[derive(Debug)]
struct Failing {
    error: String,
    failures: u32,
    since: Instant,
}

/// How many failures in a row make a partition [`HealthProblem::Failing`]: its retry failed
/// too, so it is not a passing blip.
pub(crate) const FAILING_AFTER: u32 = 2;

impl StatusCell {
    /// Records a transient failure; returns how many there were in a row.
    pub(crate) fn failed(&mut self, error: String) -> u32 {
        let failing = self.failing.get_or_insert_with(|| Failing {
            error: String::new(),
            failures: 0,
            since: Instant::now(),
        });
        failing.error = error;
        failing.failures = failing.failures.saturating_add(1);
        failing.failures
    }

    /// Ends a streak of failures: the worker got through a batch, or left the partition.
    pub(crate) fn recovered(&mut self) {
        self.failing = None;
    }
}

impl Shared {
    fn cells(&self) -> MutexGuard<'_, BTreeMap<(String, u32), StatusCell>> {
        // Updates are single assignments: a panic cannot leave a cell half-written.
        self.statuses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn update(&self, name: &str, partition: u32, f: impl FnOnce(&mut StatusCell)) {
        let now = Instant::now();
        {
            let mut cells = self.cells();
            let cell = cells
                .entry((name.to_owned(), partition))
                .or_insert_with(|| StatusCell {
                    state: WorkerState::WaitingForLease,
                    checkpoint: 0,
                    position: 0,
                    head: 0,
                    last_progress: now,
                    behind_since: None,
                    error: None,
                    failing: None,
                });
            let before = (cell.position, cell.head);
            f(cell);
            if cell.position != before.0 || cell.position >= cell.head {
                cell.last_progress = now;
            }
            let committed = self.committed();
            mark_behind(cell, committed, now);
            #[cfg(feature = "metrics")]
            record_metrics(name, partition, cell, committed, now);
        }
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Sets the lag gauges of every partition from its current cell.
    #[cfg(feature = "metrics")]
    pub(crate) fn refresh_metrics(&self) {
        let now = Instant::now();
        let committed = self.committed();
        for ((name, partition), cell) in self.cells().iter() {
            record_metrics(name, *partition, cell, committed, now);
        }
    }

    /// The highest committed position seen.
    fn committed(&self) -> u64 {
        self.committed.load(Ordering::Relaxed)
    }

    fn head_watch(&self) -> MutexGuard<'_, HeadWatch> {
        // Updates replace whole values: a panic cannot leave it half-written.
        self.head
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a look at the store's head: the committed position every partition's lag is
    /// measured to, and whether the readable head is held back (`threshold`: from when
    /// health reports it).
    pub(crate) fn observe_head(&self, head: &HeadStatus, threshold: Duration) {
        let now = Instant::now();
        let committed = head
            .committed
            .max(self.committed.fetch_max(head.committed, Ordering::Relaxed));
        let held_for = {
            let mut watch = self.head_watch();
            watch.observe(head, threshold, now);
            watch.held_for(now)
        };
        for cell in self.cells().values_mut() {
            mark_behind(cell, committed, now);
        }
        #[cfg(feature = "metrics")]
        metrics::gauge!("factum_head_held_back_seconds").set(held_for.as_secs_f64());
        #[cfg(not(feature = "metrics"))]
        let _ = held_for;
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Refreshes the lag gauges every second (so the time behind grows while a partition is
    /// stuck), until `shutdown`.
    #[cfg(feature = "metrics")]
    pub(crate) async fn metrics_ticker(self: Arc<Self>, shutdown: Shutdown) {
        loop {
            tokio::select! {
                () = shutdown.triggered() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => self.refresh_metrics(),
            }
        }
    }

    pub(crate) fn health(&self, stalled_after: Duration) -> Health {
        let partitions = self.snapshot();
        let problems = partitions
            .iter()
            .filter_map(|p| match p.state {
                WorkerState::Stopped => Some(HealthProblem::Stopped {
                    name: p.name.clone(),
                    partition: p.partition,
                    error: p.error.clone().unwrap_or_default(),
                }),
                _ if p.failures >= FAILING_AFTER => Some(HealthProblem::Failing {
                    name: p.name.clone(),
                    partition: p.partition,
                    error: p.error.clone().unwrap_or_default(),
                    failures: p.failures,
                    for_: p.failing_for,
                }),
                // Behind what it can read: a head held back is reported on its own below.
                WorkerState::Running
                    if p.position < p.head && p.since_progress >= stalled_after =>
                {
                    Some(HealthProblem::Stalled {
                        name: p.name.clone(),
                        partition: p.partition,
                        position: p.position,
                        head: p.head,
                        for_: p.since_progress,
                    })
                }
                _ => None,
            })
            .chain(self.head_watch().problem(Instant::now()))
            .collect();
        Health {
            partitions,
            problems,
        }
    }

    /// Waits until every partition of `name` saved a checkpoint at or after `position`;
    /// `Err(partition)` when one stops first.
    pub(crate) async fn wait_for(&self, name: &str, position: u64) -> Result<(), u32> {
        let mut changed = self.changed.subscribe();
        loop {
            changed.borrow_and_update();
            let mut done = true;
            for p in self.snapshot().iter().filter(|p| p.name == name) {
                if matches!(p.state, WorkerState::Stopped | WorkerState::Finished) {
                    return Err(p.partition);
                }
                done &= p.checkpoint >= position;
            }
            if done {
                return Ok(());
            }
            // The sender lives in `self`.
            let _ = changed.changed().await;
        }
    }

    pub(crate) fn snapshot(&self) -> Vec<PartitionStatus> {
        let now = Instant::now();
        let committed = self.committed();
        self.cells()
            .iter()
            .map(|((name, partition), c)| PartitionStatus {
                name: name.clone(),
                partition: *partition,
                state: c.state,
                checkpoint: c.checkpoint,
                position: c.position,
                head: c.head,
                committed: committed.max(c.head),
                lag_events: committed.max(c.head).saturating_sub(c.position),
                lag_time: c.behind_since.map_or(Duration::ZERO, |t| now - t),
                since_progress: now - c.last_progress,
                error: c
                    .error
                    .clone()
                    .or_else(|| c.failing.as_ref().map(|f| f.error.clone())),
                failures: c.failing.as_ref().map_or(0, |f| f.failures),
                failing_for: c.failing.as_ref().map_or(Duration::ZERO, |f| now - f.since),
            })
            .collect()
    }
}

/// Marks a cell behind (from `now`) while its position is below its head or the committed
/// position, and caught up once it is at both.
fn mark_behind(cell: &mut StatusCell, committed: u64, now: Instant) {
    if cell.position >= cell.head.max(committed) {
        cell.behind_since = None;
    } else if cell.behind_since.is_none() {
        cell.behind_since = Some(now);
    }
}

#[cfg(feature = "metrics")]
fn record_metrics(name: &str, partition: u32, cell: &StatusCell, committed: u64, now: Instant) {
    let labels = [
        ("projection", name.to_owned()),
        ("partition", partition.to_string()),
    ];
    #[allow(
        clippy::cast_precision_loss,
        reason = "a gauge is a float; lags beyond 2^53 events lose precision harmlessly"
    )]
    let lag = cell.head.max(committed).saturating_sub(cell.position) as f64;
    metrics::gauge!("factum_projection_lag_positions", &labels).set(lag);
    let behind = cell.behind_since.map_or(0.0, |t| (now - t).as_secs_f64());
    metrics::gauge!("factum_projection_lag_seconds", &labels).set(behind);
}
