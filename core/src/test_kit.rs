//! Given / when / then for aggregates: the application's own tests of its domain. (Store
//! authors' conformance suites are in `factum::testing`, behind the `testing` feature.)
//!
//! ```
//! use factum::prelude::*;
//! # use factum::__doc_support::{CounterEvent, CounterCommand, CounterError, Incremented, Increment};
//! # #[derive(Debug, Default)]
//! # struct Counter { value: u64 }
//! # impl Aggregate for Counter {
//! #     const CATEGORY: &'static str = "counter";
//! #     type Event = CounterEvent;
//! #     type Command = CounterCommand;
//! #     type Error = CounterError;
//! #     fn handle(&self, c: CounterCommand) -> Result<Vec<CounterEvent>, CounterError> {
//! #         let CounterCommand::Increment(Increment { by }) = c;
//! #         self.value.checked_add(by).ok_or(CounterError::Overflow)?;
//! #         Ok(vec![Incremented { by }.into()])
//! #     }
//! #     fn apply(&mut self, e: &CounterEvent) {
//! #         let CounterEvent::Incremented(e) = e;
//! #         self.value += e.by;
//! #     }
//! # }
//! let state = Counter::given([Incremented { by: 2 }])
//!     .when(Increment { by: 3 })
//!     .then_events([Incremented { by: 3 }]);
//! assert_eq!(state.value, 5);
//!
//! Counter::given([Incremented { by: u64::MAX }])
//!     .when(Increment { by: 1 })
//!     .then_error(CounterError::Overflow);
//! ```
//!
//! Every `then_*` also checks two things the handler must get right:
//! - the handler did not change the state it was given (through interior mutability): the
//!   state after `when` must equal the replay of the history, compared by `Debug`;
//! - each emitted event survives encoding and decoding unchanged.

use std::fmt::Debug;

use crate::aggregate::Aggregate;
use crate::event::EventSet;

/// Adds [`given`](AggregateTestExt::given) to every aggregate.
pub trait AggregateTestExt: Aggregate {
    /// Starts a test from a history of events.
    fn given<I>(events: I) -> Given<Self>
    where
        I: IntoIterator,
        I::Item: Into<Self::Event>,
    {
        Given {
            history: events.into_iter().map(Into::into).collect(),
        }
    }

    /// Starts a test from an aggregate with no events.
    fn given_no_history() -> Given<Self> {
        Given {
            history: Vec::new(),
        }
    }
}

impl<A: Aggregate> AggregateTestExt for A {}

/// A history of events, waiting for a command.
#[derive(Debug)]
pub struct Given<A: Aggregate> {
    history: Vec<A::Event>,
}

/// The outcome of a command on a given history, waiting for assertions.
#[derive(Debug)]
pub struct When<A: Aggregate> {
    state: A,
    outcome: Result<Vec<A::Event>, A::Error>,
    mutation: Option<(String, String)>,
}

fn replay<A: Aggregate>(history: &[A::Event]) -> A {
    let mut state = A::default();
    for event in history {
        state.apply(event);
    }
    state
}

impl<A: Aggregate + Debug> Given<A> {
    /// Runs `command` on the state the history builds.
    pub fn when(self, command: impl Into<A::Command>) -> When<A> {
        let state = replay::<A>(&self.history);
        let outcome = state.handle(command.into());
        let seen = format!("{state:?}");
        let replayed = format!("{:?}", replay::<A>(&self.history));
        let mutation = (seen != replayed).then_some((replayed, seen));
        When {
            state,
            outcome,
            mutation,
        }
    }
}

