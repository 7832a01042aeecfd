//! Dispatching the outbox and firing due timeouts.

use super::{Decision, Exit, Failure, PmWorker};
use crate::coordination::{CheckpointStore, Lease, LeaseStore};
use crate::metadata::Metadata;
use crate::process_manager::{
    CommandDispatcher, DispatchError, InstanceStatus, ProcessError, ProcessInstance,
    ProcessManager, ProcessStore,
};
use crate::store::EventStore;

impl<S, P, C, L, M, X> PmWorker<S, P, C, L, M, X>
where
    S: EventStore,
    P: ProcessStore,
    C: CheckpointStore,
    L: LeaseStore,
    M: ProcessManager,
    X: CommandDispatcher<M::Command>,
{
    /// Dispatches the outbox in order, saving after each command; rejected commands lead to
    /// compensation through the same outbox.
    pub(super) async fn dispatch_pending(
        &mut self,
        lease: &Lease,
        mut instance: ProcessInstance,
    ) -> Result<Option<Exit>, Failure> {
        while let Some(pending) = instance.pending.first().cloned() {
            let command: M::Command = pending
                .command
                .decode()
                .map_err(|e| self.json_error(&instance.key, "command", e))?;
            let policy = self.options.dispatch_retry;
            let mut attempt = 0u32;
            let rejected = loop {
                attempt += 1;
                match self.dispatcher.dispatch(&command, &pending.metadata).await {
                    Ok(()) => break None,
                    Err(DispatchError::Rejected(reason)) => break Some(reason),
                    Err(DispatchError::Failed(error)) => {
                        tracing::warn!(
                            key = %instance.key,
                            command_id = %pending.command_id,
                            attempt,
                            %error,
                            "command dispatch failed"
                        );
                        if attempt >= policy.max_attempts {
                            return Err(Failure::Fatal(ProcessError::Dispatch {
                                name: self.slot.name.clone(),
                                key: instance.key.clone(),
                                command_id: pending.command_id,
                                attempts: attempt,
                                source: error,
                            }));
                        }
                        tokio::select! {
                            () = self.slot.shutdown.triggered() => return Ok(Some(Exit::Shutdown)),
                            () = tokio::time::sleep(policy.delay(attempt)) => {}
                        }
                        if !self.slot.renew_if_due(lease).await? {
                            return Ok(Some(Exit::LeaseLost));
                        }
                    }
                }
            };
            instance.pending.remove(0);
            if let Some(reason) = rejected {
                tracing::info!(
                    key = %instance.key,
                    command_id = %pending.command_id,
                    %reason,
                    "command rejected; compensating"
                );
                let mut state = self.decode_state(&instance)?;
                let effects = self
                    .manager
                    .on_rejected(&mut state, &command, &reason)
                    .map_err(|source| {
                        Failure::Fatal(ProcessError::Handler {
                            name: self.slot.name.clone(),
                            key: instance.key.clone(),
                            position: 0,
                            source,
                        })
                    })?;
                let decision = Decision {
                    effects,
                    cause: pending.command_id,
                    metadata: pending.metadata.caused_by(pending.command_id),
                };
                // Compensation goes before the commands still waiting.
                let waiting = std::mem::take(&mut instance.pending);
                self.apply(&mut instance, &state, decision)?;
                instance.pending.extend(waiting);
            }
            instance.revision = self.processes.save(&self.slot.name, &instance).await?;
        }
        Ok(None)
    }

    /// Fires the due timeouts of this partition's instances.
    pub(super) async fn fire_due(&mut self, lease: &Lease) -> Result<Option<Exit>, Failure> {
        let now = self.clock.now();
        let due = self.processes.due(&self.slot.name, now, 100).await?;
        for (key, deadline) in due {
            if !self.mine(&key) {
                continue;
            }
            let Some(mut instance) = self.processes.load(&self.slot.name, &key).await? else {
                continue;
            };
            if instance.status != InstanceStatus::Active
                || !instance.deadlines.iter().any(|d| d.id == deadline.id)
            {
                continue;
            }
            instance.deadlines.retain(|d| d.id != deadline.id);
            tracing::info!(key = %key, timeout = %deadline.name, "timeout fired");
            let mut state = self.decode_state(&instance)?;
            let effects = self
                .manager
                .on_timeout(&key, &mut state, &deadline.name)
                .map_err(|source| {
                    Failure::Fatal(ProcessError::Handler {
                        name: self.slot.name.clone(),
                        key: key.clone(),
                        position: 0,
                        source,
                    })
                })?;
            let mut metadata = Metadata::new();
            metadata.correlation_id = instance.correlation_id;
            // A runner per tenant sends its timeouts' commands under its tenant, as the
            // commands caused by its events carry theirs.
            metadata.tenant = self.store.bound_tenant().map(ToString::to_string);
            let metadata = metadata.caused_by(deadline.id);
            let decision = Decision {
                effects,
                cause: deadline.id,
                metadata,
            };
            self.apply(&mut instance, &state, decision)?;
            instance.revision = self.processes.save(&self.slot.name, &instance).await?;
            if let Some(exit) = self.dispatch_pending(lease, instance).await? {
                return Ok(Some(exit));
            }
        }
        Ok(None)
    }
}
