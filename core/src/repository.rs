//! Loading aggregates and executing commands against a store.

mod cache;

use std::marker::PhantomData;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tracing::Instrument;
use uuid::Uuid;

use crate::aggregate::{Aggregate, Command, CommandSet, Routed};
use crate::command_log::{CommandOutcome, CommandRecord};
use crate::error::{Error, StoreError};
use crate::event::{EventSet, NewEvent, Payload};
use crate::metadata::Metadata;
use crate::store::{EventStore, ReplayEvent, Snapshot, StreamRead};

use crate::stream::{ExpectedVersion, StreamId};
pub use cache::Speculation;
use cache::{AggregateCache, SpeculationStats};

/// Namespace of the deterministic event ids derived from command ids.
const EVENT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6d2f_6a8e_4f0b_4c53_9a51_2b6e_0c1d_f4a7);

/// The id of the `index`-th event caused by the message `cause`: the same inputs always give
/// the same id, so re-executing a command appends nothing new.
pub fn derived_event_id(cause: Uuid, index: u32) -> Uuid {
    let mut name = [0u8; 20];
    name[..16].copy_from_slice(cause.as_bytes());
    name[16..].copy_from_slice(&index.to_be_bytes());
    Uuid::new_v5(&EVENT_ID_NAMESPACE, &name)
}

/// A point in an aggregate's history, for temporal loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AsOf {
    /// The state after this stream version.
    Version(u64),
    /// The state after the last event recorded at or before this time.
    Time(DateTime<Utc>),
}

impl From<DateTime<Utc>> for AsOf {
    fn from(t: DateTime<Utc>) -> Self {
        AsOf::Time(t)
    }
}

/// An aggregate's state and the stream version it reflects.
#[derive(Clone, Debug, PartialEq)]
pub struct Loaded<A> {
    /// The state.
    pub state: A,
    /// The stream version it reflects (0: no events).
    pub version: u64,
}

/// The outcome of an executed command.
#[derive(Debug)]
pub struct Executed<A: Aggregate> {
    /// The stream written to.
    pub stream_id: StreamId,
    /// The events the command caused (empty when it changed nothing).
    pub events: Vec<A::Event>,
    /// The stream's version after them.
    pub version: u64,
    /// The global position of the last event (0 when none was appended).
    pub position: u64,
    /// Whether this outcome was recorded earlier under the same command id and is returned
    /// again without appending.
    pub duplicate: bool,
}

/// Loads aggregates of type `A` from a store and executes commands on them.
///
/// A repository keeps the aggregates its commands loaded in a bounded cache (1,024 streams by
/// default, [`with_cache`](Self::with_cache)), so that a command on a cached aggregate is
/// decided on the cached state and appended with its version in one round trip; the store's
/// version check catches a stale entry, which is then brought up to date and the command
/// decided again. Commands on an aggregate that is not cached may first be decided on the
/// initial state ([`Speculation`]), so that creating an aggregate is one round trip too.
/// Loads ([`load`](Self::load), [`load_as_of`](Self::load_as_of)) always read the store.
///
/// Clones share the store and the cache, and are cheap when the store is.
pub struct Repository<A, S> {
    store: S,
    conflict_retries: u32,
    speculation: Speculation,
    shared: Arc<Shared<A>>,
    _aggregate: PhantomData<fn() -> A>,
}

/// What the clones of a repository share.
struct Shared<A> {
    cache: AggregateCache<A>,
    speculation: SpeculationStats,
}

impl<A, S: Clone> Clone for Repository<A, S> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            conflict_retries: self.conflict_retries,
            speculation: self.speculation,
            shared: Arc::clone(&self.shared),
            _aggregate: PhantomData,
        }
    }
}

impl<A, S: std::fmt::Debug> std::fmt::Debug for Repository<A, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("aggregate", &std::any::type_name::<A>())
            .field("store", &self.store)
            .field("conflict_retries", &self.conflict_retries)
            .field("cache_capacity", &self.shared.cache.capacity())
            .field("cached", &self.shared.cache.len())
            .field("speculation", &self.speculation)
            .field(
                "speculation_conflict_rate",
                &self.shared.speculation.conflict_rate(),
            )
            .finish()
    }
}

