//! What the projection and process-manager runtimes share: status cells, the lease
//! lifecycle of a partition's worker, and joining the workers.

pub(crate) mod slot;
pub(crate) mod status;
pub(crate) mod tasks;
