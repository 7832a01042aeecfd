//! What the projection and process-manager runtimes store besides events: checkpoints,
//! leases and parked (dead-letter) events, as traits with in-memory implementations.
//!
//! Every partition of a projection or process manager is processed by the one worker that
//! holds its [`Lease`]. Each acquisition of a lease gets a higher [`Lease::fence`]; a worker
//! [claims](CheckpointStore::claim) the checkpoint with it before reading, and a
//! [save](CheckpointStore::save) succeeds only with the fence of the last claim. So a stale
//! worker, one whose lease expired and was taken over, cannot move a checkpoint any more: its
//! save fails with [`CoordinationError::Fenced`].
//!
//! Names of projections and process managers share one namespace in these stores.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

mod memory;
mod split;

pub use memory::MemoryCoordination;
pub use split::SplitCoordination;

use crate::error::BoxError;
pub use crate::process_manager::{
    Deadline, InstanceStatus, MemoryProcessStore, PendingCommand, ProcessInstance, ProcessStore,
};
use crate::stream::StreamId;

/// What the checkpoint, lease, dead-letter and process stores report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoordinationError {
    /// A newer lease holder claimed the checkpoint: the caller's lease was lost.
    #[error(
        "`{name}` partition {partition} was claimed with fence {current}; fence {fence} is stale"
    )]
    Fenced {
        /// The projection or process manager.
        name: String,
        /// The partition.
        partition: u32,
        /// The caller's fence.
        fence: u64,
        /// The fence of the current claim.
        current: u64,
    },
    /// A process instance was changed by someone else since it was loaded.
    #[error(
        "process `{name}` instance `{key}` changed concurrently (expected revision {expected}, found {actual})"
    )]
    InstanceConflict {
        /// The process manager.
        name: String,
        /// The instance's correlation key.
        key: String,
        /// The revision the writer loaded.
        expected: u64,
        /// The stored revision.
        actual: u64,
    },
    /// JSON encoding or decoding failed.
    #[error("cannot encode or decode {what}: {source}")]
    Json {
        /// What was encoded or decoded.
        what: &'static str,
        /// What serde reported.
        source: serde_json::Error,
    },
    /// The backend failed (connection, I/O, database error).
    #[error("coordination store backend error: {0}")]
    Backend(#[source] BoxError),
}

impl CoordinationError {
    /// Whether the caller lost its lease (or its instance revision): retrying with the same
    /// lease cannot succeed.
    pub fn is_fenced(&self) -> bool {
        matches!(
            self,
            CoordinationError::Fenced { .. } | CoordinationError::InstanceConflict { .. }
        )
    }
}

/// A held lease on one partition of a projection or process manager.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Lease {
    /// The projection or process manager.
    pub name: String,
    /// The partition.
    pub partition: u32,
    /// Who holds it: a worker id.
    pub holder: String,
    /// Increases with every acquisition by a new holder (a fencing token).
    pub fence: u64,
}

impl Lease {
    /// A lease value (for stores that build one from their rows).
    pub fn new(
        name: impl Into<String>,
        partition: u32,
        holder: impl Into<String>,
        fence: u64,
    ) -> Self {
        Self {
            name: name.into(),
            partition,
            holder: holder.into(),
            fence,
        }
    }
}