impl<A: Aggregate, S: EventStore> Repository<A, S> {
    /// How many times a conflicting append is retried by default.
    pub const DEFAULT_CONFLICT_RETRIES: u32 = 3;

    /// How many streams the aggregate cache holds by default.
    pub const DEFAULT_CACHE_ENTRIES: usize = 1024;

    /// A repository over `store`, with a cache of
    /// [`DEFAULT_CACHE_ENTRIES`](Self::DEFAULT_CACHE_ENTRIES) and adaptive
    /// [`Speculation`].
    pub fn new(store: S) -> Self {
        Self {
            store,
            conflict_retries: Self::DEFAULT_CONFLICT_RETRIES,
            speculation: Speculation::default(),
            shared: Arc::new(Shared::new(Self::DEFAULT_CACHE_ENTRIES)),
            _aggregate: PhantomData,
        }
    }

    /// Sets how many times a command is re-run on fresh state after losing an append race
    /// (0: report the first conflict). Handlers are pure functions of state and command, so a
    /// re-run is safe; turn it off when a handler has side effects outside the store.
    ///
    /// A stale cache entry or a failed speculation is not a lost race: the command is
    /// decided once more on the stream's current state without counting against this limit.
    /// A handler with side effects therefore also wants [`with_cache(0)`](Self::with_cache)
    /// and [`Speculation::Never`].
    #[must_use]
    pub fn with_conflict_retries(mut self, retries: u32) -> Self {
        self.conflict_retries = retries;
        self
    }

    /// Keeps the states of up to `entries` streams between commands, the least recently
    /// and least frequently used making way for new ones (0 turns the cache off). An entry
    /// holds one aggregate state; size the cache by the number of aggregates that receive
    /// commands repeatedly and by the size of their states. The new cache starts empty and
    /// is shared by the clones made from here on.
    #[must_use]
    pub fn with_cache(mut self, entries: usize) -> Self {
        self.shared = Arc::new(Shared::new(entries));
        self
    }

    /// Sets whether commands on uncached aggregates are first decided on the initial state.
    #[must_use]
    pub fn with_speculation(mut self, speculation: Speculation) -> Self {
        self.speculation = speculation;
        self
    }

