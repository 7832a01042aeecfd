//! The in-memory store: the embedded default for examples and unit tests.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::Utc;
use tokio::sync::watch;
use uuid::Uuid;

use crate::command_log::{CommandOutcome, CommandRecord};
use crate::error::{EventPart, StoreError};
use crate::event::{NewEvent, RecordedEvent};
use crate::repository::derived_event_id;
use crate::store::{AppendResult, EventStore, ReadAll, ReplayEvent, Snapshot, StreamRead};
use crate::stream::{ExpectedVersion, StreamId};
use crate::tenant::{TenantError, TenantId, tenant_of_append};

/// Longest event type name accepted, in bytes. Type names hold 1 to this many bytes of any
/// text but control characters ([`validate_batch`]).
pub const MAX_EVENT_TYPE_LEN: usize = 255;

/// An event store held in memory. Cloning shares the same events.
///
/// ```
/// # tokio_test_block(async {
/// use factum::{EventStore, ExpectedVersion, MemoryStore, Metadata, StreamId};
/// use factum::store::{NewEvent, Payload, StreamRead};
/// let store = MemoryStore::new();
/// let stream = StreamId::new("order", "o-1")?;
/// let event = NewEvent {
///     event_id: uuid::Uuid::now_v7(),
///     event_type: "OrderPlaced".into(),
///     schema_version: 1,
///     payload: Payload::encode(&serde_json::json!({"order_id": "o-1"}))?,
///     metadata: Metadata::new(),
/// };
/// let appended = store.append(&stream, ExpectedVersion::NoStream, &[event]).await?;
/// assert_eq!(appended.version, 1);
/// assert_eq!(store.read_stream(&stream, &StreamRead::all()).await?.len(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # });
/// # fn tokio_test_block<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
    head: Arc<watch::Sender<u64>>,
    scope: Scope,
}

/// Whose rows a handle sees.
#[derive(Clone, Debug)]
enum Scope {
    /// A single-tenant store: every row.
    Single,
    /// A multi-tenant store bound to no tenant: reads are refused.
    Unbound,
    /// A multi-tenant store bound to one tenant.
    Bound(TenantId),
}

#[derive(Debug, Default)]
struct Inner {
    /// Every event, of every tenant; the event at index `i` has position `i + 1`.
    events: Vec<RecordedEvent>,
    /// The rows of each tenant (the empty key for a single-tenant store).
    spaces: HashMap<String, Space>,
}

/// What one tenant sees, besides the global order of `events`.
#[derive(Debug, Default)]
struct Space {
    /// Indexes into `events`, per stream, in version order.
    streams: HashMap<String, Vec<usize>>,
    by_id: HashMap<Uuid, usize>,
    snapshots: HashMap<(String, u32), BTreeMap<u64, Snapshot>>,
    /// The first outcome of each command id that appended events or was recorded.
    commands: HashMap<Uuid, CommandRecord>,
    /// Indexes into `events` of this space's events, in position order.
    positions: Vec<usize>,
}

