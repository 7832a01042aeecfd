//! Aggregates and commands: decide (command to events) and evolve (event to state).

use crate::event::{EventSet, Payload};

/// When the repository saves a snapshot of an aggregate's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotPolicy {
    /// Never: every load replays the whole stream.
    Never,
    /// Each time the stream's version crosses a multiple of this number.
    Every(u64),
}

impl SnapshotPolicy {
    /// Whether appending from version `before` to `after` crosses a snapshot point.
    pub fn due(self, before: u64, after: u64) -> bool {
        match self {
            SnapshotPolicy::Never => false,
            SnapshotPolicy::Every(0) => false,
            SnapshotPolicy::Every(n) => before / n != after / n,
        }
    }
}

/// A consistency boundary: state that decides on commands and evolves by events.
///
/// `#[aggregate]` implements it from plain handler methods. By hand:
///
/// ```
/// use factum::{Aggregate, SnapshotPolicy};
/// # use factum::__doc_support::{CounterEvent, CounterCommand, Incremented, Increment, CounterError};
/// #[derive(Default)]
/// struct Counter { value: u64 }
///
/// impl Aggregate for Counter {
///     const CATEGORY: &'static str = "counter";
///     type Event = CounterEvent;
///     type Command = CounterCommand;
///     type Error = CounterError;
///
///     fn handle(&self, command: CounterCommand) -> Result<Vec<CounterEvent>, CounterError> {
///         match command {
///             CounterCommand::Increment(Increment { by }) if self.value.checked_add(by).is_none() => {
///                 Err(CounterError::Overflow)
///             }
///             CounterCommand::Increment(Increment { by }) => {
///                 Ok(vec![CounterEvent::Incremented(Incremented { by })])
///             }
///         }
///     }
///
///     fn apply(&mut self, event: &CounterEvent) {
///         match event {
///             CounterEvent::Incremented(e) => self.value += e.by,
///         }
///     }
/// }
/// ```
pub trait Aggregate: Default + Send + Sync + Sized + 'static {
    /// The stream category: streams are named `{CATEGORY}-{id}`.
    const CATEGORY: &'static str;
    /// The schema version of the state, for snapshots: a snapshot of another version is
    /// ignored and the state is rebuilt by replay.
    const STATE_VERSION: u32 = 1;
    /// When to save snapshots.
    const SNAPSHOT: SnapshotPolicy = SnapshotPolicy::Never;

    /// The aggregate's events.
    type Event: EventSet;
    /// The commands it accepts.
    type Command: CommandSet;
    /// Why it rejects a command.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Decides: checks the command against the state and returns the events it causes.
    fn handle(&self, command: Self::Command) -> Result<Vec<Self::Event>, Self::Error>;

    /// Evolves: applies one event to the state. Must not fail: the event already happened.
    fn apply(&mut self, event: &Self::Event);

    /// Serializes the state for a snapshot; `None` when the aggregate has no snapshots.
    fn encode_state(&self) -> Option<Result<Payload, serde_json::Error>> {
        None
    }

    /// Deserializes a snapshot's state; `None` when the aggregate has no snapshots.
    fn decode_state(state: &Payload) -> Option<Result<Self, serde_json::Error>> {
        let _ = state;
        None
    }
}

/// One command type: a versioned request, such as `PlaceOrderV1` (name `PlaceOrder`,
/// version 1). Implemented by `#[command]`.
pub trait Command: Send + 'static {
    /// The command's name, without the version suffix.
    const NAME: &'static str;
    /// The command's version.
    const VERSION: u32;

    /// The id of the aggregate instance it targets, when the command carries one.
    fn aggregate_id(&self) -> Option<&str> {
        None
    }

    /// Checks the command on its own, before any aggregate is loaded.
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

/// A command that names the aggregate instance it targets: a `#[command]` with an `#[id]`
/// field. Only such commands can be executed without naming the instance
/// ([`Repository::execute`](crate::Repository::execute)) or dispatched by a
/// [`Router`](crate::Router); the instance's stream is `{CATEGORY}-{instance_id}`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` does not name the aggregate instance it targets",
    label = "no `#[id]` field",
    note = "mark the field holding the instance's id with `#[id]` in the `#[command]` struct, or name the instance with `execute_on(id, command, metadata)`"
)]
pub trait Routed: Command {
    /// The id of the instance the command targets.
    fn instance_id(&self) -> &str;
}

/// Visits the command types of a [`CommandSet`]; see [`CommandSet::visit_commands`].
pub trait CommandVisitor<Set> {
    /// Called once for each command type `C` of the set.
    fn visit<C: Command + Into<Set>>(&mut self);
}

/// The set of commands one aggregate accepts: the enum `#[aggregate]` generates.
///
/// Commands are `Clone` so that a command that lost an append race can be decided again on
/// the new state.
pub trait CommandSet: Clone + Send + Sync + 'static {
    /// The name of this command.
    fn command_name(&self) -> &'static str;

    /// The version of this command.
    fn command_version(&self) -> u32;

    /// The target aggregate id, when the command carries one.
    fn aggregate_id(&self) -> Option<&str> {
        None
    }

    /// Checks the command on its own, before any aggregate is loaded.
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }

    /// Calls `visitor` once for each command type of the set, so that a
    /// [`Router`](crate::Router) can route each of them to the aggregate. `#[aggregate]`
    /// generates it; the default visits none.
    fn visit_commands<V: CommandVisitor<Self>>(visitor: &mut V)
    where
        Self: Sized,
    {
        let _ = visitor;
    }
}

#[cfg(test)]
mod tests {
    use super::SnapshotPolicy;

    #[test]
    fn snapshot_due_when_crossing_a_multiple() {
        let p = SnapshotPolicy::Every(100);
        assert!(!p.due(0, 99));
        assert!(p.due(99, 100));
        assert!(p.due(50, 250));
        assert!(!p.due(100, 199));
        assert!(!SnapshotPolicy::Never.due(0, 1000));
        assert!(!SnapshotPolicy::Every(0).due(0, 1000));
    }
}