    /// How many streams have an entry in the cache now.
    pub fn cached(&self) -> usize {
        self.shared.cache.len()
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The stream of the instance `id`.
    pub fn stream_id(id: &str) -> Result<StreamId, Error<A::Error>> {
        Ok(StreamId::new(A::CATEGORY, id)?)
    }

    /// Loads the current state of `id`: the latest snapshot plus the events after it.
    pub async fn load(&self, id: &str) -> Result<Loaded<A>, Error<A::Error>> {
        let stream = Self::stream_id(id)?;
        self.load_stream(&stream, None).await
    }

    /// Loads the state of `id` as of a version or a time.
    pub async fn load_as_of(
        &self,
        id: &str,
        at: impl Into<AsOf>,
    ) -> Result<Loaded<A>, Error<A::Error>> {
        let stream = Self::stream_id(id)?;
        match at.into() {
            AsOf::Version(v) => self.load_stream(&stream, Some(v)).await,
            AsOf::Time(t) => {
                let mut loaded = Loaded {
                    state: A::default(),
                    version: 0,
                };
                let events = self
                    .store
                    .replay_stream(&stream, &StreamRead::all().until(t))
                    .await?;
                apply_all(&stream, &mut loaded, &events)?;
                Ok(loaded)
            }
        }
    }

    async fn load_stream(
        &self,
        stream: &StreamId,
        max_version: Option<u64>,
    ) -> Result<Loaded<A>, Error<A::Error>> {
        let span = tracing::debug_span!(
            "load",
            stream = %stream,
            version = tracing::field::Empty,
            snapshot = tracing::field::Empty,
        );
        let loaded = self
            .load_in_span(stream, max_version)
            .instrument(span.clone())
            .await?;
        span.record("version", loaded.version);
        Ok(loaded)
    }

    async fn load_in_span(
        &self,
        stream: &StreamId,
        max_version: Option<u64>,
    ) -> Result<Loaded<A>, Error<A::Error>> {
        let mut loaded = Loaded::initial();
        let mut from_snapshot = false;
        let events = if A::SNAPSHOT == crate::SnapshotPolicy::Never {
            self.replay(stream, 1, max_version).await?
        } else {
            let read = self
                .store
                .load_aggregate(stream, A::STATE_VERSION, max_version)
                .await?;
            match read
                .snapshot
                .map(|s| (s.version, A::decode_state(&s.state)))
            {
                None => read.events,
                Some((version, Some(Ok(state)))) => {
                    loaded = Loaded { state, version };
                    from_snapshot = true;
                    read.events
                }
                Some((version, Some(Err(error)))) => {
                    tracing::warn!(
                        stream = %stream,
                        version,
                        %error,
                        "ignoring a snapshot that no longer decodes; replaying the stream"
                    );
                    self.replay(stream, 1, max_version).await?
                }
                Some((_, None)) => self.replay(stream, 1, max_version).await?,
            }
        };
        tracing::Span::current().record("snapshot", from_snapshot);
        apply_all(stream, &mut loaded, &events)?;
        Ok(loaded)
    }

    async fn replay(
        &self,
        stream: &StreamId,
        from: u64,
        to: Option<u64>,
    ) -> Result<Vec<ReplayEvent>, Error<A::Error>> {
        let mut read = StreamRead::from_version(from);
        read.to = to;
        Ok(self.store.replay_stream(stream, &read).await?)
    }

    /// Applies the events after `loaded.version`; returns whether there were any.
    async fn catch_up(
        &self,
        stream: &StreamId,
        loaded: &mut Loaded<A>,
    ) -> Result<bool, Error<A::Error>> {
        let events = self.replay(stream, loaded.version + 1, None).await?;
        apply_all(stream, loaded, &events)?;
        Ok(!events.is_empty())
    }

    /// Executes `command` on the instance its `#[id]` field names: validates it, loads the
    /// aggregate, runs its handler and appends the events with the loaded version as the
    /// expected one. A command that lost an append race is decided again on the new state,
    /// up to [`with_conflict_retries`](Self::with_conflict_retries) times.
    ///
    /// Events get `causation_id` = the command id (one is generated when `metadata` has
    /// none) and inherit the correlation id, actor, tenant and extra keys of `metadata`. They
    /// carry `command_id` only when `metadata` has one: a generated id is no idempotency key.
    /// The command runs in an `execute` span that continues `metadata`'s trace context, and
    /// its events carry that span's context ([`crate::trace`]).
    ///
    /// When `metadata` has a command id, the command is idempotent: its first outcome is
    /// kept, and executing it again with that id, even concurrently, returns that outcome
    /// and appends nothing. The events it appended (with `duplicate` set), the empty outcome
    /// (with `duplicate` set and the version it was decided on), or the rejection
    /// [`Error::Rejected`], decided again on the state it was rejected on. Store errors and
    /// conflicts are not outcomes: the command can be retried. Without a command id, each
    /// call is a new command.
    ///
    /// A command without an `#[id]` field does not compile here: name its instance with
    /// [`execute_on`](Self::execute_on).
    pub async fn execute<C>(
        &self,
        command: C,
        metadata: Metadata,
    ) -> Result<Executed<A>, Error<A::Error>>
    where
        C: Routed + Into<A::Command>,
    {
        let stream = Self::stream_id(command.instance_id())?;
        self.run(stream, command.into(), metadata, None).await
    }

    /// Executes `command` on the instance `id`, as [`execute`](Self::execute) does, for a
    /// command without an `#[id]` field. A command whose `#[id]` names another instance is
    /// refused with [`Error::WrongInstance`] before anything is loaded.
    pub async fn execute_on<C>(
        &self,
        id: &str,
        command: C,
        metadata: Metadata,
    ) -> Result<Executed<A>, Error<A::Error>>
    where
        C: Command + Into<A::Command>,
    {
        check_instance(&command, id)?;
        let stream = Self::stream_id(id)?;
        self.run(stream, command.into(), metadata, None).await
    }

    /// Executes `command` only if its instance's stream is at version `expected` (0: the
    /// instance has no events), as an HTTP `If-Match` asks: the command is decided on exactly
    /// that version, and when the stream has moved on, before or during the decision, the
    /// answer is [`Error::VersionMismatch`] with the expected and actual versions. It is not
    /// retried. A command id's recorded outcome is still returned first, so a retried
    /// request gets its first answer.
    pub async fn execute_expecting<C>(
        &self,
        command: C,
        expected: u64,
        metadata: Metadata,
    ) -> Result<Executed<A>, Error<A::Error>>
    where
        C: Routed + Into<A::Command>,
    {
        let stream = Self::stream_id(command.instance_id())?;
        self.run(stream, command.into(), metadata, Some(expected))
            .await
    }

    /// Executes a command of the aggregate's command set on `stream`, at any version or at
    /// `expected`, in an `execute` span that continues the trace context of `metadata` and
    /// whose context the events carry.
    pub(crate) async fn run(
        &self,
        stream: StreamId,
        command: A::Command,
        mut metadata: Metadata,
        expected: Option<u64>,
    ) -> Result<Executed<A>, Error<A::Error>> {
        let span = tracing::info_span!(
            "execute",
            command = command.command_name(),
            aggregate = A::CATEGORY,
            stream = %stream,
            command_id = tracing::field::Empty,
            error = tracing::field::Empty,
        );
        metadata.trace = crate::trace::continue_in(&span, metadata.trace.as_ref());
        let result = self
            .run_in_span(stream, command, metadata, expected)
            .instrument(span.clone())
            .await;
        if let Err(error) = &result {
            span.record("error", tracing::field::display(error));
        }
        result
    }

    async fn run_in_span(
        &self,
        stream: StreamId,
        command: A::Command,
        metadata: Metadata,
        expected: Option<u64>,
    ) -> Result<Executed<A>, Error<A::Error>> {
        command
            .validate()
            .map_err(|message| Error::InvalidCommand {
                command: command.command_name(),
                message,
            })?;
        let explicit_id = metadata.command_id.is_some();
        let command_id = metadata.command_id.unwrap_or_else(Uuid::now_v7);
        tracing::Span::current().record("command_id", tracing::field::display(command_id));
        // Events name the command as their cause, and carry the command id only when the
        // caller gave one: only such ids are idempotency keys, which the store claims.
        let event_meta = metadata.caused_by(command_id);
        // Kept to decide a recorded rejection again.
        let original = explicit_id.then(|| command.clone());
        // A command id that has an outcome already is not looked up first: the append claims
        // the id in the command log and fails when it has an outcome, or finds the events it
        // derived; recording an outcome without events returns the first one. Either way the
        // first outcome is then returned, and a first execution costs no extra round trip.

        let slot = self.shared.cache.slot(&stream);
        let mut entry = match &slot {
            Some(slot) => Some(slot.lock().await),
            None => None,
        };
        // Taken out while the command runs: put back only once it is current again, so that
        // a failure, a panic in a handler or a cancelled call leaves no stale state behind.
        let cached = entry.as_mut().and_then(|entry| entry.take());
        let decision = Decision {
            stream: &stream,
            command,
            command_id,
            event_meta: &event_meta,
            expected,
            original: original.as_ref(),
        };
        let result = self.decide(decision, cached).await;
        let (outcome, current) = match (result, &original) {
            // A retried request expecting the version its first execution moved past.
            (Err(mismatch @ Error::VersionMismatch { .. }), Some(original)) => {
                drop(entry);
                return match self.earlier_outcome(&stream, original, command_id).await? {
                    Some(done) => Ok(done),
                    None => Err(mismatch),
                };
            }
            (result, _) => result?,
        };
        if let (Some(entry), Some(current)) = (entry.as_mut(), current) {
            **entry = Some(current);
        }
        drop(entry);
        match outcome {
            Outcome::Done(executed) => Ok(executed),
            Outcome::Decided { version, outcome } => {
                self.decided(&stream, original.as_ref(), command_id, version, outcome)
                    .await
            }
        }
    }

    /// Decides the command and appends its events, starting from the cached state when there
    /// is one, or from the initial state when speculating; returns the outcome and the state
    /// to cache, when it is known to be current.
    async fn decide(
        &self,
        d: Decision<'_, A>,
        cached: Option<Loaded<A>>,
    ) -> Result<(Outcome<A>, Option<Loaded<A>>), Error<A::Error>> {
        let stream = d.stream;
        let mismatch = |expected, actual| Error::VersionMismatch {
            stream: stream.clone(),
            expected,
            actual,
        };
        let mut attempts = 0u32;
        let mut pauses = conflict_pauses();
        let mut current = cached.map(|loaded| (loaded, Basis::Cached));
        if current.is_none()
            && d.expected.is_none_or(|v| v == 0)
            && self.shared.speculation.should_speculate(self.speculation)
        {
            current = Some((Loaded::initial(), Basis::Initial));
        }
        loop {
            let (mut loaded, basis) = match current.take() {
                Some(current) => current,
                None => (self.load_stream(stream, None).await?, Basis::Store),
            };
            if let Some(expected) = d.expected.filter(|v| *v != loaded.version) {
                if basis == Basis::Cached {
                    // The entry may only be stale.
                    self.catch_up(stream, &mut loaded).await?;
                    current = Some((loaded, Basis::Store));
                    continue;
                }
                return Err(mismatch(expected, loaded.version));
            }
            let events = match loaded.state.handle(d.command.clone()) {
                Ok(events) if !events.is_empty() => events,
                outcome => {
                    // Nothing to append, so nothing checks the state: unless it was just
                    // read, it is brought up to date first, and the command decided again
                    // if it moved.
                    let moved = match basis {
                        Basis::Store => false,
                        Basis::Cached => self.catch_up(stream, &mut loaded).await?,
                        Basis::Initial => {
                            loaded = self.load_stream(stream, None).await?;
                            loaded.version > 0
                        }
                    };
                    if !moved {
                        let version = loaded.version;
                        let outcome = outcome.map(drop);
                        return Ok((Outcome::Decided { version, outcome }, Some(loaded)));
                    }
                    if let Some(expected) = d.expected {
                        return Err(mismatch(expected, loaded.version));
                    }
                    current = Some((loaded, Basis::Store));
                    continue;
                }
            };
            let new_events = encode_all::<A>(stream, &events, d.command_id, d.event_meta)?;
            let at = loaded.version;
            let span = tracing::debug_span!(
                "append",
                stream = %stream,
                expected_version = at,
                events = new_events.len(),
                first_position = tracing::field::Empty,
                last_position = tracing::field::Empty,
            );
            let appended = self
                .store
                .append(stream, ExpectedVersion::Exact(at), &new_events)
                .instrument(span.clone())
                .await;
            if let Ok(result) = &appended {
                span.record("first_position", result.first_position);
                span.record("last_position", result.last_position);
            }
            if basis == Basis::Initial {
                let conflicted = matches!(appended, Err(StoreError::WrongExpectedVersion { .. }));
                self.shared.speculation.record(conflicted);
            }
            let failure = match appended {
                Ok(result) => {
                    let position = result.last_position;
                    let version = result.version;
                    let current =
                        (!result.replayed && version == at + events.len() as u64).then(|| {
                            for event in &events {
                                loaded.state.apply(event);
                            }
                            loaded.version = version;
                            loaded
                        });
                    if let Some(current) = &current {
                        self.maybe_snapshot(stream, current, at).await;
                    }
                    let executed = Executed {
                        stream_id: stream.clone(),
                        events,
                        version,
                        position,
                        duplicate: result.replayed,
                    };
                    return Ok((Outcome::Done(executed), current));
                }
                Err(StoreError::WrongExpectedVersion { actual, .. }) => {
                    if let Some(expected) = d.expected {
                        return Err(mismatch(expected, actual));
                    }
                    redecided(stream, basis, at, actual);
                    match basis {
                        // A stale entry or a stream that exists: not a lost race.
                        Basis::Cached => {
                            self.catch_up(stream, &mut loaded).await?;
                            current = Some((loaded, Basis::Store));
                            continue;
                        }
                        Basis::Initial => continue,
                        Basis::Store => {
                            attempts += 1;
                            Error::Conflict {
                                stream: stream.clone(),
                                attempts,
                                expected: at,
                                actual,
                            }
                        }
                    }
                }
                Err(
                    e @ (StoreError::DuplicateEventId { .. } | StoreError::CommandDecided { .. }),
                ) => {
                    // The derived event ids are stored with other content: the same command
                    // id was executed concurrently on another state, or reused for another
                    // command.
                    e.into()
                }
                Err(e) => return Err(e.into()),
            };
            // A concurrent execution of the same command may have won the race.
            if let Some(original) = d.original {
                if let Some(done) = self.earlier_outcome(stream, original, d.command_id).await? {
                    return Ok((Outcome::Done(done), None));
                }
            }
            if attempts > self.conflict_retries || !matches!(failure, Error::Conflict { .. }) {
                return Err(failure);
            }
            // Writers that conflicted together do not race again in step.
            tokio::time::sleep(pauses.next().unwrap_or_default()).await;
            self.catch_up(stream, &mut loaded).await?;
            current = Some((loaded, Basis::Store));
        }
    }

    /// Answers a command decided on `version` without appending: records the outcome when
    /// the command has an id, unless the command id has an outcome already, which then wins.
    async fn decided(
        &self,
        stream: &StreamId,
        original: Option<&A::Command>,
        command_id: Uuid,
        version: u64,
        outcome: Result<(), A::Error>,
    ) -> Result<Executed<A>, Error<A::Error>> {
        if let Some(original) = original {
            let record = CommandRecord {
                command_id,
                stream_id: stream.clone(),
                version,
                outcome: match &outcome {
                    Ok(()) => CommandOutcome::NoEvents,
                    Err(error) => CommandOutcome::Rejected {
                        message: error.to_string(),
                    },
                },
            };
            if let Some(first) = self.store.record_command(&record).await? {
                // A concurrent execution of the same command decided first.
                return match self.outcome_of(stream, original, &first).await? {
                    Some(done) => Ok(done),
                    None => Err(StoreError::CommandDecided {
                        command_id,
                        stream: first.stream_id,
                    }
                    .into()),
                };
            }
        }
        outcome.map_err(Error::Rejected)?;
        Ok(Executed {
            stream_id: stream.clone(),
            events: Vec::new(),
            version,
            position: 0,
            duplicate: false,
        })
    }

    /// The first outcome of `command_id`, if it has one.
    async fn earlier_outcome(
        &self,
        stream: &StreamId,
        command: &A::Command,
        command_id: Uuid,
    ) -> Result<Option<Executed<A>>, Error<A::Error>> {
        match self.store.command_record(command_id).await? {
            Some(first) => self.outcome_of(stream, command, &first).await,
            None => Ok(None),
        }
    }

    /// The answer to a command whose first outcome is `first`: its events, its empty
    /// outcome, or its rejection (as an error). `None` when `first` says events were appended
    /// but none has the derived id (events appended directly with that command id).
    async fn outcome_of(
        &self,
        stream: &StreamId,
        command: &A::Command,
        first: &CommandRecord,
    ) -> Result<Option<Executed<A>>, Error<A::Error>> {
        let command_id = first.command_id;
        if first.stream_id != *stream {
            return Err(if first.appended() {
                StoreError::DuplicateEventId {
                    event_id: derived_event_id(command_id, 0),
                    stream: stream.clone(),
                }
            } else {
                StoreError::CommandDecided {
                    command_id,
                    stream: first.stream_id.clone(),
                }
            }
            .into());
        }
        match &first.outcome {
            CommandOutcome::NoEvents => Ok(Some(Executed {
                stream_id: stream.clone(),
                events: Vec::new(),
                version: first.version,
                position: 0,
                duplicate: true,
            })),
            CommandOutcome::Rejected { message } => {
                let loaded = self.load_stream(stream, Some(first.version)).await?;
                match loaded.state.handle(command.clone()) {
                    Err(error) => Err(Error::Rejected(error)),
                    Ok(_) => {
                        tracing::warn!(
                            stream = %stream,
                            %command_id,
                            version = first.version,
                            rejection = %message,
                            "a command retried with its command id is no longer rejected on the state it was rejected on"
                        );
                        Err(Error::InconsistentRetry {
                            command_id,
                            stream: stream.clone(),
                            version: first.version,
                            message: message.clone(),
                        })
                    }
                }
            }
            CommandOutcome::Appended => self.appended_outcome(stream, command_id).await,
        }
    }

    async fn appended_outcome(
        &self,
        stream: &StreamId,
        command_id: Uuid,
    ) -> Result<Option<Executed<A>>, Error<A::Error>> {
        let Some(first) = self
            .store
            .event_by_id(derived_event_id(command_id, 0))
            .await?
        else {
            return Ok(None);
        };
        if first.stream_id != *stream {
            return Err(StoreError::DuplicateEventId {
                event_id: first.event_id,
                stream: stream.clone(),
            }
            .into());
        }
        let tail = self
            .store
            .read_stream(stream, &StreamRead::from_version(first.stream_version))
            .await?;
        let mut events = Vec::new();
        let mut version = first.stream_version;
        let mut position = first.position;
        for (index, recorded) in tail.iter().enumerate() {
            let expected_id = u32::try_from(index)
                .ok()
                .map(|i| derived_event_id(command_id, i));
            if expected_id != Some(recorded.event_id) {
                break;
            }
            events.extend(decode_one::<A>(
                &recorded.stream_id,
                recorded.stream_version,
                recorded.position,
                &recorded.event_type,
                recorded.schema_version,
                &recorded.payload,
            )?);
            version = recorded.stream_version;
            position = recorded.position;
        }
        Ok(Some(Executed {
            stream_id: stream.clone(),
            events,
            version,
            position,
            duplicate: true,
        }))
    }

    /// Saves a snapshot of `current` when the policy asks for one between version `before`
    /// and the current version.
    async fn maybe_snapshot(&self, stream: &StreamId, current: &Loaded<A>, before: u64) {
        let version = current.version;
        if !A::SNAPSHOT.due(before, version) {
            return;
        }
        let Some(state) = current.state.encode_state() else {
            return;
        };
        let result = match state {
            Ok(state) => {
                let snapshot = Snapshot {
                    stream_id: stream.clone(),
                    version,
                    schema_version: A::STATE_VERSION,
                    state,
                    taken_at: Utc::now(),
                };
                self.store.save_snapshot(&snapshot).await
            }
            Err(source) => Err(StoreError::Encode {
                what: "aggregate state",
                source,
            }),
        };
        if let Err(error) = result {
            // The events are committed; a missing snapshot only costs a longer replay.
            tracing::warn!(stream = %stream, version, %error, "could not save snapshot");
        }
    }
}

impl<A> Shared<A> {
    fn new(cache_entries: usize) -> Self {
        Self {
            cache: AggregateCache::new(cache_entries),
            speculation: SpeculationStats::default(),
        }
    }
}

impl<A: Default> Loaded<A> {
    /// The state of an aggregate without events.
    fn initial() -> Self {
        Self {
            state: A::default(),
            version: 0,
        }
    }
}

/// Reports a command decided again after its append conflicted: a stale cache entry, a
/// stream that was not new, or a lost race. Many of the first kind mean that several
/// processes write the same aggregates; many of the second, that speculation does not pay.
fn redecided(stream: &StreamId, basis: Basis, expected: u64, actual: u64) {
    let reason = match basis {
        Basis::Cached => "stale_cache",
        Basis::Initial => "speculation",
        Basis::Store => "conflict",
    };
    tracing::debug!(stream = %stream, expected, actual, reason, "deciding a command again");
    #[cfg(feature = "metrics")]
    metrics::counter!(
        "factum_commands_redecided_total",
        "category" => stream.category().to_owned(),
        "reason" => reason,
    )
    .increment(1);
}

/// Refuses a command whose `#[id]` names an instance other than `id`.
fn check_instance<C: Command, E>(command: &C, id: &str) -> Result<(), Error<E>> {
    match command.aggregate_id() {
        Some(named) if named != id => Err(Error::WrongInstance {
            command: C::NAME,
            given: id.to_owned(),
            named: named.to_owned(),
        }),
        _ => Ok(()),
    }
}

/// A command being decided, and what it needs besides a state.
struct Decision<'a, A: Aggregate> {
    stream: &'a StreamId,
    command: A::Command,
    command_id: Uuid,
    event_meta: &'a Metadata,
    /// The version it must be decided on (`execute_expecting`).
    expected: Option<u64>,
    /// The command as given, when it has a command id.
    original: Option<&'a A::Command>,
}