static EMPTY: std::sync::LazyLock<Space> = std::sync::LazyLock::new(Space::default);

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self {
            inner: Arc::default(),
            head: Arc::new(watch::channel(0).0),
            scope: Scope::Single,
        }
    }

    /// An empty store in multi-tenant mode, enforcing the rules the PostgreSQL store's
    /// row-level security enforces: reads, loads and snapshots go through a handle bound to
    /// a tenant ([`EventStore::tenant`]) and see only that tenant's rows; the unbound store
    /// refuses them with [`TenantError::Required`]. An append takes the handle's tenant, or
    /// the tenant its events' metadata names.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// use factum::store::StreamRead;
    /// use factum::tenant::TenantId;
    /// use factum::{EventStore, MemoryStore, StoreError, StreamId};
    /// let store = MemoryStore::multi_tenant();
    /// let acme = store.tenant(&TenantId::new("acme")?)?;
    /// let stream = StreamId::new("order", "o-1")?;
    /// assert!(acme.read_stream(&stream, &StreamRead::all()).await?.is_empty());
    /// assert!(matches!(
    ///     store.read_stream(&stream, &StreamRead::all()).await,
    ///     Err(StoreError::Tenant(_))
    /// ));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub fn multi_tenant() -> Self {
        Self {
            scope: Scope::Unbound,
            ..Self::new()
        }
    }

    /// The key of the rows this handle may see, or the refusal of `operation` by an
    /// unbound multi-tenant handle.
    fn space(&self, operation: &'static str) -> Result<&str, StoreError> {
        match &self.scope {
            Scope::Single => Ok(""),
            Scope::Bound(tenant) => Ok(tenant.as_str()),
            Scope::Unbound => Err(TenantError::Required { operation }.into()),
        }
    }

    /// A receiver that sees the head position each time events are appended.
    pub fn watch_head(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }

    /// How many events the store holds, of every tenant.
    pub fn len(&self) -> usize {
        self.lock().events.len()
    }

    /// Whether the store holds no events.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave `Inner` half-written: every mutation
        // is validated first and then applied without fallible steps.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn scan_stream<T>(
        &self,
        stream: &StreamId,
        read: &StreamRead,
        map: impl Fn(&RecordedEvent) -> T,
    ) -> Result<Vec<T>, StoreError> {
        let space = self.space("a stream read")?;
        let inner = self.lock();
        let Some(indexes) = inner.space(space).streams.get(stream.as_str()) else {
            return Ok(Vec::new());
        };
        let start = usize::try_from(read.from.saturating_sub(1)).unwrap_or(usize::MAX);
        let limit = read.limit.unwrap_or(usize::MAX);
        Ok(indexes
            .iter()
            .skip(start)
            .map(|&i| &inner.events[i])
            .take_while(|e| read.contains(e))
            .take(limit)
            .map(map)
            .collect())
    }

    fn append_sync(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Result<AppendResult, StoreError> {
        validate_batch(stream, events)?;
        let filled;
        let (space, events) = match &self.scope {
            Scope::Single => (String::new(), events),
            Scope::Unbound | Scope::Bound(_) => {
                let (tenant, with_tenant) = tenant_of_append(self.bound_tenant(), stream, events)?;
                filled = with_tenant;
                (
                    tenant.as_str().to_owned(),
                    filled.as_deref().unwrap_or(events),
                )
            }
        };
        let mut inner = self.lock();
        if let Some(result) = inner.earlier_append(&space, stream, events)? {
            return Ok(result);
        }
        let current = inner
            .space(&space)
            .streams
            .get(stream.as_str())
            .map_or(0, |s| s.len() as u64);
        if !expected.matches(current) {
            return Err(StoreError::WrongExpectedVersion {
                stream: stream.clone(),
                expected,
                actual: current,
            });
        }
        if events.is_empty() {
            return Ok(AppendResult {
                version: current,
                first_version: current + 1,
                first_position: 0,
                last_position: 0,
                replayed: false,
            });
        }
        let command_id = events[0].metadata.command_id;
        if let Some(command_id) = command_id {
            inner.space(&space).check_command(command_id)?;
        }
        let now = Utc::now();
        let first_position = inner.events.len() as u64 + 1;
        let Inner {
            events: all,
            spaces,
        } = &mut *inner;
        let Space {
            streams,
            by_id,
            commands,
            positions,
            ..
        } = spaces.entry(space).or_default();
        if let Some(command_id) = command_id {
            commands.entry(command_id).or_insert_with(|| CommandRecord {
                command_id,
                stream_id: stream.clone(),
                version: current,
                outcome: CommandOutcome::Appended,
            });
        }
        let indexes = streams.entry(stream.as_str().to_owned()).or_default();
        for (i, event) in events.iter().enumerate() {
            let index = all.len();
            all.push(RecordedEvent {
                event_id: event.event_id,
                stream_id: stream.clone(),
                stream_version: current + i as u64 + 1,
                position: index as u64 + 1,
                event_type: event.event_type.clone(),
                schema_version: event.schema_version,
                payload: event.payload.clone(),
                metadata: event.metadata.clone(),
                recorded_at: now,
            });
            indexes.push(index);
            positions.push(index);
            by_id.insert(event.event_id, index);
        }
        let last_position = all.len() as u64;
        drop(inner);
        self.head.send_replace(last_position);
        Ok(AppendResult {
            version: current + events.len() as u64,
            first_version: current + 1,
            first_position,
            last_position,
            replayed: false,
        })
    }
}

