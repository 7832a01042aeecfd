//! The command log: the first outcome of each command id, so that a retry gets it again.

use uuid::Uuid;

use crate::stream::StreamId;

/// How a command with a command id ended, as the store keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandOutcome {
    /// It appended events (with the ids [`derived_event_id`](crate::store::derived_event_id) gives
    /// for the command id).
    Appended,
    /// It was accepted and appended nothing.
    NoEvents,
    /// The aggregate rejected it.
    Rejected {
        /// The rejection's text, for people reading the log. A retry gets the typed
        /// rejection back by deciding the command again on the state it was rejected on.
        /// Stores keep it as [`storable_message`] gives it: a NUL character, which
        /// PostgreSQL's `text` cannot hold, reads back as U+FFFD.
        message: String,
    },
}

/// A rejection's text as every store keeps it: NUL characters (which a rejection can carry
/// from a command's input, and PostgreSQL's `text` cannot hold) replaced by U+FFFD, every
/// other character kept.
///
/// ```
/// use factum::store::storable_message;
/// assert_eq!(storable_message("bad name 'a\u{0}b'"), "bad name 'a\u{fffd}b'");
/// assert_eq!(storable_message("😀 --"), "😀 --");
/// ```
pub fn storable_message(message: &str) -> std::borrow::Cow<'_, str> {
    if message.contains('\0') {
        std::borrow::Cow::Owned(message.replace('\0', "\u{fffd}"))
    } else {
        std::borrow::Cow::Borrowed(message)
    }
}

/// The first outcome of a command id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandRecord {
    /// The command id.
    pub command_id: Uuid,
    /// The aggregate's stream.
    pub stream_id: StreamId,
    /// The stream version the command was decided on (for [`CommandOutcome::Appended`], the
    /// version before its events).
    pub version: u64,
    /// How it ended.
    pub outcome: CommandOutcome,
}

impl CommandRecord {
    /// Whether the command appended events.
    pub fn appended(&self) -> bool {
        self.outcome == CommandOutcome::Appended
    }
}