/// Where the state a command is decided on came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Basis {
    /// Read from the store for this command: current, but for concurrent writers.
    Store,
    /// The cache: current unless another process or repository wrote to the stream since.
    Cached,
    /// The initial state, assumed because the stream was not cached: current if the
    /// stream has no events.
    Initial,
}

enum Outcome<A: Aggregate> {
    Done(Executed<A>),
    /// The handler appended nothing (`Ok`) or rejected the command, on `version`.
    Decided {
        version: u64,
        outcome: Result<(), A::Error>,
    },
}

fn encode_all<A: Aggregate>(
    stream: &StreamId,
    events: &[A::Event],
    command_id: Uuid,
    metadata: &Metadata,
) -> Result<Vec<NewEvent>, Error<A::Error>> {
    events
        .iter()
        .zip(0u32..)
        .map(|(event, index)| {
            let payload = event.encode().map_err(|source| Error::Encode {
                stream: stream.clone(),
                event_type: event.event_type(),
                source,
            })?;
            Ok(NewEvent {
                event_id: derived_event_id(command_id, index),
                event_type: event.event_type().to_owned(),
                schema_version: event.schema_version(),
                payload,
                metadata: metadata.clone(),
            })
        })
        .collect()
}

fn decode_one<A: Aggregate>(
    stream: &StreamId,
    stream_version: u64,
    position: u64,
    event_type: &str,
    schema_version: u32,
    payload: &Payload,
) -> Result<crate::event::Decoded<A::Event>, Error<A::Error>> {
    A::Event::decode(event_type, schema_version, payload).map_err(|source| Error::Decode {
        stream: stream.clone(),
        stream_version,
        position,
        source,
    })
}