/// Checks what every store checks before touching storage, so that every store refuses the
/// same batches with the same errors, and stores nothing of them:
///
/// - no event id twice in one batch ([`StoreError::RepeatedEventIdInBatch`]);
/// - type names of 1 to [`MAX_EVENT_TYPE_LEN`] bytes without control characters
///   ([`StoreError::InvalidEventType`]); any other text is allowed, quotes and emoji included;
/// - no NUL character (`\u0000`) in a string or key of a payload or of metadata
///   ([`StoreError::NulCharacter`], naming the event and the JSONPath).
pub fn validate_batch(stream: &StreamId, events: &[NewEvent]) -> Result<(), StoreError> {
    let mut seen = HashSet::with_capacity(events.len());
    for event in events {
        if !seen.insert(event.event_id) {
            return Err(StoreError::RepeatedEventIdInBatch {
                event_id: event.event_id,
                stream: stream.clone(),
            });
        }
        if event.event_type.is_empty()
            || event.event_type.len() > MAX_EVENT_TYPE_LEN
            || event.event_type.chars().any(char::is_control)
        {
            return Err(StoreError::InvalidEventType {
                event_type: event.event_type.clone(),
                stream: stream.clone(),
            });
        }
        let nul = |part, path| StoreError::NulCharacter {
            stream: stream.clone(),
            event_id: event.event_id,
            event_type: event.event_type.clone(),
            part,
            path,
        };
        if let Some(path) = event.payload.nul_character() {
            return Err(nul(EventPart::Payload, path));
        }
        if let Some(path) = event.metadata.nul_character() {
            return Err(nul(EventPart::Metadata, path));
        }
    }
    Ok(())
}

/// Checks a snapshot before any store writes it: its state holds no NUL character
/// ([`StoreError::NulCharacterInSnapshot`]). Every store runs it, so a state the in-memory
/// store keeps is one PostgreSQL keeps too.
pub fn validate_snapshot(snapshot: &Snapshot) -> Result<(), StoreError> {
    match snapshot.state.nul_character() {
        Some(path) => Err(StoreError::NulCharacterInSnapshot {
            stream: snapshot.stream_id.clone(),
            version: snapshot.version,
            path,
        }),
        None => Ok(()),
    }
}

/// Decides whether `events` is a retry of an append already stored as `stored` (the stored
/// events with the same ids, in batch order, `None` where an id is not stored).
///
/// Returns `Ok(None)` when no id is stored (a new append), the original result when every id
/// is stored in `stream` at consecutive versions with the same content, and
/// [`StoreError::DuplicateEventId`] otherwise.
pub fn check_retry(
    stream: &StreamId,
    events: &[NewEvent],
    stored: &[Option<&RecordedEvent>],
) -> Result<Option<AppendResult>, StoreError> {
    if stored.iter().all(Option::is_none) {
        return Ok(None);
    }
    let mut previous: Option<&RecordedEvent> = None;
    for (new, old) in events.iter().zip(stored) {
        let consistent = old.is_some_and(|old| {
            old.stream_id == *stream
                && new.same_content(old)
                && previous.is_none_or(|p| p.stream_version + 1 == old.stream_version)
        });
        if !consistent {
            return Err(StoreError::DuplicateEventId {
                event_id: new.event_id,
                stream: stream.clone(),
            });
        }
        previous = *old;
    }
    let (Some(Some(first)), Some(Some(last))) = (stored.first(), stored.last()) else {
        return Ok(None);
    };
    Ok(Some(AppendResult {
        version: last.stream_version,
        first_version: first.stream_version,
        first_position: first.position,
        last_position: last.position,
        replayed: true,
    }))
}

impl Inner {
    /// The rows of tenant `space` (none yet: an empty space).
    fn space(&self, space: &str) -> &Space {
        self.spaces.get(space).unwrap_or(&EMPTY)
    }

    fn command_record(&self, space: &str, command_id: Uuid) -> Option<CommandRecord> {
        let rows = self.space(space);
        if let Some(record) = rows.commands.get(&command_id) {
            return Some(record.clone());
        }
        let first = &self.events[*rows.by_id.get(&derived_event_id(command_id, 0))?];
        Some(CommandRecord {
            command_id,
            stream_id: first.stream_id.clone(),
            version: first.stream_version.saturating_sub(1),
            outcome: CommandOutcome::Appended,
        })
    }

    fn earlier_append(
        &self,
        space: &str,
        stream: &StreamId,
        events: &[NewEvent],
    ) -> Result<Option<AppendResult>, StoreError> {
        let by_id = &self.space(space).by_id;
        let stored: Vec<Option<&RecordedEvent>> = events
            .iter()
            .map(|e| by_id.get(&e.event_id).map(|&i| &self.events[i]))
            .collect();
        check_retry(stream, events, &stored)
    }
}

impl Space {
    /// Refuses events of a command id whose first outcome appended nothing.
    fn check_command(&self, command_id: Uuid) -> Result<(), StoreError> {
        match self.commands.get(&command_id) {
            Some(first) if !first.appended() => Err(StoreError::CommandDecided {
                command_id,
                stream: first.stream_id.clone(),
            }),
            _ => Ok(()),
        }
    }
}