/// Time-limited exclusive claims on partitions, so one worker per partition is active across
/// processes, with failover when a holder stops renewing.
pub trait LeaseStore: Clone + Send + Sync + 'static {
    /// Takes the lease on `(name, partition)` for `ttl` when it is free, expired, or already
    /// held by `holder` (then it is renewed and keeps its fence); `None` when someone else
    /// holds it. A new holder gets a fence higher than any before it.
    fn acquire(
        &self,
        name: &str,
        partition: u32,
        holder: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<Option<Lease>, CoordinationError>> + Send;

    /// Extends a held lease by `ttl` from now; `false` when it was lost (expired and taken,
    /// or released).
    fn renew(
        &self,
        lease: &Lease,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, CoordinationError>> + Send;

    /// Gives the lease up, if still held with this fence.
    fn release(&self, lease: &Lease) -> impl Future<Output = Result<(), CoordinationError>> + Send;

    /// The current, unexpired holder of `(name, partition)`.
    fn holder(
        &self,
        name: &str,
        partition: u32,
    ) -> impl Future<Output = Result<Option<Lease>, CoordinationError>> + Send;

    /// Records that worker `member` runs `name`, for `ttl` (a heartbeat). Workers divide the
    /// partitions of `name` among its live members.
    fn join(
        &self,
        name: &str,
        member: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<(), CoordinationError>> + Send;

    /// The members of `name` whose last [`join`](Self::join) has not expired, sorted.
    fn members(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Vec<String>, CoordinationError>> + Send;

    /// Removes `member` from `name` at once (on a clean shutdown).
    fn leave(
        &self,
        name: &str,
        member: &str,
    ) -> impl Future<Output = Result<(), CoordinationError>> + Send;
}

/// Positions up to which a projection or process manager partition has handled events.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// use std::time::Duration;
/// use factum::coordination::{CheckpointStore, LeaseStore, MemoryCheckpointStore, MemoryLeaseStore};
///
/// let (leases, checkpoints) = (MemoryLeaseStore::new(), MemoryCheckpointStore::new());
/// let ttl = Duration::from_secs(30);
/// let old = leases.acquire("order_list", 0, "worker-1", ttl).await?.expect("free");
/// assert_eq!(checkpoints.claim(&old).await?, 0);
/// checkpoints.save(&old, 42).await?;
///
/// // worker-1 stalls, its lease expires, worker-2 takes over and claims the checkpoint.
/// leases.release(&old).await?;
/// let new = leases.acquire("order_list", 0, "worker-2", ttl).await?.expect("free");
/// assert_eq!(checkpoints.claim(&new).await?, 42);
///
/// // worker-1 wakes up: it can no longer move the checkpoint.
/// assert!(checkpoints.save(&old, 50).await.is_err_and(|e| e.is_fenced()));
/// assert_eq!(checkpoints.load("order_list", 0).await?, 42);
/// # Ok::<(), factum::coordination::CoordinationError>(())
/// # }).unwrap();
/// ```
pub trait CheckpointStore: Clone + Send + Sync + 'static {
    /// The saved position of `(name, partition)`, 0 when none was saved.
    fn load(
        &self,
        name: &str,
        partition: u32,
    ) -> impl Future<Output = Result<u64, CoordinationError>> + Send;

    /// Fences out earlier lease holders and returns the saved position. Fails with
    /// [`CoordinationError::Fenced`] when a later fence already claimed it.
    fn claim(&self, lease: &Lease) -> impl Future<Output = Result<u64, CoordinationError>> + Send;

    /// Saves `position` if `lease` made the last claim; otherwise
    /// [`CoordinationError::Fenced`] and nothing changes. The position may move back (a
    /// rebuild resets it to 0).
    fn save(
        &self,
        lease: &Lease,
        position: u64,
    ) -> impl Future<Output = Result<(), CoordinationError>> + Send;
}

/// Why an event is parked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ParkReason {
    /// Its handler failed on every attempt.
    Failed {
        /// The last error.
        error: String,
        /// How many times it was tried.
        attempts: u32,
    },
    /// An earlier event of the same stream is parked; this one waits behind it to keep the
    /// stream's order.
    Waiting {
        /// The position of the parked event it waits behind.
        behind: u64,
    },
}

/// An event set aside by a projection: a dead letter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ParkedEvent {
    /// The projection.
    pub name: String,
    /// Its partition.
    pub partition: u32,
    /// The event's global position.
    pub position: u64,
    /// The event's id.
    pub event_id: Uuid,
    /// The event's stream.
    pub stream_id: StreamId,
    /// The event's stored type.
    pub event_type: String,
    /// Why it is parked.
    pub reason: ParkReason,
    /// When it was parked.
    pub parked_at: DateTime<Utc>,
    /// Whether a replay was requested and not yet done.
    pub replay_requested: bool,
}

impl ParkedEvent {
    /// An entry parked now, without a replay request (for stores that build one from their
    /// rows; `parked_at` and `replay_requested` are public fields).
    pub fn new(
        name: impl Into<String>,
        partition: u32,
        position: u64,
        event_id: Uuid,
        stream_id: StreamId,
        event_type: impl Into<String>,
        reason: ParkReason,
    ) -> Self {
        Self {
            name: name.into(),
            partition,
            position,
            event_id,
            stream_id,
            event_type: event_type.into(),
            reason,
            parked_at: Utc::now(),
            replay_requested: false,
        }
    }
}