fn apply_all<A: Aggregate>(
    stream: &StreamId,
    loaded: &mut Loaded<A>,
    events: &[ReplayEvent],
) -> Result<(), Error<A::Error>> {
    for e in events {
        let decoded = decode_one::<A>(
            stream,
            e.stream_version,
            e.position,
            &e.event_type,
            e.schema_version,
            &e.payload,
        )?;
        for event in decoded {
            loaded.state.apply(&event);
        }
        loaded.version = e.stream_version;
    }
    Ok(())
}

/// The pauses before re-running a command that lost an append race: from 10 ms, doubling up
/// to 200 ms, each drawn between half its step and the step.
fn conflict_pauses() -> impl Iterator<Item = std::time::Duration> {
    crate::runtime::backoff::jittered(
        std::time::Duration::from_millis(10),
        std::time::Duration::from_millis(200),
    )
}

#[cfg(test)]
mod conflict_tests {
    use std::time::Duration;

    #[test]
    fn conflict_pauses_are_short_jittered_and_bounded() {
        let pauses: Vec<Duration> = super::conflict_pauses().take(10).collect();
        assert!(pauses[0] >= Duration::from_millis(5) && pauses[0] <= Duration::from_millis(10));
        assert!(pauses[1] >= Duration::from_millis(10) && pauses[1] <= Duration::from_millis(20));
        assert!(
            pauses.iter().all(|p| *p <= Duration::from_millis(200)),
            "{pauses:?}"
        );
        assert!(pauses[9] >= Duration::from_millis(100), "{pauses:?}");
    }
}
