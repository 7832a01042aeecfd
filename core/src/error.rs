//! Error types, one per layer.

use uuid::Uuid;

use crate::stream::{ExpectedVersion, StreamId};

/// A malformed stream name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamIdError {
    /// The category is empty, too long, or has characters other than ASCII letters, digits
    /// and `_`.
    #[error("invalid stream category `{category}`: expected 1 to 64 ASCII letters, digits or `_`")]
    InvalidCategory {
        /// The category given.
        category: String,
    },
    /// The id part is empty.
    #[error("empty id in stream of category `{category}`")]
    EmptyId {
        /// The category given.
        category: String,
    },
    /// The name has no `-` between category and id.
    #[error("stream name `{stream}` has no `-` between category and id")]
    MissingSeparator {
        /// The name given.
        stream: String,
    },
    /// The name is longer than the store accepts.
    #[error("stream name `{stream}` is longer than {max} bytes")]
    TooLong {
        /// The name given.
        stream: String,
        /// The longest name accepted.
        max: usize,
    },
    /// The name has a control character.
    #[error("stream name {stream:?} contains a control character")]
    ControlCharacter {
        /// The name given.
        stream: String,
    },
}

/// A stored event that cannot be turned into a typed event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// No type of the target set has this stored name.
    #[error("unknown event type `{event_type}`")]
    UnknownType {
        /// The stored type name.
        event_type: String,
    },
    /// The type is known but not at this schema version.
    #[error("unknown version {version} of event type `{event_type}`")]
    UnknownVersion {
        /// The stored type name.
        event_type: String,
        /// The stored schema version.
        version: u32,
    },
    /// The payload does not match the type's shape at that version.
    #[error("payload of `{event_type}` version {version} does not match its type: {source}")]
    Payload {
        /// The stored type name.
        event_type: String,
        /// The stored schema version.
        version: u32,
        /// What serde reported.
        source: serde_json::Error,
    },
    /// An upcaster refused the payload.
    #[error("upcasting `{event_type}` version {version} failed: {message}")]
    Upcast {
        /// The stored type name.
        event_type: String,
        /// The stored schema version.
        version: u32,
        /// What the upcaster reported.
        message: String,
    },
}

impl DecodeError {
    /// A payload error.
    pub fn payload(event_type: &str, version: u32, source: serde_json::Error) -> Self {
        Self::Payload {
            event_type: event_type.to_owned(),
            version,
            source,
        }
    }
}

