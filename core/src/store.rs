//! The event store contract that every store implements.

use std::future::Future;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::StoreError;
use crate::event::RecordedEvent;
use crate::stream::{ExpectedVersion, StreamId};

pub use crate::command_log::{CommandOutcome, CommandRecord, storable_message};
pub use crate::error::{DecodeError, EventPart, StreamIdError};
pub use crate::event::{Decoded, DecodedIter, NewEvent, Payload};
pub use crate::head::{Blocker, HeadStatus};
pub use crate::memory::{MAX_EVENT_TYPE_LEN, check_retry, validate_batch, validate_snapshot};
pub use crate::repository::derived_event_id;
pub use crate::stream::{MAX_STREAM_ID_LEN, validate_category};

/// What an append stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendResult {
    /// The stream's version after the append.
    pub version: u64,
    /// The version of the first appended event (`version + 1` when nothing was appended).
    pub first_version: u64,
    /// The global position of the first appended event (0 when nothing was appended).
    pub first_position: u64,
    /// The global position of the last appended event (0 when nothing was appended).
    pub last_position: u64,
    /// Whether these events were already stored by an earlier append with the same event
    /// ids and content, so this call stored nothing (an idempotent retry).
    pub replayed: bool,
}

/// Which events of one stream to read, oldest first.
///
/// ```
/// use factum::store::StreamRead;
/// let tail = StreamRead::from_version(101).to_version(200);
/// assert_eq!(tail.from, 101);
/// assert_eq!(tail.to, Some(200));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct StreamRead {
    /// First version to read (inclusive; versions start at 1).
    pub from: u64,
    /// Last version to read (inclusive), or to the end.
    pub to: Option<u64>,
    /// Only events recorded at or before this time.
    pub until: Option<DateTime<Utc>>,
    /// At most this many events.
    pub limit: Option<usize>,
}

impl StreamRead {
    /// The whole stream.
    pub fn all() -> Self {
        Self::from_version(1)
    }

    /// From `version` (inclusive) to the end.
    pub fn from_version(version: u64) -> Self {
        Self {
            from: version.max(1),
            ..Self::default()
        }
    }

    /// Stops after `version` (inclusive).
    #[must_use]
    pub fn to_version(mut self, version: u64) -> Self {
        self.to = Some(version);
        self
    }

    /// Stops at the last event recorded at or before `time`.
    #[must_use]
    pub fn until(mut self, time: DateTime<Utc>) -> Self {
        self.until = Some(time);
        self
    }

    /// Reads at most `limit` events.
    #[must_use]
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Whether `event` falls inside this read (the version and time bounds).
    pub fn contains(&self, event: &RecordedEvent) -> bool {
        event.stream_version >= self.from
            && self.to.is_none_or(|to| event.stream_version <= to)
            && self.until.is_none_or(|t| event.recorded_at <= t)
    }
}

/// One partition of the streams split into `count` partitions: the streams whose
/// [`partition_of`](crate::coordination::partition_of) is `index`, the same split the
/// projection runners use, so a partition's reader sees exactly its worker's streams.
///
/// ```
/// use factum::store::StreamPartition;
/// let second = StreamPartition::new(1, 4)?;
/// assert_eq!((second.index(), second.count()), (1, 4));
/// assert!(StreamPartition::new(4, 4).is_err());
/// # Ok::<(), factum::store::PartitionError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StreamPartition {
    index: u32,
    count: u32,
}

/// A partition that does not exist: no partitions, or an index not below the count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "there is no partition {index} of {count}: the index must be below the count, and the count at least 1"
)]
pub struct PartitionError {
    /// The index asked for.
    pub index: u32,
    /// The number of partitions asked for.
    pub count: u32,
}

impl StreamPartition {
    /// Partition `index` (from 0) of `count`.
    pub fn new(index: u32, count: u32) -> Result<Self, PartitionError> {
        if count == 0 || index >= count {
            return Err(PartitionError { index, count });
        }
        Ok(Self { index, count })
    }

    /// Its index, below [`count`](Self::count).
    pub fn index(self) -> u32 {
        self.index
    }

    /// The number of partitions.
    pub fn count(self) -> u32 {
        self.count
    }

    /// Whether `stream` belongs to this partition.
    pub fn contains(self, stream: &StreamId) -> bool {
        crate::coordination::partition_of(stream.as_str(), self.count) == self.index
    }
}