impl EventStore for MemoryStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Result<AppendResult, StoreError> {
        self.append_sync(stream, expected, events)
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        read: &StreamRead,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.scan_stream(stream, read, RecordedEvent::clone)
    }

    async fn replay_stream(
        &self,
        stream: &StreamId,
        read: &StreamRead,
    ) -> Result<Vec<ReplayEvent>, StoreError> {
        self.scan_stream(stream, read, |e| ReplayEvent {
            stream_version: e.stream_version,
            position: e.position,
            event_type: e.event_type.clone(),
            schema_version: e.schema_version,
            payload: e.payload.clone(),
        })
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<u64, StoreError> {
        let space = self.space("a stream version")?;
        Ok(self
            .lock()
            .space(space)
            .streams
            .get(stream.as_str())
            .map_or(0, |s| s.len() as u64))
    }

    async fn read_all(&self, read: &ReadAll) -> Result<Vec<RecordedEvent>, StoreError> {
        let space = self.space("a read of all streams")?;
        let inner = self.lock();
        let start = usize::try_from(read.after).unwrap_or(usize::MAX);
        if let Scope::Single = self.scope {
            return Ok(inner
                .events
                .iter()
                .skip(start)
                .filter(|e| read.matches(e))
                .take(read.limit)
                .cloned()
                .collect());
        }
        let positions = &inner.space(space).positions;
        let first = positions.partition_point(|&i| i < start);
        Ok(positions[first..]
            .iter()
            .map(|&i| &inner.events[i])
            .filter(|e| read.matches(e))
            .take(read.limit)
            .cloned()
            .collect())
    }

    async fn head_position(&self) -> Result<u64, StoreError> {
        let space = self.space("the head position")?;
        let inner = self.lock();
        Ok(match self.scope {
            Scope::Single => inner.events.len() as u64,
            _ => inner
                .space(space)
                .positions
                .last()
                .map_or(0, |&i| i as u64 + 1),
        })
    }

    async fn event_by_id(&self, event_id: Uuid) -> Result<Option<RecordedEvent>, StoreError> {
        let space = self.space("a read of an event by id")?;
        let inner = self.lock();
        Ok(inner
            .space(space)
            .by_id
            .get(&event_id)
            .map(|&i| inner.events[i].clone()))
    }

    async fn save_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        validate_snapshot(snapshot)?;
        let space = self.space("a snapshot save")?.to_owned();
        self.lock()
            .spaces
            .entry(space)
            .or_default()
            .snapshots
            .entry((
                snapshot.stream_id.as_str().to_owned(),
                snapshot.schema_version,
            ))
            .or_default()
            .insert(snapshot.version, snapshot.clone());
        Ok(())
    }

    async fn load_snapshot(
        &self,
        stream: &StreamId,
        schema_version: u32,
        max_version: Option<u64>,
    ) -> Result<Option<Snapshot>, StoreError> {
        let space = self.space("a snapshot load")?;
        let inner = self.lock();
        let Some(snapshots) = inner
            .space(space)
            .snapshots
            .get(&(stream.as_str().to_owned(), schema_version))
        else {
            return Ok(None);
        };
        Ok(snapshots
            .range(..=max_version.unwrap_or(u64::MAX))
            .next_back()
            .map(|(_, s)| s.clone()))
    }

    async fn record_command(
        &self,
        record: &CommandRecord,
    ) -> Result<Option<CommandRecord>, StoreError> {
        let space = self.space("a command record")?;
        let mut inner = self.lock();
        if let Some(first) = inner.command_record(space, record.command_id) {
            return Ok(Some(first));
        }
        let mut stored = record.clone();
        if let CommandOutcome::Rejected { message } = &mut stored.outcome {
            *message = crate::command_log::storable_message(message).into_owned();
        }
        inner
            .spaces
            .entry(space.to_owned())
            .or_default()
            .commands
            .insert(record.command_id, stored);
        Ok(None)
    }

    async fn command_record(&self, command_id: Uuid) -> Result<Option<CommandRecord>, StoreError> {
        let space = self.space("a command lookup")?;
        Ok(self.lock().command_record(space, command_id))
    }

    fn tenant(&self, tenant: &TenantId) -> Result<Self, StoreError> {
        match self.scope {
            Scope::Single => Err(TenantError::NotMultiTenant.into()),
            Scope::Unbound | Scope::Bound(_) => Ok(Self {
                scope: Scope::Bound(tenant.clone()),
                ..self.clone()
            }),
        }
    }

    fn bound_tenant(&self) -> Option<&TenantId> {
        match &self.scope {
            Scope::Bound(tenant) => Some(tenant),
            Scope::Single | Scope::Unbound => None,
        }
    }

    fn head_hint(&self) -> Option<watch::Receiver<u64>> {
        Some(self.watch_head())
    }
}
