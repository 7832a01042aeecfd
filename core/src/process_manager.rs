//! Process managers (sagas): events routed to instances by a correlation key, handlers that
//! decide commands, an outbox of commands with deterministic ids, compensation and durable
//! timeouts.
//!
//! A [`ProcessManager`] routes each event to an instance ([`Route`]): a start creates the
//! instance (a strict start refuses one that exists), a continue reaches an existing one, a
//! stop finishes it. Its handlers change the instance's state and return [`Effects`]:
//! commands to dispatch, timeouts to schedule or cancel, completion.
//!
//! # No duplicated effects
//!
//! Processing an event stores, in one [`ProcessStore::save`], the instance's new state, the
//! event's position (so a redelivered event is recognised and not applied twice) and the
//! commands it caused (an outbox). Each command gets an id derived from the process, the
//! instance, the causing event and the command's index ([`process_command_id`]), so dispatching
//! it again after a crash hits the repository's command-id idempotency and appends nothing
//! new. Commands leave the outbox once dispatched; a worker that takes over a partition first
//! dispatches what the outbox still holds.
//!
//! # Compensation and timeouts
//!
//! A command rejected by its aggregate ([`DispatchError::Rejected`]) is given to
//! [`ProcessManager::on_rejected`], whose effects (compensating commands) go through the same
//! outbox. Timeouts are stored with the instance, as wall-clock deadlines read from a [`Clock`];
//! a worker fires the due ones, so a deadline that passes while no process runs fires after the
//! restart.

use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::coordination::CoordinationError;
use crate::error::{BoxError, StoreError};
use crate::event::RecordedEvent;
use crate::router::Rejection;

mod clock;
mod dispatch;
mod effects;
mod options;
mod runner;
mod store;
mod worker;

pub use clock::{Clock, ManualClock, SystemClock};
pub use dispatch::{CommandDispatcher, DispatchError, DispatchFn, dispatch_fn};
pub use effects::{Effects, Route};
pub use options::ProcessOptions;
pub use runner::{ProcessManagerRunner, RunningProcessManagers};
pub use store::{
    Deadline, InstanceStatus, MemoryProcessStore, PendingCommand, ProcessInstance, ProcessStore,
};

/// Namespace of the command ids derived by process managers.
const COMMAND_ID_NAMESPACE: Uuid = Uuid::from_u128(0x3b1c_9d0e_77a4_4f52_8e6b_5a0d_c2f1_9e34);

