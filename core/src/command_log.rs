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
        message: String,
    },
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