/// Which events to read across all streams, in global order.
///
/// ```
/// use factum::store::{ReadAll, StreamPartition};
/// let batch = ReadAll::after(0).limit(500).event_types(["OrderPlaced"]);
/// assert_eq!(batch.limit, 500);
/// // Only the streams of partition 1 of 4.
/// let mine = ReadAll::after(0).partition(StreamPartition::new(1, 4)?);
/// assert_eq!(mine.partition.map(|p| p.index()), Some(1));
/// # Ok::<(), factum::store::PartitionError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReadAll {
    /// Read events whose position is greater than this.
    pub after: u64,
    /// At most this many events.
    pub limit: usize,
    /// Only these categories (all when empty).
    pub categories: Vec<String>,
    /// Only these event types (all when empty).
    pub event_types: Vec<String>,
    /// Only the streams of this partition (all when `None`). A store reads only the
    /// partition's events, not the whole log, so that N partitions read the log once in
    /// total; the ordering bound is the same as without it.
    pub partition: Option<StreamPartition>,
}

impl ReadAll {
    /// Default batch size.
    pub const DEFAULT_LIMIT: usize = 1000;

    /// Events after `position`, in batches of [`ReadAll::DEFAULT_LIMIT`].
    pub fn after(position: u64) -> Self {
        Self {
            after: position,
            limit: Self::DEFAULT_LIMIT,
            categories: Vec::new(),
            event_types: Vec::new(),
            partition: None,
        }
    }

    /// Sets the batch size.
    #[must_use]
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// Only events of streams in these categories.
    #[must_use]
    pub fn categories<I, S>(mut self, categories: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.categories = categories.into_iter().map(Into::into).collect();
        self
    }

    /// Only events of these types.
    #[must_use]
    pub fn event_types<I, S>(mut self, types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.event_types = types.into_iter().map(Into::into).collect();
        self
    }

    /// Only events of the streams of `partition`.
    #[must_use]
    pub fn partition(mut self, partition: StreamPartition) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Whether `event` passes the category, type and partition filters.
    pub fn matches(&self, event: &RecordedEvent) -> bool {
        self.partition.is_none_or(|p| p.contains(&event.stream_id))
            && (self.categories.is_empty()
                || self
                    .categories
                    .iter()
                    .any(|c| c == event.stream_id.category()))
            && (self.event_types.is_empty() || self.event_types.contains(&event.event_type))
    }
}

/// What replaying an aggregate needs of a stored event: no id, metadata or time.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplayEvent {
    /// Its version in the stream.
    pub stream_version: u64,
    /// Its global position (to name it in errors).
    pub position: u64,
    /// Stored type name.
    pub event_type: String,
    /// Schema version of the payload.
    pub schema_version: u32,
    /// The event's data.
    pub payload: Payload,
}

impl From<RecordedEvent> for ReplayEvent {
    fn from(e: RecordedEvent) -> Self {
        Self {
            stream_version: e.stream_version,
            position: e.position,
            event_type: e.event_type,
            schema_version: e.schema_version,
            payload: e.payload,
        }
    }
}

/// What [`EventStore::load_aggregate`] read: a snapshot, and the events after it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AggregateRead {
    /// The latest snapshot at or below the version asked for, if any.
    pub snapshot: Option<Snapshot>,
    /// The events after the snapshot (from version 1 without one), in stream order.
    pub events: Vec<ReplayEvent>,
}

/// A saved aggregate state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The aggregate's stream.
    pub stream_id: StreamId,
    /// The stream version the state reflects.
    pub version: u64,
    /// The schema version of the state type; a snapshot of another version is ignored.
    pub schema_version: u32,
    /// The serialized state.
    pub state: Payload,
    /// When it was taken.
    pub taken_at: DateTime<Utc>,
}

