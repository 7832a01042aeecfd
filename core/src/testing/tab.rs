//! A small aggregate whose commands can append events, append nothing or be rejected, for
//! the command-idempotency cases of the suite.

use serde::{Deserialize, Serialize};

use crate::aggregate::{Aggregate, Command, CommandSet};
use crate::error::DecodeError;
use crate::event::{Decoded, Event, EventSet, Payload};

/// A tab: opened once, paid once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tab {
    /// Whether it was opened.
    pub open: bool,
    /// Whether it was paid.
    pub paid: bool,
}

/// The tab was opened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Opened {}

impl Event for Opened {
    const NAME: &'static str = "TabOpened";
    const VERSION: u32 = 1;
}

/// The tab was paid.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Paid {
    /// The amount.
    pub amount: u64,
}

impl Event for Paid {
    const NAME: &'static str = "TabPaid";
    const VERSION: u32 = 1;
}

/// The events of a [`Tab`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TabEvent {
    /// See [`Opened`].
    Opened(Opened),
    /// See [`Paid`].
    Paid(Paid),
}

impl EventSet for TabEvent {
    const EVENT_TYPES: &'static [&'static str] = &[Opened::NAME, Paid::NAME];

    fn event_type(&self) -> &'static str {
        match self {
            TabEvent::Opened(_) => Opened::NAME,
            TabEvent::Paid(_) => Paid::NAME,
        }
    }

    fn schema_version(&self) -> u32 {
        1
    }

    fn encode(&self) -> Result<Payload, serde_json::Error> {
        match self {
            TabEvent::Opened(e) => Payload::encode(e),
            TabEvent::Paid(e) => Payload::encode(e),
        }
    }

    fn decode(
        event_type: &str,
        schema_version: u32,
        payload: &Payload,
    ) -> Result<Decoded<Self>, DecodeError> {
        match event_type {
            Opened::NAME => Ok(Opened::decode_stored(schema_version, payload)?.convert()),
            Paid::NAME => Ok(Paid::decode_stored(schema_version, payload)?.convert()),
            _ => Err(DecodeError::UnknownType {
                event_type: event_type.to_owned(),
            }),
        }
    }
}

impl From<Opened> for TabEvent {
    fn from(e: Opened) -> Self {
        TabEvent::Opened(e)
    }
}

impl From<Paid> for TabEvent {
    fn from(e: Paid) -> Self {
        TabEvent::Paid(e)
    }
}

/// Opens the tab; appends nothing when it is open already.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Open;

/// Pays the tab: rejected unless it is open and unpaid; appends nothing instead of rejecting
/// when `only_if_open` is set and the tab is not open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pay {
    /// The amount.
    pub amount: u64,
    /// Append nothing, rather than reject, when the tab is not open.
    pub only_if_open: bool,
}

impl Command for Open {
    const NAME: &'static str = "OpenTab";
    const VERSION: u32 = 1;
}

impl Command for Pay {
    const NAME: &'static str = "PayTab";
    const VERSION: u32 = 1;
}

/// The commands of a [`Tab`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TabCommand {
    /// See [`Open`].
    Open(Open),
    /// See [`Pay`].
    Pay(Pay),
}

impl From<Open> for TabCommand {
    fn from(c: Open) -> Self {
        TabCommand::Open(c)
    }
}

impl From<Pay> for TabCommand {
    fn from(c: Pay) -> Self {
        TabCommand::Pay(c)
    }
}

impl CommandSet for TabCommand {
    fn command_name(&self) -> &'static str {
        match self {
            TabCommand::Open(_) => Open::NAME,
            TabCommand::Pay(_) => Pay::NAME,
        }
    }

    fn command_version(&self) -> u32 {
        1
    }
}

/// Why a [`Tab`] rejects a command.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TabError {
    /// Paying a tab that is not open.
    #[error("the tab is not open")]
    NotOpen,
    /// Paying a tab twice.
    #[error("the tab is already paid")]
    AlreadyPaid,
}

impl Aggregate for Tab {
    const CATEGORY: &'static str = "tab";
    type Event = TabEvent;
    type Command = TabCommand;
    type Error = TabError;

    fn handle(&self, command: TabCommand) -> Result<Vec<TabEvent>, TabError> {
        match command {
            TabCommand::Open(Open) if self.open => Ok(Vec::new()),
            TabCommand::Open(Open) => Ok(vec![Opened {}.into()]),
            TabCommand::Pay(Pay {
                only_if_open: true, ..
            }) if !self.open => Ok(Vec::new()),
            TabCommand::Pay(_) if !self.open => Err(TabError::NotOpen),
            TabCommand::Pay(_) if self.paid => Err(TabError::AlreadyPaid),
            TabCommand::Pay(Pay { amount, .. }) => Ok(vec![Paid { amount }.into()]),
        }
    }

    fn apply(&mut self, event: &TabEvent) {
        match event {
            TabEvent::Opened(_) => self.open = true,
            TabEvent::Paid(_) => self.paid = true,
        }
    }
}