/// A boxed error from a store's backend.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What an [`EventStore`](crate::EventStore) reports.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The stream is not at the expected version: someone else appended first.
    #[error(
        "wrong expected version for stream `{stream}`: expected {expected}, actual version {actual}"
    )]
    WrongExpectedVersion {
        /// The stream appended to.
        stream: StreamId,
        /// What the writer expected.
        expected: ExpectedVersion,
        /// The stream's version when the append was refused (0: no stream).
        actual: u64,
    },
    /// An event id is already stored with other content, or in another stream: an id was
    /// reused for a different event.
    #[error(
        "event id {event_id} is already stored with different content (appending to stream `{stream}`)"
    )]
    DuplicateEventId {
        /// The reused id.
        event_id: Uuid,
        /// The stream appended to.
        stream: StreamId,
    },
    /// The same event id appears twice in one append.
    #[error("event id {event_id} appears more than once in one append to stream `{stream}`")]
    RepeatedEventIdInBatch {
        /// The repeated id.
        event_id: Uuid,
        /// The stream appended to.
        stream: StreamId,
    },
    /// The event type name is empty, too long, or holds a control character.
    #[error(
        "invalid event type name {event_type:?} in append to stream `{stream}`: expected 1 to 255 bytes without control characters"
    )]
    InvalidEventType {
        /// The name given.
        event_type: String,
        /// The stream appended to.
        stream: StreamId,
    },
    /// The command id of the appended events already has an outcome without events (it
    /// appended nothing, or was rejected), or has an outcome in another stream.
    #[error(
        "command {command_id} already has an outcome recorded for stream `{stream}`; its events are not appended"
    )]
    CommandDecided {
        /// The command id.
        command_id: Uuid,
        /// The stream the outcome was recorded for.
        stream: StreamId,
    },
    /// A stored row that cannot be read back: corrupt or written by something else.
    #[error("corrupt stored data at {location}: {message}")]
    Corrupt {
        /// Where: stream and version, or position.
        location: String,
        /// What is wrong.
        message: String,
    },
    /// JSON encoding failed.
    #[error("cannot encode {what}: {source}")]
    Encode {
        /// What was encoded.
        what: &'static str,
        /// What serde reported.
        source: serde_json::Error,
    },
    /// The backend failed (connection, I/O, database error).
    #[error("event store backend error: {0}")]
    Backend(#[source] BoxError),
    /// A string of an event's payload or metadata (a value or an object key) holds the NUL
    /// character (`\u0000`), which no store keeps (PostgreSQL's `jsonb` refuses it). Every
    /// store refuses the whole append before writing anything.
    #[error(
        "event `{event_type}` ({event_id}) in append to stream `{stream}` has a NUL character (\\u0000) in its {part} at {path}"
    )]
    NulCharacter {
        /// The stream appended to.
        stream: StreamId,
        /// The event's id.
        event_id: Uuid,
        /// The event's type name.
        event_type: String,
        /// The payload or the metadata.
        part: EventPart,
        /// The JSONPath of the string or key holding it, such as `$.lines[0].sku`.
        path: String,
    },
    /// A snapshot's state holds a NUL character (`\u0000`), which PostgreSQL's `jsonb` cannot
    /// store: every store refuses it before writing, so the stores behave the same.
    #[error(
        "snapshot of stream `{stream}` at version {version} has a NUL character (\\u0000) in its state at {path}"
    )]
    NulCharacterInSnapshot {
        /// The aggregate's stream.
        stream: StreamId,
        /// The stream version the state reflects.
        version: u64,
        /// The JSONPath of the string or key holding it.
        path: String,
    },
    /// A tenant id refused, or a call a multi-tenant store refuses for its tenant: no
    /// tenant, another tenant's event, a tenant bound to a single-tenant store. Nothing was
    /// written or returned.
    #[error(transparent)]
    Tenant(#[from] crate::tenant::TenantError),
    /// A personal field cannot be encrypted or decrypted (a ciphertext failing
    /// authentication, a missing key), naming the event: see [`crate::personal`].
    #[error(transparent)]
    Personal(Box<crate::personal::PersonalError>),
}

/// A part of an event that holds JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventPart {
    /// The payload.
    Payload,
    /// The metadata.
    Metadata,
}

impl std::fmt::Display for EventPart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EventPart::Payload => "payload",
            EventPart::Metadata => "metadata",
        })
    }
}

impl StoreError {
    /// Whether this is an optimistic-concurrency conflict, which a retry after reloading may
    /// resolve.
    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::WrongExpectedVersion { .. })
    }

    /// The stored event this error says cannot be decoded, when retrying the read will not
    /// change that (see [`PersonalError::undecodable_event`](crate::personal::PersonalError::undecodable_event)):
    /// projection runners park it or stop on it, process managers stop on it, instead of
    /// reading it again forever.
    pub fn undecodable_event(&self) -> Option<crate::personal::UndecodableEvent> {
        match self {
            StoreError::Personal(error) => error.undecodable_event(),
            _ => None,
        }
    }
}

