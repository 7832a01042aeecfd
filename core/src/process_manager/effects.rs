//! Where an event goes and what a handler decided.

use chrono::{DateTime, Utc};

/// Where an event goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// Starts the instance with this key, or continues it when it exists.
    Start(String),
    /// Starts the instance with this key; refused (and logged) when it exists already.
    StartStrict(String),
    /// Continues the existing instance with this key; ignored when there is none.
    Continue(String),
    /// Handles the event in the existing instance with this key, then completes it.
    Stop(String),
    /// Not for this process manager.
    Ignore,
}

impl Route {
    /// The correlation key, unless ignored.
    pub fn key(&self) -> Option<&str> {
        match self {
            Route::Start(k) | Route::StartStrict(k) | Route::Continue(k) | Route::Stop(k) => {
                Some(k)
            }
            Route::Ignore => None,
        }
    }
}

/// What a handler decided: commands, timeouts, completion.
#[derive(Clone, Debug, PartialEq)]
#[must_use]
pub struct Effects<C> {
    /// Commands to dispatch, in order.
    pub commands: Vec<C>,
    /// Timeouts to schedule (replacing one of the same name).
    pub schedule: Vec<(String, DateTime<Utc>)>,
    /// Names of timeouts to cancel.
    pub cancel: Vec<String>,
    /// Whether the instance is finished.
    pub complete: bool,
}

impl<C> Default for Effects<C> {
    fn default() -> Self {
        Self::none()
    }
}

impl<C> Effects<C> {
    /// Nothing.
    pub fn none() -> Self {
        Self {
            commands: Vec::new(),
            schedule: Vec::new(),
            cancel: Vec::new(),
            complete: false,
        }
    }

    /// Adds a command: one of `C`, or a command that converts into it (each variant's
    /// command of a `#[command]` enum does).
    pub fn command(mut self, command: impl Into<C>) -> Self {
        self.commands.push(command.into());
        self
    }

    /// Schedules the timeout `name` at `at` (replacing an earlier one of that name).
    pub fn schedule(mut self, name: impl Into<String>, at: DateTime<Utc>) -> Self {
        self.schedule.push((name.into(), at));
        self
    }

    /// Cancels the timeout `name`.
    pub fn cancel(mut self, name: impl Into<String>) -> Self {
        self.cancel.push(name.into());
        self
    }

    /// Completes the instance: later events for its key are ignored, its timeouts dropped.
    pub fn complete(mut self) -> Self {
        self.complete = true;
        self
    }
}

impl<C> From<Vec<C>> for Effects<C> {
    fn from(commands: Vec<C>) -> Self {
        Self {
            commands,
            ..Self::none()
        }
    }
}
