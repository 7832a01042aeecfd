//! A small aggregate with snapshots, for the repository cases of the suite.

use serde::{Deserialize, Serialize};

pub use crate::__doc_support::{
    CounterCommand, CounterError, CounterEvent, Increment, Incremented,
};
use crate::aggregate::{Aggregate, SnapshotPolicy};
use crate::event::Payload;

/// Counts increments; snapshots every 5 events.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counter {
    /// The sum of all increments.
    pub value: u64,
    /// How many increments were applied.
    pub increments: u64,
}

impl Aggregate for Counter {
    const CATEGORY: &'static str = "counter";
    const SNAPSHOT: SnapshotPolicy = SnapshotPolicy::Every(5);
    type Event = CounterEvent;
    type Command = CounterCommand;
    type Error = CounterError;

    fn handle(&self, command: CounterCommand) -> Result<Vec<CounterEvent>, CounterError> {
        let CounterCommand::Increment(Increment { by }) = command;
        self.value.checked_add(by).ok_or(CounterError::Overflow)?;
        Ok(vec![Incremented { by }.into()])
    }

    fn apply(&mut self, event: &CounterEvent) {
        let CounterEvent::Incremented(e) = event;
        self.value = self.value.saturating_add(e.by);
        self.increments += 1;
    }

    fn encode_state(&self) -> Option<Result<Payload, serde_json::Error>> {
        Some(Payload::encode(self))
    }

    fn decode_state(state: &Payload) -> Option<Result<Self, serde_json::Error>> {
        Some(state.decode())
    }
}