/// What executing a command or loading an aggregate reports; `E` is the aggregate's domain
/// error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error<E> {
    /// The aggregate rejected the command.
    #[error("command rejected: {0}")]
    Rejected(#[source] E),
    /// The command failed its own validation before the aggregate was loaded.
    #[error("invalid command `{command}`: {message}")]
    InvalidCommand {
        /// The command's name.
        command: &'static str,
        /// What the validation reported.
        message: String,
    },
    /// The aggregate id does not make a valid stream name.
    #[error(transparent)]
    StreamId(#[from] StreamIdError),
    /// Conflicting writers kept winning until the retries ran out.
    #[error(
        "gave up on stream `{stream}` after {attempts} conflicting appends (last: expected version {expected}, actual {actual})"
    )]
    Conflict {
        /// The stream.
        stream: StreamId,
        /// How many attempts were made.
        attempts: u32,
        /// The version the last attempt expected.
        expected: u64,
        /// The version the stream had.
        actual: u64,
    },
    /// The stream is not at the version the caller expected (an HTTP `If-Match` that no
    /// longer holds): the command was not decided. Not retried: the caller decides again on
    /// the current state.
    #[error("stream `{stream}` is at version {actual}, not at the expected version {expected}")]
    VersionMismatch {
        /// The stream.
        stream: StreamId,
        /// The version the caller expected.
        expected: u64,
        /// The version the stream has.
        actual: u64,
    },
    /// The command was executed on an instance other than the one its `#[id]` names.
    #[error("command `{command}` names instance `{named}` but was executed on instance `{given}`")]
    WrongInstance {
        /// The command's name.
        command: &'static str,
        /// The instance it was executed on.
        given: String,
        /// The instance its `#[id]` field names.
        named: String,
    },
    /// No aggregate registered with the router accepts this command type.
    #[error(
        "no aggregate registered with the router accepts command `{command}` (version {version})"
    )]
    NotRouted {
        /// The command's name.
        command: &'static str,
        /// The command's version.
        version: u32,
    },
    /// A command rejected earlier was retried with its command id, but deciding it again on
    /// the state it was rejected on does not reject it: the command id was reused for
    /// another command, or the handler changed since.
    #[error(
        "command {command_id} was rejected at version {version} of stream `{stream}` ({message}), but deciding it again on that state does not reject it: was the command id reused for another command?"
    )]
    InconsistentRetry {
        /// The command id.
        command_id: Uuid,
        /// The stream.
        stream: StreamId,
        /// The version it was rejected on.
        version: u64,
        /// The recorded rejection's text.
        message: String,
    },
    /// A stored event cannot be decoded.
    #[error(
        "cannot decode event at position {position} (stream `{stream}` version {stream_version}): {source}"
    )]
    Decode {
        /// The stream.
        stream: StreamId,
        /// The event's version in the stream.
        stream_version: u64,
        /// The event's global position.
        position: u64,
        /// What went wrong.
        source: DecodeError,
    },
    /// An event produced by the aggregate cannot be encoded.
    #[error("cannot encode event `{event_type}` for stream `{stream}`: {source}")]
    Encode {
        /// The stream.
        stream: StreamId,
        /// The event's type name.
        event_type: &'static str,
        /// What serde reported.
        source: serde_json::Error,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl<E> Error<E> {
    /// The domain error, when the aggregate rejected the command.
    pub fn rejection(&self) -> Option<&E> {
        match self {
            Error::Rejected(e) => Some(e),
            _ => None,
        }
    }

    /// The same error with the domain error converted by `f`: how a
    /// [`Router`](crate::Router) erases each aggregate's error type into a
    /// [`Rejection`](crate::Rejection).
    pub fn map_rejection<F>(self, f: impl FnOnce(E) -> F) -> Error<F> {
        match self {
            Error::Rejected(e) => Error::Rejected(f(e)),
            Error::InvalidCommand { command, message } => {
                Error::InvalidCommand { command, message }
            }
            Error::StreamId(e) => Error::StreamId(e),
            Error::Conflict {
                stream,
                attempts,
                expected,
                actual,
            } => Error::Conflict {
                stream,
                attempts,
                expected,
                actual,
            },
            Error::VersionMismatch {
                stream,
                expected,
                actual,
            } => Error::VersionMismatch {
                stream,
                expected,
                actual,
            },
            Error::WrongInstance {
                command,
                given,
                named,
            } => Error::WrongInstance {
                command,
                given,
                named,
            },
            Error::NotRouted { command, version } => Error::NotRouted { command, version },
            Error::InconsistentRetry {
                command_id,
                stream,
                version,
                message,
            } => Error::InconsistentRetry {
                command_id,
                stream,
                version,
                message,
            },
            Error::Decode {
                stream,
                stream_version,
                position,
                source,
            } => Error::Decode {
                stream,
                stream_version,
                position,
                source,
            },
            Error::Encode {
                stream,
                event_type,
                source,
            } => Error::Encode {
                stream,
                event_type,
                source,
            },
            Error::Store(e) => Error::Store(e),
        }
    }
}
