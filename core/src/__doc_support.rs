//! Hand-written event and command sets used by the documentation examples and the crate's
//! own tests, which cannot use the macros from inside this crate.

#![allow(
    missing_docs,
    reason = "support types for examples, hidden from the docs"
)]

use serde::{Deserialize, Serialize};

use crate::aggregate::{Command, CommandSet};
use crate::error::DecodeError;
use crate::event::{Decoded, Event, EventSet, Payload};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Incremented {
    pub by: u64,
}

impl Event for Incremented {
    const NAME: &'static str = "Incremented";
    const VERSION: u32 = 1;
}

#[derive(Clone, Debug, PartialEq)]
pub enum CounterEvent {
    Incremented(Incremented),
}

impl From<Incremented> for CounterEvent {
    fn from(e: Incremented) -> Self {
        CounterEvent::Incremented(e)
    }
}

impl EventSet for CounterEvent {
    const EVENT_TYPES: &'static [&'static str] = &[Incremented::NAME];

    fn event_type(&self) -> &'static str {
        match self {
            CounterEvent::Incremented(_) => Incremented::NAME,
        }
    }

    fn schema_version(&self) -> u32 {
        match self {
            CounterEvent::Incremented(_) => Incremented::VERSION,
        }
    }

    fn encode(&self) -> Result<Payload, serde_json::Error> {
        match self {
            CounterEvent::Incremented(e) => Payload::encode(e),
        }
    }

    fn decode(
        event_type: &str,
        schema_version: u32,
        payload: &Payload,
    ) -> Result<Decoded<Self>, DecodeError> {
        match event_type {
            Incremented::NAME => Ok(Incremented::decode_stored(schema_version, payload)?.convert()),
            _ => Err(DecodeError::UnknownType {
                event_type: event_type.to_owned(),
            }),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Increment {
    pub by: u64,
}

impl Command for Increment {
    const NAME: &'static str = "Increment";
    const VERSION: u32 = 1;

    fn validate(&self) -> Result<(), String> {
        if self.by == 0 {
            Err("`by` must be at least 1".into())
        } else {
            Ok(())
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum CounterCommand {
    Increment(Increment),
}

impl From<Increment> for CounterCommand {
    fn from(c: Increment) -> Self {
        CounterCommand::Increment(c)
    }
}

impl CommandSet for CounterCommand {
    fn command_name(&self) -> &'static str {
        match self {
            CounterCommand::Increment(_) => Increment::NAME,
        }
    }

    fn command_version(&self) -> u32 {
        match self {
            CounterCommand::Increment(_) => Increment::VERSION,
        }
    }

    fn validate(&self) -> Result<(), String> {
        match self {
            CounterCommand::Increment(c) => c.validate(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CounterError {
    #[error("the counter would overflow")]
    Overflow,
}
