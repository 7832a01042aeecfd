//! Bounded exponential backoff with jitter, for the runtime's retries and for append
//! conflicts.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// Endless waits whose steps double from `first` up to `max`; each wait is drawn at random
/// between half its step and the step ("equal jitter"), so that workers that failed together
/// do not retry in step, and no wait is longer than `max`.
pub(crate) fn jittered(first: Duration, max: Duration) -> impl Iterator<Item = Duration> {
    let max = max.max(first);
    ExponentialBuilder::new()
        .with_min_delay(first / 2)
        .with_max_delay(max / 2)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
        // Rounding in the multiplication could go a hair past the bound.
        .map(move |wait| wait.min(max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_within_their_step_up_to_the_bound() {
        let first = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        for _ in 0..50 {
            let waits: Vec<Duration> = jittered(first, max).take(12).collect();
            assert_eq!(waits.len(), 12, "endless");
            let mut step = first;
            for wait in &waits {
                assert!(
                    *wait >= step / 2 && *wait <= step,
                    "{wait:?} within {step:?}"
                );
                step = (step * 2).min(max);
            }
            assert!(waits[8..].iter().all(|w| *w >= max / 2), "{waits:?}");
        }
    }

    #[test]
    fn waits_are_jittered() {
        let waits: std::collections::BTreeSet<Duration> = (0..20)
            .filter_map(|_| jittered(Duration::from_secs(1), Duration::from_secs(1)).next())
            .collect();
        assert!(waits.len() > 1, "{waits:?}");
    }

    #[test]
    fn a_maximum_below_the_first_wait_is_the_first_wait() {
        let wait = jittered(Duration::from_secs(2), Duration::from_secs(1))
            .nth(5)
            .unwrap();
        assert!(wait <= Duration::from_secs(2));
    }
}
