#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs, clippy::unwrap_used)]

mod aggregate;
mod application;
mod codegen;
mod command_log;
pub mod coordination;
mod error;
mod event;
mod head;
mod memory;
mod metadata;
pub mod personal;
mod process_manager;
pub mod projection;
mod repository;
mod router;
mod runtime;
pub mod store;
mod stream;
pub mod subscription;
pub mod tenant;
pub mod test_kit;
#[cfg(feature = "testing")]
pub mod testing;
pub mod trace;

pub use aggregate::{Aggregate, Command, CommandSet, CommandVisitor, Routed, SnapshotPolicy};
pub use application::{Application, ApplicationBuilder, ApplicationError};
pub use coordination::{Coordination, MemoryCoordination};
pub use error::{BoxError, Error, StoreError};
pub use event::{Event, EventSet, RecordedEvent};
pub use memory::MemoryStore;
pub use metadata::Metadata;
pub use process_manager::{Effects, ProcessManager};
pub use projection::Projection;
pub use repository::{AsOf, Executed, Loaded, Repository, Speculation};
pub use router::{Dispatched, Rejection, Routable, Router};
pub use store::EventStore;
pub use stream::{ExpectedVersion, StreamId};

/// Process managers (sagas): their runner, options, clock, dispatching and errors. The
/// trait and [`Effects`] are at the crate root.
pub mod process {
    pub use crate::process_manager::{
        Clock, CommandDispatcher, DispatchError, DispatchFn, Effects, ManualClock, ProcessError,
        ProcessManager, ProcessManagerRunner, ProcessOptions, Route, RunningProcessManagers,
        SystemClock, dispatch_fn, process_command_id,
    };
}

#[cfg(feature = "macros")]
pub use factum_macros::{aggregate, command, event, process_manager, projection};

/// The traits, for `use factum::prelude::*`.
pub mod prelude {
    pub use crate::aggregate::{Aggregate, Command, CommandSet};
    pub use crate::event::{Event, EventSet};
    pub use crate::store::EventStore;
    pub use crate::test_kit::AggregateTestExt;
    #[cfg(feature = "macros")]
    pub use factum_macros::{aggregate, command, event, process_manager, projection};
}

/// Re-exports for generated code. Not a public API: it changes without notice.
#[doc(hidden)]
pub mod __private {
    pub use crate::aggregate::{CommandVisitor, Routed};
    pub use crate::codegen::*;
    pub use crate::error::{DecodeError, Error};
    pub use crate::event::{Decoded, Payload};
    pub use crate::metadata::Metadata;
    pub use crate::personal::{PersonalData, PersonalField, assert_personal_value};
    pub use crate::process_manager::Route;
    pub use crate::projection::HandleContext;
    pub use crate::router::{DispatchResult, Rejection, Routable, Router};
    pub use chrono;
    pub use futures_util::future::BoxFuture;
    pub use serde;
    pub use serde_json;
    pub use tokio;
    pub use uuid;
}

#[doc(hidden)]
pub mod __doc_support;