impl<A> When<A>
where
    A: Aggregate + Debug,
    A::Event: PartialEq + Debug,
    A::Error: Debug,
{
    fn check_pure(&self) {
        if let Some((before, after)) = &self.mutation {
            panic!(
                "the command handler mutated the aggregate state it was given\n  \
                 replayed history: {before}\n  after the handler: {after}"
            );
        }
    }

    fn check_round_trip(events: &[A::Event]) {
        for event in events {
            let payload = match event.encode() {
                Ok(p) => p,
                Err(e) => panic!("event {event:?} does not encode: {e}"),
            };
            let decoded = A::Event::decode(event.event_type(), event.schema_version(), &payload);
            match decoded {
                Ok(crate::store::Decoded::One(back)) if back == *event => {}
                Ok(other) => panic!(
                    "event {event:?} does not survive encoding: stored as {payload}, read back as {other:?}"
                ),
                Err(e) => panic!("event {event:?} does not decode after encoding: {e}"),
            }
        }
    }

    /// Asserts that the command produced exactly `expected`, and returns the state after
    /// applying them.
    #[track_caller]
    pub fn then_events<I>(self, expected: I) -> A
    where
        I: IntoIterator,
        I::Item: Into<A::Event>,
    {
        self.check_pure();
        let expected: Vec<A::Event> = expected.into_iter().map(Into::into).collect();
        match self.outcome {
            Ok(events) => {
                assert_eq!(events, expected, "the command produced other events");
                Self::check_round_trip(&events);
                let mut state = self.state;
                for event in &events {
                    state.apply(event);
                }
                state
            }
            Err(e) => panic!("expected events {expected:?}, but the command was rejected: {e:?}"),
        }
    }

    /// Asserts that the command was accepted but changed nothing.
    #[track_caller]
    pub fn then_no_events(self) -> A {
        self.then_events(Vec::<A::Event>::new())
    }

    /// Asserts that the command was rejected with `expected`.
    #[track_caller]
    pub fn then_error(self, expected: A::Error)
    where
        A::Error: PartialEq,
    {
        self.check_pure();
        match self.outcome {
            Ok(events) => {
                panic!("expected error {expected:?}, but the command produced {events:?}")
            }
            Err(e) => assert_eq!(e, expected, "the command was rejected with another error"),
        }
    }

    /// Returns the raw outcome, for custom assertions.
    #[track_caller]
    pub fn outcome(self) -> Result<Vec<A::Event>, A::Error> {
        self.check_pure();
        self.outcome
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::AggregateTestExt;
    use crate::__doc_support::{
        CounterCommand, CounterError, CounterEvent, Increment, Incremented,
    };
    use crate::aggregate::Aggregate;

    #[derive(Debug, Default)]
    struct Counter {
        value: u64,
    }

    impl Aggregate for Counter {
        const CATEGORY: &'static str = "counter";
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
            self.value += e.by;
        }
    }

    /// Counts handled commands in its own state: a bug the kit must catch.
    #[derive(Debug, Default)]
    struct Sneaky {
        handled: AtomicU32,
    }

    impl Aggregate for Sneaky {
        const CATEGORY: &'static str = "sneaky";
        type Event = CounterEvent;
        type Command = CounterCommand;
        type Error = CounterError;

        fn handle(&self, command: CounterCommand) -> Result<Vec<CounterEvent>, CounterError> {
            self.handled.fetch_add(1, Ordering::Relaxed);
            let CounterCommand::Increment(Increment { by }) = command;
            Ok(vec![Incremented { by }.into()])
        }

        fn apply(&mut self, _: &CounterEvent) {}
    }

    #[test]
    fn then_events_returns_the_new_state() {
        let state = Counter::given([Incremented { by: 1 }, Incremented { by: 2 }])
            .when(Increment { by: 4 })
            .then_events([Incremented { by: 4 }]);
        assert_eq!(state.value, 7);
    }

    #[test]
    fn then_error_matches_the_rejection() {
        Counter::given([Incremented { by: u64::MAX }])
            .when(Increment { by: 1 })
            .then_error(CounterError::Overflow);
    }

    #[test]
    #[should_panic(expected = "the command produced other events")]
    fn then_events_fails_on_other_events() {
        Counter::given_no_history()
            .when(Increment { by: 1 })
            .then_events([Incremented { by: 2 }]);
    }

    #[test]
    #[should_panic(expected = "but the command produced")]
    fn then_error_fails_when_accepted() {
        Counter::given_no_history()
            .when(Increment { by: 1 })
            .then_error(CounterError::Overflow);
    }

    #[test]
    #[should_panic(expected = "but the command was rejected")]
    fn then_events_fails_when_rejected() {
        Counter::given([Incremented { by: u64::MAX }])
            .when(Increment { by: 1 })
            .then_events([Incremented { by: 1 }]);
    }

    #[test]
    #[should_panic(expected = "mutated the aggregate state")]
    fn catches_a_handler_that_mutates_state() {
        Sneaky::given_no_history()
            .when(Increment { by: 1 })
            .then_events([Incremented { by: 1 }]);
    }
}
