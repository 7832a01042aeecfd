#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs, clippy::unwrap_used)]

mod aggregate;
mod codegen;
mod command_log;
mod coordination;
mod error;
mod event;
mod head;
mod memory;
mod metadata;
mod process_manager;
pub mod projection;
mod repository;
mod runtime;
mod store;
mod stream;
pub mod subscription;
pub mod test_kit;
#[cfg(feature = "testing")]
pub mod testing;

pub use aggregate::{Aggregate, Command, CommandSet, SnapshotPolicy};
pub use command_log::{CommandOutcome, CommandRecord};
pub use coordination::{
    CheckpointStore, CoordinationError, DeadLetterStore, Lease, LeaseStore, MemoryCheckpointStore,
    MemoryDeadLetterStore, MemoryLeaseStore, ParkReason, ParkedEvent, partition_of,
};
pub use error::{BoxError, DecodeError, Error, StoreError, StreamIdError};
pub use event::{Decoded, DecodedIter, Event, EventSet, NewEvent, Payload, RecordedEvent};
pub use head::{Blocker, HeadStatus};
pub use memory::{MAX_EVENT_TYPE_LEN, MemoryStore, check_retry, validate_batch};
pub use metadata::Metadata;
pub use process_manager::{
    Clock, CommandDispatcher, Deadline, DispatchError, DispatchFn, Effects, InstanceStatus,
    ManualClock, MemoryProcessStore, PendingCommand, ProcessError, ProcessInstance, ProcessManager,
    ProcessManagerRunner, ProcessOptions, ProcessStore, Route, RunningProcessManagers, SystemClock,
    dispatch_fn, process_command_id,
};
pub use projection::ResetContext;
pub use projection::{
    FailurePolicy, HandleContext, Health, HealthProblem, OnExhausted, PartitionStatus, Projection,
    ProjectionError, ProjectionOptions, ProjectionRunner, RebuildProgress, RunnerOptions,
    RunningProjections, WorkerState,
};
pub use repository::{AsOf, Executed, Loaded, Repository, derived_event_id};
pub use store::{AppendResult, EventStore, ReadAll, ReplayEvent, Snapshot, StreamRead};
pub use stream::{
    ExpectedVersion, MAX_STREAM_ID_LEN, Position, StreamId, Version, validate_category,
};
pub use subscription::{Batch, Shutdown, Subscription, SubscriptionOptions};

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
    pub use crate::codegen::*;
    pub use crate::error::DecodeError;
    pub use crate::event::{Decoded, Payload};
    pub use crate::process_manager::Route;
    pub use chrono;
    pub use serde;
    pub use serde_json;
    pub use tokio;
    pub use uuid;
}

#[doc(hidden)]
pub mod __doc_support;