/// An append-only event store with optimistic concurrency and a global order.
///
/// Every implementation must pass the conformance suite in `factum::testing` (feature
/// `testing`). The guarantees:
///
/// - `append` is all-or-nothing and checks `expected` against the stream's version.
/// - Appending events whose ids are already stored, in the same stream with the same
///   content, returns the original result and stores nothing (an idempotent retry); an id
///   stored with other content is [`StoreError::DuplicateEventId`].
/// - Stream versions start at 1 and have no gaps.
/// - A reader following `read_all` positions never skips or reorders a committed event.
/// - Each command id has one first outcome: an append whose first event carries a command
///   id (in its metadata) that has a recorded outcome without events is
///   [`StoreError::CommandDecided`], and [`record_command`](EventStore::record_command)
///   keeps the outcome already there. Both are atomic, so concurrent appends and records of
///   one command id agree on which came first.
pub trait EventStore: Clone + Send + Sync + 'static {
    /// Appends `events` to `stream` atomically if its version matches `expected`.
    fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> impl Future<Output = Result<AppendResult, StoreError>> + Send;

    /// Reads events of one stream, oldest first.
    fn read_stream(
        &self,
        stream: &StreamId,
        read: &StreamRead,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send;

    /// Reads what replaying events of one stream needs, oldest first: the same events as
    /// [`read_stream`](EventStore::read_stream), without ids, metadata and times. Stores
    /// override it to read less; the default maps `read_stream`.
    fn replay_stream(
        &self,
        stream: &StreamId,
        read: &StreamRead,
    ) -> impl Future<Output = Result<Vec<ReplayEvent>, StoreError>> + Send {
        let events = self.read_stream(stream, read);
        async move { Ok(events.await?.into_iter().map(ReplayEvent::from).collect()) }
    }

    /// The stream's current version (0: no stream).
    fn stream_version(
        &self,
        stream: &StreamId,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Reads one batch of events across streams, in global order.
    fn read_all(
        &self,
        read: &ReadAll,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send;

    /// The highest position a reader may read up to now without skipping a commit.
    fn head_position(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// The event with this id, if stored.
    fn event_by_id(
        &self,
        event_id: Uuid,
    ) -> impl Future<Output = Result<Option<RecordedEvent>, StoreError>> + Send;

    /// Saves a snapshot (replacing one of the same stream, schema version and version).
    fn save_snapshot(
        &self,
        snapshot: &Snapshot,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The latest snapshot of `stream` at `schema_version` whose version is at most
    /// `max_version` (any version when `None`).
    fn load_snapshot(
        &self,
        stream: &StreamId,
        schema_version: u32,
        max_version: Option<u64>,
    ) -> impl Future<Output = Result<Option<Snapshot>, StoreError>> + Send;

    /// What loading an aggregate reads: the latest snapshot of `schema_version` at or below
    /// `max_version`, and the events after it up to `max_version` (all events from version 1
    /// when there is no such snapshot). Stores override it to read both at once; the default
    /// runs [`load_snapshot`](Self::load_snapshot), then [`replay_stream`](Self::replay_stream).
    fn load_aggregate(
        &self,
        stream: &StreamId,
        schema_version: u32,
        max_version: Option<u64>,
    ) -> impl Future<Output = Result<AggregateRead, StoreError>> + Send {
        async move {
            let snapshot = self
                .load_snapshot(stream, schema_version, max_version)
                .await?;
            let from = snapshot.as_ref().map_or(0, |s| s.version) + 1;
            if max_version.is_some_and(|max| max < from) {
                return Ok(AggregateRead {
                    snapshot,
                    events: Vec::new(),
                });
            }
            let mut read = StreamRead::from_version(from);
            read.to = max_version;
            let events = self.replay_stream(stream, &read).await?;
            Ok(AggregateRead { snapshot, events })
        }
    }

    // --- Command log: the first outcome of each command id ----------------------------------

    /// Records `record` as the first outcome of its command id, unless the command id has
    /// one already: events appended with it (found by their command id, or by the first
    /// [`derived_event_id`](crate::store::derived_event_id)), or an earlier record. Returns `None`
    /// when `record` was stored, or the outcome that was there first.
    fn record_command(
        &self,
        record: &CommandRecord,
    ) -> impl Future<Output = Result<Option<CommandRecord>, StoreError>> + Send;

    /// The first outcome of `command_id`, if it has one: a record, or events appended with
    /// it.
    fn command_record(
        &self,
        command_id: Uuid,
    ) -> impl Future<Output = Result<Option<CommandRecord>, StoreError>> + Send;

    /// A handle on this store bound to `tenant`, for a store in multi-tenant mode: every call
    /// through it reads only `tenant`'s streams, snapshots and command outcomes, and appends
    /// its events under `tenant` (events without a tenant in their metadata get it; an event
    /// naming another is refused with [`TenantError::Mismatch`](crate::tenant::TenantError)).
    /// The same stream id in two tenants is two streams; global positions stay one order
    /// across tenants.
    ///
    /// The default, for stores without tenants, refuses with
    /// [`TenantError::NotMultiTenant`](crate::tenant::TenantError::NotMultiTenant): a handle
    /// that isolated nothing would be worse than none.
    fn tenant(&self, tenant: &crate::tenant::TenantId) -> Result<Self, StoreError> {
        let _ = tenant;
        Err(crate::tenant::TenantError::NotMultiTenant.into())
    }

    /// The tenant this handle is bound to ([`tenant`](EventStore::tenant)), if any.
    fn bound_tenant(&self) -> Option<&crate::tenant::TenantId> {
        None
    }

    /// A wake-up hint for subscribers: a receiver that changes when new events may be
    /// readable (its value is a head position, possibly stale). Only a hint: subscribers
    /// still poll, since a hint may be lost. `None` when the store has no notifications.
    fn head_hint(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }

    /// The readable head, the committed head and, when they differ for long, what holds the
    /// readable one back. The runners poll it to report a held-back head in health, lag and
    /// metrics. The default reports [`head_position`](EventStore::head_position) as both,
    /// for stores whose committed events are readable at once (the in-memory one).
    fn head_status(&self) -> impl Future<Output = Result<HeadStatus, StoreError>> + Send {
        let head = self.head_position();
        async move { Ok(HeadStatus::settled(head.await?)) }
    }
}
