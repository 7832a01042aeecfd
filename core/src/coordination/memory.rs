//! All coordination in memory, in one value.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{
    CheckpointStore, CoordinationError, DeadLetterStore, Lease, LeaseStore, MemoryCheckpointStore,
    MemoryDeadLetterStore, MemoryLeaseStore, ParkedEvent,
};
use crate::process_manager::{Deadline, MemoryProcessStore, ProcessInstance, ProcessStore};
use crate::stream::StreamId;

/// Checkpoints, leases, dead letters and process instances in memory, for one process: the
/// default [`Coordination`](super::Coordination) of the runners and of an
/// [`Application`](crate::Application). A restart starts from nothing, so the projections
/// and process managers handle the store from the first event again. Cloning shares them.
#[derive(Clone, Debug, Default)]
pub struct MemoryCoordination {
    checkpoints: MemoryCheckpointStore,
    leases: MemoryLeaseStore,
    dead_letters: MemoryDeadLetterStore,
    processes: MemoryProcessStore,
}

impl MemoryCoordination {
    /// Empty stores.
    pub fn new() -> Self {
        Self::default()
    }
}

impl LeaseStore for MemoryCoordination {
    async fn acquire(
        &self,
        name: &str,
        partition: u32,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, CoordinationError> {
        self.leases.acquire(name, partition, holder, ttl).await
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<bool, CoordinationError> {
        self.leases.renew(lease, ttl).await
    }

    async fn release(&self, lease: &Lease) -> Result<(), CoordinationError> {
        self.leases.release(lease).await
    }

    async fn holder(&self, name: &str, partition: u32) -> Result<Option<Lease>, CoordinationError> {
        self.leases.holder(name, partition).await
    }

    async fn join(&self, name: &str, member: &str, ttl: Duration) -> Result<(), CoordinationError> {
        self.leases.join(name, member, ttl).await
    }

    async fn members(&self, name: &str) -> Result<Vec<String>, CoordinationError> {
        self.leases.members(name).await
    }

    async fn leave(&self, name: &str, member: &str) -> Result<(), CoordinationError> {
        self.leases.leave(name, member).await
    }
}

impl CheckpointStore for MemoryCoordination {
    async fn load(&self, name: &str, partition: u32) -> Result<u64, CoordinationError> {
        self.checkpoints.load(name, partition).await
    }

    async fn claim(&self, lease: &Lease) -> Result<u64, CoordinationError> {
        self.checkpoints.claim(lease).await
    }

    async fn save(&self, lease: &Lease, position: u64) -> Result<(), CoordinationError> {
        self.checkpoints.save(lease, position).await
    }
}

impl DeadLetterStore for MemoryCoordination {
    async fn park(&self, event: &ParkedEvent) -> Result<(), CoordinationError> {
        self.dead_letters.park(event).await
    }

    async fn list(&self, name: &str) -> Result<Vec<ParkedEvent>, CoordinationError> {
        self.dead_letters.list(name).await
    }

    async fn list_partition(
        &self,
        name: &str,
        partition: u32,
    ) -> Result<Vec<ParkedEvent>, CoordinationError> {
        self.dead_letters.list_partition(name, partition).await
    }

    async fn request_replay(
        &self,
        name: &str,
        stream: Option<&StreamId>,
    ) -> Result<usize, CoordinationError> {
        self.dead_letters.request_replay(name, stream).await
    }

    async fn remove(&self, name: &str, position: u64) -> Result<(), CoordinationError> {
        self.dead_letters.remove(name, position).await
    }

    async fn clear(&self, name: &str) -> Result<(), CoordinationError> {
        self.dead_letters.clear(name).await
    }
}

impl ProcessStore for MemoryCoordination {
    async fn load(
        &self,
        name: &str,
        key: &str,
    ) -> Result<Option<ProcessInstance>, CoordinationError> {
        ProcessStore::load(&self.processes, name, key).await
    }

    async fn save(&self, name: &str, instance: &ProcessInstance) -> Result<u64, CoordinationError> {
        ProcessStore::save(&self.processes, name, instance).await
    }

    async fn due(
        &self,
        name: &str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(String, Deadline)>, CoordinationError> {
        self.processes.due(name, now, limit).await
    }

    async fn with_pending(&self, name: &str) -> Result<Vec<String>, CoordinationError> {
        self.processes.with_pending(name).await
    }
}
