//! What a repository keeps between commands: the aggregate cache, and how well deciding
//! uncached commands on the initial state has paid off.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::stream::StreamId;
use crate::tenant::TenantId;

use super::Loaded;

/// The cached state of one stream. A command holds its lock from decision to append, so
/// commands on one aggregate in one process run one after the other instead of racing; the
/// state is taken out while a command runs and put back only after its append succeeded.
pub(super) type Slot<A> = Arc<tokio::sync::Mutex<Option<Loaded<A>>>>;

/// A cache key: the tenant the stream belongs to (none on a single-tenant store) and the
/// stream, since two tenants' streams may share an id.
type Key = (Option<TenantId>, StreamId);

/// A bounded map from stream to [`Slot`], shared by the clones of a repository.
pub(super) struct AggregateCache<A> {
    slots: Option<quick_cache::sync::Cache<Key, Slot<A>>>,
    capacity: usize,
}

impl<A> AggregateCache<A> {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            slots: (capacity > 0).then(|| quick_cache::sync::Cache::new(capacity)),
            capacity,
        }
    }

    pub(super) fn capacity(&self) -> usize {
        self.capacity
    }

    /// The slot of `tenant`'s `stream`, created empty when it has none; `None` when the
    /// cache is off.
    pub(super) fn slot(&self, tenant: Option<&TenantId>, stream: &StreamId) -> Option<Slot<A>> {
        let slots = self.slots.as_ref()?;
        let key = (tenant.cloned(), stream.clone());
        // Tasks asking for the same new slot at once get one slot, so that they queue.
        let slot =
            slots.get_or_insert_with(&key, || Ok::<_, std::convert::Infallible>(Arc::default()));
        slot.ok()
    }

    /// How many streams have a slot (full or empty).
    pub(super) fn len(&self) -> usize {
        self.slots.as_ref().map_or(0, quick_cache::sync::Cache::len)
    }
}

/// Whether a command on an aggregate that is not cached is first decided on the initial
/// state and appended as the stream's first events, one round trip when the stream is new.
///
/// When the stream exists, the append fails on the version check, and the command is decided
/// again on the loaded state: correct, but the failed append was a wasted round trip. A
/// rejection or an empty outcome on the initial state is never trusted: the stream is loaded
/// and the command decided again, at no extra cost (that load is what a command without
/// speculation does anyway).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Speculation {
    /// Speculate while it pays: when most recent speculative appends of this repository
    /// found the stream existing, stop, and try one uncached command in 32 to notice when
    /// creates come back.
    #[default]
    Adaptive,
    /// Speculate on every uncached command.
    Always,
    /// Always load the stream first.
    Never,
}

/// The recent rate of speculative appends that conflicted, as an exponentially weighted
/// average in 1/1024ths, and a counter of uncached commands for the probes.
#[derive(Debug, Default)]
pub(super) struct SpeculationStats {
    conflict_rate: AtomicU32,
    uncached: AtomicU32,
}

/// Above this conflict rate, adaptive speculation stops (but for probes).
const STOP_RATE: u32 = 512;
/// One uncached command in this many speculates anyway while stopped.
const PROBE_EVERY: u32 = 32;

impl SpeculationStats {
    pub(super) fn should_speculate(&self, mode: Speculation) -> bool {
        match mode {
            Speculation::Always => true,
            Speculation::Never => false,
            Speculation::Adaptive => {
                let n = self.uncached.fetch_add(1, Ordering::Relaxed);
                self.conflict_rate.load(Ordering::Relaxed) < STOP_RATE || n % PROBE_EVERY == 0
            }
        }
    }

    /// Records whether a speculative append conflicted: each outcome moves the rate an
    /// eighth of the way towards 0 or 1024.
    pub(super) fn record(&self, conflicted: bool) {
        let target = if conflicted { 1024 } else { 0 };
        // A lost update between two recording tasks only drops one sample.
        let rate = self.conflict_rate.load(Ordering::Relaxed);
        let next = (rate * 7 + target) / 8;
        self.conflict_rate.store(next, Ordering::Relaxed);
    }

    /// The recent conflict rate, 0.0 to 1.0.
    pub(super) fn conflict_rate(&self) -> f64 {
        f64::from(self.conflict_rate.load(Ordering::Relaxed)) / 1024.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adaptive_speculation_stops_after_conflicts_and_probes() {
        let stats = SpeculationStats::default();
        assert!(stats.should_speculate(Speculation::Adaptive));
        for _ in 0..20 {
            stats.record(true);
        }
        assert!(stats.conflict_rate() > 0.9, "{}", stats.conflict_rate());
        let speculated = (0..PROBE_EVERY * 4)
            .filter(|_| stats.should_speculate(Speculation::Adaptive))
            .count();
        assert_eq!(speculated, 4, "one probe in {PROBE_EVERY}");
        for _ in 0..20 {
            stats.record(false);
        }
        assert!(stats.should_speculate(Speculation::Adaptive));
        assert!(stats.should_speculate(Speculation::Always));
        assert!(!stats.should_speculate(Speculation::Never));
    }

    #[test]
    fn a_cache_of_zero_entries_is_off() {
        let cache = AggregateCache::<()>::new(0);
        assert!(
            cache
                .slot(None, &StreamId::new("c", "1").unwrap())
                .is_none()
        );
        let cache = AggregateCache::<()>::new(4);
        let stream = StreamId::new("c", "1").unwrap();
        let slot = cache.slot(None, &stream).unwrap();
        assert!(Arc::ptr_eq(&slot, &cache.slot(None, &stream).unwrap()));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn tenants_have_slots_of_their_own() {
        let cache = AggregateCache::<()>::new(4);
        let stream = StreamId::new("c", "1").unwrap();
        let acme = TenantId::new("acme").unwrap();
        let globex = TenantId::new("globex").unwrap();
        let of_acme = cache.slot(Some(&acme), &stream).unwrap();
        assert!(Arc::ptr_eq(
            &of_acme,
            &cache.slot(Some(&acme), &stream).unwrap()
        ));
        assert!(!Arc::ptr_eq(
            &of_acme,
            &cache.slot(Some(&globex), &stream).unwrap()
        ));
        assert!(!Arc::ptr_eq(&of_acme, &cache.slot(None, &stream).unwrap()));
        assert_eq!(cache.len(), 3);
    }
}