/// Parked events of projections, with replay requests.
pub trait DeadLetterStore: Clone + Send + Sync + 'static {
    /// Stores `event`, replacing the entry with the same name and position.
    fn park(
        &self,
        event: &ParkedEvent,
    ) -> impl Future<Output = Result<(), CoordinationError>> + Send;

    /// Every parked event of `name`, by position.
    fn list(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Vec<ParkedEvent>, CoordinationError>> + Send;

    /// The parked events of one partition of `name`, by position.
    fn list_partition(
        &self,
        name: &str,
        partition: u32,
    ) -> impl Future<Output = Result<Vec<ParkedEvent>, CoordinationError>> + Send;

    /// Marks the parked events of `name` (of one stream, or all) for replay; returns how many
    /// were marked. The worker holding each partition replays them in order.
    fn request_replay(
        &self,
        name: &str,
        stream: Option<&StreamId>,
    ) -> impl Future<Output = Result<usize, CoordinationError>> + Send;

    /// Removes the entry at `position` of `name` (after a successful replay).
    fn remove(
        &self,
        name: &str,
        position: u64,
    ) -> impl Future<Output = Result<(), CoordinationError>> + Send;

    /// Removes every entry of `name` (before a rebuild).
    fn clear(&self, name: &str) -> impl Future<Output = Result<(), CoordinationError>> + Send;
}

/// Where projections and process managers coordinate: checkpoints, leases, dead letters and
/// process instances, behind one value that runners take whole. `MemoryCoordination` keeps
/// them in memory; `factum_postgres::PgCoordination` in the store's database, shared by
/// every process of the application.
///
/// Implemented for every type that implements the four stores; store authors implement
/// those.
pub trait Coordination: CheckpointStore + LeaseStore + DeadLetterStore + ProcessStore {}

impl<T: CheckpointStore + LeaseStore + DeadLetterStore + ProcessStore> Coordination for T {}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section below leaves the data consistent before any step that could
    // panic, so a poisoned lock still guards valid data.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Leases held in memory, expiring on tokio's clock (so paused time in tests moves them).
/// Cloning shares the leases.
#[derive(Clone, Debug, Default)]
pub struct MemoryLeaseStore {
    inner: Arc<Mutex<HashMap<(String, u32), MemoryLease>>>,
    members: Arc<Mutex<HashMap<String, BTreeMap<String, tokio::time::Instant>>>>,
}

#[derive(Debug)]
struct MemoryLease {
    holder: Option<String>,
    fence: u64,
    expires_at: tokio::time::Instant,
}

impl MemoryLeaseStore {
    /// No leases.
    pub fn new() -> Self {
        Self::default()
    }
}

