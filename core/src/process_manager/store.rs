//! Stored process instances: state, outbox and deadlines.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::coordination::CoordinationError;
use crate::event::Payload;
use crate::metadata::Metadata;

/// Whether an instance still takes events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum InstanceStatus {
    /// It takes events.
    Active,
    /// It finished: later events for its key are ignored.
    Completed,
}

/// A command in an instance's outbox.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PendingCommand {
    /// Its deterministic id (also in `metadata.command_id`).
    pub command_id: Uuid,
    /// The command, as JSON.
    pub command: Payload,
    /// Command id, correlation and causation for the dispatch.
    pub metadata: Metadata,
}

/// A scheduled timeout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Deadline {
    /// Its name in the instance.
    pub name: String,
    /// When it fires.
    pub due_at: DateTime<Utc>,
    /// Its id: the cause of the commands it leads to.
    pub id: Uuid,
}

/// One stored instance of a process manager.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ProcessInstance {
    /// The correlation key.
    pub key: String,
    /// The state, as JSON.
    pub state: Payload,
    /// Whether it still takes events.
    pub status: InstanceStatus,
    /// The position of the last event applied to it (a redelivered event at or below it is
    /// not applied again).
    pub last_position: u64,
    /// The correlation id of the flow: the starting event's, or its id when it had none.
    pub correlation_id: Option<Uuid>,
    /// Commands decided but not yet dispatched.
    pub pending: Vec<PendingCommand>,
    /// Scheduled timeouts.
    pub deadlines: Vec<Deadline>,
    /// Incremented by every save; a save must give the revision it loaded.
    pub revision: u64,
}

impl ProcessInstance {
    /// A new instance (revision 0: not stored yet).
    pub fn new(key: impl Into<String>, state: Payload) -> Self {
        Self {
            key: key.into(),
            state,
            status: InstanceStatus::Active,
            last_position: 0,
            correlation_id: None,
            pending: Vec::new(),
            deadlines: Vec::new(),
            revision: 0,
        }
    }
}

/// Where process instances live: state, outbox and deadlines, saved together.
pub trait ProcessStore: Clone + Send + Sync + 'static {
    /// The instance `key` of process `name`.
    fn load(
        &self,
        name: &str,
        key: &str,
    ) -> impl Future<Output = Result<Option<ProcessInstance>, CoordinationError>> + Send;

    /// Saves `instance` if the stored revision equals `instance.revision` (0: not stored);
    /// returns the new revision. Otherwise [`CoordinationError::InstanceConflict`].
    fn save(
        &self,
        name: &str,
        instance: &ProcessInstance,
    ) -> impl Future<Output = Result<u64, CoordinationError>> + Send;

    /// Active instances of `name` with deadlines due at `now`: `(key, deadline)`, earliest
    /// first, at most `limit`.
    fn due(
        &self,
        name: &str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<(String, Deadline)>, CoordinationError>> + Send;

    /// Keys of the instances of `name` with commands in their outbox.
    fn with_pending(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Vec<String>, CoordinationError>> + Send;
}

/// Process instances held in memory. Cloning shares them.
#[derive(Clone, Debug, Default)]
pub struct MemoryProcessStore {
    inner: Arc<Mutex<HashMap<(String, String), ProcessInstance>>>,
}

impl MemoryProcessStore {
    /// No instances.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), ProcessInstance>> {
        // Each critical section is a lookup or a single insert.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl ProcessStore for MemoryProcessStore {
    async fn load(
        &self,
        name: &str,
        key: &str,
    ) -> Result<Option<ProcessInstance>, CoordinationError> {
        Ok(self.lock().get(&(name.to_owned(), key.to_owned())).cloned())
    }

    async fn save(&self, name: &str, instance: &ProcessInstance) -> Result<u64, CoordinationError> {
        let mut all = self.lock();
        let id = (name.to_owned(), instance.key.clone());
        let actual = all.get(&id).map_or(0, |i| i.revision);
        if actual != instance.revision {
            return Err(CoordinationError::InstanceConflict {
                name: name.to_owned(),
                key: instance.key.clone(),
                expected: instance.revision,
                actual,
            });
        }
        let mut stored = instance.clone();
        stored.revision = actual + 1;
        all.insert(id, stored);
        Ok(actual + 1)
    }

    async fn due(
        &self,
        name: &str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(String, Deadline)>, CoordinationError> {
        let all = self.lock();
        let mut due: Vec<(String, Deadline)> = all
            .iter()
            .filter(|((n, _), i)| n == name && i.status == InstanceStatus::Active)
            .flat_map(|((_, key), i)| {
                i.deadlines
                    .iter()
                    .filter(|d| d.due_at <= now)
                    .map(|d| (key.clone(), d.clone()))
            })
            .collect();
        due.sort_by(|a, b| (a.1.due_at, &a.0).cmp(&(b.1.due_at, &b.0)));
        due.truncate(limit);
        Ok(due)
    }

    async fn with_pending(&self, name: &str) -> Result<Vec<String>, CoordinationError> {
        let mut keys: Vec<String> = self
            .lock()
            .iter()
            .filter(|((n, _), i)| n == name && !i.pending.is_empty())
            .map(|((_, key), _)| key.clone())
            .collect();
        keys.sort();
        Ok(keys)
    }
}