/// The id of the `index`-th command that process `process`, instance `key`, dispatches because
/// of the message `cause` (an event id, a rejected command's id, or a timeout's id). The same
/// inputs always give the same id, so a redelivered event re-dispatches the same command and
/// the repository's command-id idempotency keeps it from applying twice.
pub fn process_command_id(process: &str, key: &str, cause: Uuid, index: u32) -> Uuid {
    let mut name = Vec::with_capacity(process.len() + key.len() + 22);
    name.extend_from_slice(process.as_bytes());
    name.push(0);
    name.extend_from_slice(key.as_bytes());
    name.push(0);
    name.extend_from_slice(cause.as_bytes());
    name.extend_from_slice(&index.to_be_bytes());
    Uuid::new_v5(&COMMAND_ID_NAMESPACE, &name)
}
/// A process manager: routes events to instances and decides commands.
///
/// Handlers are plain functions of the instance's state and the event, like an aggregate's;
/// the runtime stores the state, dispatches the commands and fires the timeouts.
///
/// ```
/// use factum::{BoxError, Effects, ProcessManager, RecordedEvent};
/// use factum::process::{Route};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Serialize, Deserialize)]
/// enum Command {
///     Reserve { order_id: String },
///     Cancel { order_id: String },
/// }
///
/// #[derive(Default, Serialize, Deserialize)]
/// struct Fulfillment {
///     reserved: bool,
/// }
///
/// struct OrderFulfillment;
///
/// impl ProcessManager for OrderFulfillment {
///     type State = Fulfillment;
///     type Command = Command;
///
///     fn name(&self) -> &str {
///         "order_fulfillment"
///     }
///
///     fn event_types(&self) -> Vec<String> {
///         vec!["OrderPlaced".into(), "OrderShipped".into()]
///     }
///
///     fn route(&self, event: &RecordedEvent) -> Result<Route, BoxError> {
///         let order_id = event.stream_id.id().to_owned();
///         Ok(match event.event_type.as_str() {
///             "OrderPlaced" => Route::StartStrict(order_id),
///             "OrderShipped" => Route::Stop(order_id),
///             _ => Route::Ignore,
///         })
///     }
///
///     fn handle(
///         &self,
///         state: &mut Fulfillment,
///         event: &RecordedEvent,
///     ) -> Result<Effects<Command>, BoxError> {
///         let order_id = event.stream_id.id().to_owned();
///         Ok(match event.event_type.as_str() {
///             "OrderPlaced" => {
///                 state.reserved = true;
///                 Effects::none()
///                     .command(Command::Reserve { order_id })
///                     .schedule("payment", event.recorded_at + chrono::Duration::days(1))
///             }
///             _ => Effects::none(),
///         })
///     }
///
///     fn on_timeout(
///         &self,
///         key: &str,
///         _state: &mut Fulfillment,
///         _name: &str,
///     ) -> Result<Effects<Command>, BoxError> {
///         Ok(Effects::none()
///             .command(Command::Cancel { order_id: key.to_owned() })
///             .complete())
///     }
/// }
/// ```
pub trait ProcessManager: Send + Sync + 'static {
    /// An instance's state, stored as JSON between events.
    type State: Serialize + DeserializeOwned + Default + Send + Sync;
    /// The commands it dispatches, stored in the outbox as JSON until dispatched.
    type Command: Serialize + DeserializeOwned + Send + Sync + 'static;

    /// The name: the key of its instances, checkpoints and leases. Unique among the
    /// projections and process managers sharing those stores.
    fn name(&self) -> &str;

    /// The stored event types it handles; other events are never read. Empty: every event.
    fn event_types(&self) -> Vec<String>;

    /// Where `event` goes.
    ///
    /// An error (typically an event that does not decode, so its key cannot be read) stops
    /// the process manager at this event, as a handler error does: every partition reads the
    /// event and none can tell whether it owns it, so every partition stops there, its
    /// checkpoint before the event, and resumes from it when restarted after a fix. Nothing
    /// is skipped.
    fn route(&self, event: &RecordedEvent) -> Result<Route, BoxError>;

    /// Handles `event` in an instance. An error stops the partition at this event.
    fn handle(
        &self,
        state: &mut Self::State,
        event: &RecordedEvent,
    ) -> Result<Effects<Self::Command>, BoxError>;

    /// A dispatched command was rejected: returns compensating effects. By default, none.
    /// `error` holds the aggregate's own error: match it with
    /// [`Rejection::downcast_ref`](crate::Rejection::downcast_ref).
    fn on_rejected(
        &self,
        state: &mut Self::State,
        command: &Self::Command,
        error: &Rejection,
    ) -> Result<Effects<Self::Command>, BoxError> {
        let _ = (state, command, error);
        Ok(Effects::none())
    }

    /// The timeout `name` of instance `key` fired. By default, nothing happens.
    fn on_timeout(
        &self,
        key: &str,
        state: &mut Self::State,
        name: &str,
    ) -> Result<Effects<Self::Command>, BoxError> {
        let _ = (key, state, name);
        Ok(Effects::none())
    }
}
/// What the process-manager runtime reports.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessError {
    /// The event store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The process, checkpoint or lease store failed.
    #[error(transparent)]
    Coordination(#[from] CoordinationError),
    /// A handler failed.
    #[error(
        "process `{name}` instance `{key}` failed on the event at position {position}: {source}"
    )]
    Handler {
        /// The process manager.
        name: String,
        /// The instance.
        key: String,
        /// The event's position (0 for a timeout or a rejection).
        position: u64,
        /// What the handler reported.
        source: BoxError,
    },
    /// The event could not be routed (see [`ProcessManager::route`]).
    #[error(
        "process `{name}` cannot route the `{event_type}` event at position {position} of stream `{stream}`: {source}"
    )]
    Route {
        /// The process manager.
        name: String,
        /// The event's position.
        position: u64,
        /// The event's stream.
        stream: String,
        /// The event's stored type.
        event_type: String,
        /// What `route` reported.
        source: BoxError,
    },
    /// A command could not be dispatched after every retry.
    #[error(
        "process `{name}` instance `{key}` could not dispatch command {command_id} after {attempts} attempts: {source}"
    )]
    Dispatch {
        /// The process manager.
        name: String,
        /// The instance.
        key: String,
        /// The command's id.
        command_id: Uuid,
        /// How many attempts were made.
        attempts: u32,
        /// The last error.
        source: BoxError,
    },
    /// A state or command does not encode or decode.
    #[error("process `{name}` instance `{key}`: cannot encode or decode {what}: {source}")]
    Json {
        /// The process manager.
        name: String,
        /// The instance.
        key: String,
        /// The state or a command.
        what: &'static str,
        /// What serde reported.
        source: serde_json::Error,
    },
    /// No process manager of this name is registered.
    #[error("no process manager named `{name}` is registered")]
    Unknown {
        /// The name asked for.
        name: String,
    },
    /// A partition's worker has stopped.
    #[error("process `{name}` partition {partition} is not running")]
    NotRunning {
        /// The process manager.
        name: String,
        /// The partition.
        partition: u32,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_ids_are_deterministic_and_distinct() {
        let cause = Uuid::now_v7();
        let a = process_command_id("p", "k", cause, 0);
        assert_eq!(a, process_command_id("p", "k", cause, 0));
        assert_ne!(a, process_command_id("p", "k", cause, 1));
        assert_ne!(a, process_command_id("p", "k2", cause, 0));
        assert_ne!(a, process_command_id("q", "k", cause, 0));
        assert_ne!(a, process_command_id("p", "k", Uuid::now_v7(), 0));
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(
            process_command_id("ab", "c", cause, 0),
            process_command_id("a", "bc", cause, 0)
        );
    }
}
