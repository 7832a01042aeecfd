//! What the projection and process-manager runtimes share: status cells, a partition's lease
//! (taken, renewed, released), the lease loop of its worker, stopping the workers, and
//! watching the store's head.

pub(crate) mod backoff;
pub(crate) mod head_monitor;
pub(crate) mod lease_loop;
pub(crate) mod slot;
pub(crate) mod status;
pub(crate) mod tasks;
