//! Watching the store's head: whether committed events are kept from being readable, for
//! how long, and by what.
//!
//! One task per runner asks the store for its [`HeadStatus`] every so often. The committed
//! position feeds every partition's lag; a head held back past the runner's
//! [`RunnerOptions::head_held_back_after`] makes health report
//! [`HealthProblem::HeadHeldBack`], is logged once as a warning, and shows in the
//! `factum_head_held_back_seconds` gauge.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::head::{Blocker, HeadStatus};
use crate::projection::{HealthProblem, RunnerOptions};
use crate::runtime::status::Shared;
use crate::store::EventStore;
use crate::subscription::Shutdown;

/// The shortest and longest pause between two looks at the head.
const MIN_INTERVAL: Duration = Duration::from_millis(100);
const MAX_INTERVAL: Duration = Duration::from_secs(1);

/// What the runner knows of the head being held back.
#[derive(Debug, Default)]
pub(crate) struct HeadWatch {
    /// The current episode, while committed events are not readable.
    episode: Option<Episode>,
    /// How long an episode lasts before health reports it.
    threshold: Option<Duration>,
}

/// One stretch of time during which the committed events seen at its start stayed
/// unreadable.
#[derive(Debug)]
struct Episode {
    since: Instant,
    /// The committed position at its start: the episode ends when it becomes readable.
    target: u64,
    readable: u64,
    committed: u64,
    blocker: Option<Blocker>,
    warned: bool,
}

impl HeadWatch {
    /// Records one look at the head, and logs when it has been held back for `threshold`.
    pub(crate) fn observe(&mut self, head: &HeadStatus, threshold: Duration, now: Instant) {
        self.threshold = Some(threshold);
        if !head.is_held_back() {
            if self.episode.take().is_some_and(|e| e.warned) {
                tracing::info!(readable = head.readable, "the readable head moves again");
            }
            return;
        }
        // An episode ends once what was committed at its start is readable; what is
        // committed and not readable now starts another.
        let episode = match self.episode.take() {
            Some(e) if head.readable < e.target => e,
            _ => Episode {
                since: now,
                target: head.committed,
                readable: head.readable,
                committed: head.committed,
                blocker: None,
                warned: false,
            },
        };
        let mut episode = Episode {
            readable: head.readable,
            committed: head.committed,
            blocker: head.held_back_by.clone(),
            ..episode
        };
        let held_for = now - episode.since;
        if held_for >= threshold && !episode.warned {
            episode.warned = true;
            tracing::warn!(
                readable = head.readable,
                committed = head.committed,
                held_for = ?held_for,
                blocker = %episode.blocker.as_ref().map_or_else(|| "unknown".to_owned(), ToString::to_string),
                "an open transaction holds the store's readable head back: committed events \
                 are not delivered until it ends"
            );
        }
        self.episode = Some(episode);
    }

    /// How long the head has been held back (zero when it is not).
    pub(crate) fn held_for(&self, now: Instant) -> Duration {
        self.episode
            .as_ref()
            .map_or(Duration::ZERO, |e| now - e.since)
    }

    /// The health problem, once the head has been held back for the threshold.
    pub(crate) fn problem(&self, now: Instant) -> Option<HealthProblem> {
        let episode = self.episode.as_ref()?;
        let held_for = now - episode.since;
        (held_for >= self.threshold?).then(|| HealthProblem::HeadHeldBack {
            readable: episode.readable,
            committed: episode.committed,
            for_: held_for,
            blocker: episode.blocker.clone(),
        })
    }
}

/// How often the head is looked at: often enough to report within the threshold.
fn interval(threshold: Duration) -> Duration {
    (threshold / 4).clamp(MIN_INTERVAL, MAX_INTERVAL)
}

/// Looks at the head of `store` until `shutdown`, recording it in `shared`.
pub(crate) async fn watch<S: EventStore>(
    store: S,
    shared: Arc<Shared>,
    options: Arc<RunnerOptions>,
    shutdown: Shutdown,
) {
    let threshold = options.head_held_back_after;
    let mut failing = false;
    loop {
        match store.head_status().await {
            Ok(head) => {
                failing = false;
                shared.observe_head(&head, threshold);
            }
            // The workers' own reads fail too, and report it: one warning per outage.
            Err(error) if !failing => {
                failing = true;
                tracing::warn!(%error, "cannot read the store's head status");
            }
            Err(_) => {}
        }
        tokio::select! {
            () = shutdown.triggered() => return,
            () = tokio::time::sleep(interval(threshold)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocker(pid: u32) -> Blocker {
        Blocker {
            pid: Some(pid),
            ..Blocker::default()
        }
    }

    #[test]
    fn a_held_back_head_is_a_problem_after_the_threshold_only() {
        let threshold = Duration::from_secs(30);
        let start = Instant::now();
        let mut watch = HeadWatch::default();
        watch.observe(&HeadStatus::settled(10), threshold, start);
        assert_eq!(watch.problem(start), None);

        let held = HeadStatus::held_back(10, 20, Some(blocker(7)));
        watch.observe(&held, threshold, start);
        let later = start + Duration::from_secs(29);
        watch.observe(&held, threshold, later);
        assert_eq!(watch.problem(later), None);
        assert_eq!(watch.held_for(later), Duration::from_secs(29));

        let past = start + Duration::from_secs(31);
        let more = HeadStatus::held_back(10, 25, Some(blocker(7)));
        watch.observe(&more, threshold, past);
        assert_eq!(
            watch.problem(past),
            Some(HealthProblem::HeadHeldBack {
                readable: 10,
                committed: 25,
                for_: Duration::from_secs(31),
                blocker: Some(blocker(7)),
            })
        );

        watch.observe(&HeadStatus::settled(25), threshold, past);
        assert_eq!(watch.problem(past), None);
        assert_eq!(watch.held_for(past), Duration::ZERO);
    }

    /// Under a steady stream of appends the head is briefly behind at every look, each time
    /// by other transactions: that is no stall.
    #[test]
    fn short_holds_one_after_another_are_no_stall() {
        let threshold = Duration::from_secs(30);
        let start = Instant::now();
        let mut watch = HeadWatch::default();
        for second in 0..60u64 {
            // What was committed at the last look is readable now; newer commits wait.
            let head = HeadStatus::held_back(second * 10, second * 10 + 10, None);
            let now = start + Duration::from_secs(second);
            watch.observe(&head, threshold, now);
            assert_eq!(watch.problem(now), None, "at {second} s");
        }
    }
}