impl LeaseStore for MemoryLeaseStore {
    async fn acquire(
        &self,
        name: &str,
        partition: u32,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, CoordinationError> {
        let now = tokio::time::Instant::now();
        let mut leases = lock(&self.inner);
        let entry = leases
            .entry((name.to_owned(), partition))
            .or_insert(MemoryLease {
                holder: None,
                fence: 0,
                expires_at: now,
            });
        let held_by_other = entry
            .holder
            .as_deref()
            .is_some_and(|h| h != holder && entry.expires_at > now);
        if held_by_other {
            return Ok(None);
        }
        let renewing = entry.holder.as_deref() == Some(holder) && entry.expires_at > now;
        if !renewing {
            entry.fence += 1;
            entry.holder = Some(holder.to_owned());
        }
        entry.expires_at = now + ttl;
        Ok(Some(Lease::new(name, partition, holder, entry.fence)))
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<bool, CoordinationError> {
        let now = tokio::time::Instant::now();
        let mut leases = lock(&self.inner);
        let Some(entry) = leases.get_mut(&(lease.name.clone(), lease.partition)) else {
            return Ok(false);
        };
        let held = entry.fence == lease.fence
            && entry.holder.as_deref() == Some(lease.holder.as_str())
            && entry.expires_at > now;
        if held {
            entry.expires_at = now + ttl;
        }
        Ok(held)
    }

    async fn release(&self, lease: &Lease) -> Result<(), CoordinationError> {
        let mut leases = lock(&self.inner);
        if let Some(entry) = leases.get_mut(&(lease.name.clone(), lease.partition)) {
            if entry.fence == lease.fence {
                entry.holder = None;
            }
        }
        Ok(())
    }

    async fn join(&self, name: &str, member: &str, ttl: Duration) -> Result<(), CoordinationError> {
        let expires = tokio::time::Instant::now() + ttl;
        lock(&self.members)
            .entry(name.to_owned())
            .or_default()
            .insert(member.to_owned(), expires);
        Ok(())
    }

    async fn members(&self, name: &str) -> Result<Vec<String>, CoordinationError> {
        let now = tokio::time::Instant::now();
        Ok(lock(&self.members)
            .get(name)
            .map(|m| {
                m.iter()
                    .filter(|(_, expires)| **expires > now)
                    .map(|(member, _)| member.clone())
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn leave(&self, name: &str, member: &str) -> Result<(), CoordinationError> {
        if let Some(m) = lock(&self.members).get_mut(name) {
            m.remove(member);
        }
        Ok(())
    }

    async fn holder(&self, name: &str, partition: u32) -> Result<Option<Lease>, CoordinationError> {
        let now = tokio::time::Instant::now();
        let leases = lock(&self.inner);
        Ok(leases
            .get(&(name.to_owned(), partition))
            .filter(|l| l.expires_at > now)
            .and_then(|l| {
                l.holder
                    .as_deref()
                    .map(|h| Lease::new(name, partition, h, l.fence))
            }))
    }
}

/// Checkpoints held in memory. Cloning shares them.
#[derive(Clone, Debug, Default)]
pub struct MemoryCheckpointStore {
    inner: Arc<Mutex<HashMap<(String, u32), StoredCheckpoint>>>,
}

#[derive(Debug, Default)]
struct StoredCheckpoint {
    position: u64,
    fence: u64,
}

impl MemoryCheckpointStore {
    /// No checkpoints.
    pub fn new() -> Self {
        Self::default()
    }
}

impl CheckpointStore for MemoryCheckpointStore {
    async fn load(&self, name: &str, partition: u32) -> Result<u64, CoordinationError> {
        Ok(lock(&self.inner)
            .get(&(name.to_owned(), partition))
            .map_or(0, |c| c.position))
    }

    async fn claim(&self, lease: &Lease) -> Result<u64, CoordinationError> {
        let mut all = lock(&self.inner);
        let stored = all
            .entry((lease.name.clone(), lease.partition))
            .or_default();
        if stored.fence > lease.fence {
            return Err(CoordinationError::Fenced {
                name: lease.name.clone(),
                partition: lease.partition,
                fence: lease.fence,
                current: stored.fence,
            });
        }
        stored.fence = lease.fence;
        Ok(stored.position)
    }

    async fn save(&self, lease: &Lease, position: u64) -> Result<(), CoordinationError> {
        let mut all = lock(&self.inner);
        let stored = all
            .entry((lease.name.clone(), lease.partition))
            .or_default();
        if stored.fence != lease.fence {
            return Err(CoordinationError::Fenced {
                name: lease.name.clone(),
                partition: lease.partition,
                fence: lease.fence,
                current: stored.fence,
            });
        }
        stored.position = position;
        Ok(())
    }
}

/// Parked events held in memory. Cloning shares them.
#[derive(Clone, Debug, Default)]
pub struct MemoryDeadLetterStore {
    inner: Arc<Mutex<HashMap<String, BTreeMap<u64, ParkedEvent>>>>,
}

impl MemoryDeadLetterStore {
    /// No parked events.
    pub fn new() -> Self {
        Self::default()
    }
}

impl DeadLetterStore for MemoryDeadLetterStore {
    async fn park(&self, event: &ParkedEvent) -> Result<(), CoordinationError> {
        lock(&self.inner)
            .entry(event.name.clone())
            .or_default()
            .insert(event.position, event.clone());
        Ok(())
    }

    async fn list(&self, name: &str) -> Result<Vec<ParkedEvent>, CoordinationError> {
        Ok(lock(&self.inner)
            .get(name)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default())
    }

    async fn list_partition(
        &self,
        name: &str,
        partition: u32,
    ) -> Result<Vec<ParkedEvent>, CoordinationError> {
        Ok(lock(&self.inner)
            .get(name)
            .map(|m| {
                m.values()
                    .filter(|p| p.partition == partition)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn request_replay(
        &self,
        name: &str,
        stream: Option<&StreamId>,
    ) -> Result<usize, CoordinationError> {
        let mut all = lock(&self.inner);
        let Some(parked) = all.get_mut(name) else {
            return Ok(0);
        };
        let mut marked = 0;
        for p in parked.values_mut() {
            if stream.is_none_or(|s| *s == p.stream_id) {
                p.replay_requested = true;
                marked += 1;
            }
        }
        Ok(marked)
    }

    async fn remove(&self, name: &str, position: u64) -> Result<(), CoordinationError> {
        if let Some(parked) = lock(&self.inner).get_mut(name) {
            parked.remove(&position);
        }
        Ok(())
    }

    async fn clear(&self, name: &str) -> Result<(), CoordinationError> {
        lock(&self.inner).remove(name);
        Ok(())
    }
}

/// Which partitions of one projection or process manager this worker should hold: the live
/// members of its name, sorted, take the partitions in turn (partition `p` goes to member
/// `p % members`). Kept current by [`membership`]; until a view exists, or when this worker
/// is missing from it, every partition is worth trying (the lease decides).
#[derive(Clone, Debug)]
pub(crate) struct Assignment {
    members: tokio::sync::watch::Receiver<Vec<String>>,
    me: String,
    partitions: u32,
}

impl Assignment {
    pub(crate) fn new(
        members: tokio::sync::watch::Receiver<Vec<String>>,
        me: String,
        partitions: u32,
    ) -> Self {
        Self {
            members,
            me,
            partitions,
        }
    }

    /// Whether this worker should hold `partition` in the current view.
    pub(crate) fn owns(&self, partition: u32) -> bool {
        let members = self.members.borrow();
        let Some(rank) = members.iter().position(|m| *m == self.me) else {
            return true;
        };
        let count = u32::try_from(members.len()).unwrap_or(u32::MAX);
        usize::try_from(partition % count).is_ok_and(|r| r == rank)
    }

    /// Whether another worker should hold `partition` now.
    pub(crate) fn yields(&self, partition: u32) -> bool {
        partition < self.partitions && !self.owns(partition)
    }

    /// Completes when the view changes (never, once the membership task is gone).
    pub(crate) async fn changed(&mut self) {
        if self.members.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Completes when this worker should give `partition` up.
    pub(crate) async fn lost(&mut self, partition: u32) {
        while !self.yields(partition) {
            self.changed().await;
        }
    }
}

/// Keeps `me` a member of `name` and publishes the live members, until `shutdown`; then
/// leaves.
pub(crate) async fn membership<L: LeaseStore>(
    leases: L,
    name: String,
    me: String,
    ttl: Duration,
    view: tokio::sync::watch::Sender<Vec<String>>,
    shutdown: crate::subscription::Shutdown,
) {
    loop {
        let refreshed = match leases.join(&name, &me, ttl).await {
            Ok(()) => leases.members(&name).await,
            Err(e) => Err(e),
        };
        match refreshed {
            Ok(members) => {
                view.send_if_modified(|current| {
                    let changed = *current != members;
                    if changed {
                        tracing::info!(name = %name, members = ?members, "members changed");
                        *current = members;
                    }
                    changed
                });
            }
            Err(error) => tracing::warn!(name = %name, %error, "could not refresh the members"),
        }
        tokio::select! {
            () = shutdown.triggered() => break,
            () = tokio::time::sleep(ttl / 3) => {}
        }
    }
    if let Err(error) = leases.leave(&name, &me).await {
        tracing::warn!(name = %name, %error, "could not leave the members");
    }
}

/// The partition of `stream` among `partitions`: FNV-1a (64-bit) of the stream name, modulo
/// `partitions`. Stable across processes, platforms and releases (unlike std's randomly
/// seeded hasher), so every process agrees on which partition owns a stream.
///
/// ```
/// assert_eq!(factum::coordination::partition_of("order-o-1", 1), 0);
/// assert_eq!(factum::coordination::partition_of("order-o-1", 8), factum::coordination::partition_of("order-o-1", 8));
/// assert!(factum::coordination::partition_of("order-o-1", 8) < 8);
/// ```
pub fn partition_of(key: &str, partitions: u32) -> u32 {
    if partitions <= 1 {
        return 0;
    }
    let hash = fnv1a64(key.as_bytes());
    // The remainder is below `partitions`, so it fits in u32.
    u32::try_from(hash % u64::from(partitions)).unwrap_or(0)
}

/// FNV-1a, 64-bit.
fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET, |hash, b| (hash ^ u64::from(*b)).wrapping_mul(PRIME))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_reference_values() {
        // Reference values of FNV-1a 64.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn partitions_spread_streams() {
        let mut counts = [0u32; 4];
        for i in 0..400 {
            counts[partition_of(&format!("order-{i}"), 4) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 50), "{counts:?}");
        assert_eq!(partition_of("anything", 0), 0);
    }
}
