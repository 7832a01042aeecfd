//! Routing an event to its instance and applying what the handler decided.

use tracing::Instrument;
use uuid::Uuid;

use super::{Decision, Exit, Failure, PmWorker};
use crate::coordination::{CheckpointStore, Lease, LeaseStore};
use crate::event::{Payload, RecordedEvent};
use crate::process_manager::{
    CommandDispatcher, Deadline, InstanceStatus, PendingCommand, ProcessError, ProcessInstance,
    ProcessManager, ProcessStore, Route, process_command_id,
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
    pub(super) fn json_error(
        &self,
        key: &str,
        what: &'static str,
        source: serde_json::Error,
    ) -> Failure {
        Failure::Fatal(ProcessError::Json {
            name: self.slot.name.clone(),
            key: key.to_owned(),
            what,
            source,
        })
    }

    pub(super) fn decode_state(&self, instance: &ProcessInstance) -> Result<M::State, Failure> {
        instance
            .state
            .decode()
            .map_err(|e| self.json_error(&instance.key, "state", e))
    }

    /// Routes and handles one event, then dispatches what it decided.
    pub(super) async fn process(
        &mut self,
        lease: &Lease,
        event: &RecordedEvent,
    ) -> Result<Option<Exit>, Failure> {
        let route = self.manager.route(event).map_err(|source| {
            Failure::Fatal(ProcessError::Route {
                name: self.slot.name.clone(),
                position: event.position,
                stream: event.stream_id.to_string(),
                event_type: event.event_type.clone(),
                source,
            })
        })?;
        let Some(key) = route.key() else {
            return Ok(None);
        };
        if !self.mine(key) {
            return Ok(None);
        }
        let span = tracing::info_span!(
            "dispatch",
            process = %self.slot.name,
            stream = %event.stream_id,
            event_type = %event.event_type,
            position = event.position,
            commands = tracing::field::Empty,
        );
        if let Some(context) = &event.metadata.trace {
            crate::trace::set_parent(&span, context);
        }
        let key = key.to_owned();
        self.process_routed(lease, event, route, &key)
            .instrument(span)
            .await
    }

    /// Handles an event routed to the instance `key` of this partition, in its `dispatch`
    /// span, which continues the event's trace and whose context the commands carry.
    async fn process_routed(
        &mut self,
        lease: &Lease,
        event: &RecordedEvent,
        route: Route,
        key: &str,
    ) -> Result<Option<Exit>, Failure> {
        let stored = self.processes.load(&self.slot.name, key).await?;
        if let Some(instance) = &stored {
            if instance.last_position >= event.position {
                // Redelivered: already applied; finish what it decided.
                return self.dispatch_pending(lease, instance.clone()).await;
            }
        }
        let mut instance = match (&route, stored) {
            (Route::Start(_) | Route::StartStrict(_), None) => {
                let state = Payload::encode(&M::State::default())
                    .map_err(|e| self.json_error(key, "state", e))?;
                let mut instance = ProcessInstance::new(key, state);
                instance.correlation_id =
                    Some(event.metadata.correlation_id.unwrap_or(event.event_id));
                instance
            }
            (Route::StartStrict(_), Some(_)) => {
                tracing::warn!(
                    key,
                    position = event.position,
                    event_type = %event.event_type,
                    "strict start refused: the instance exists"
                );
                return Ok(None);
            }
            (Route::Continue(_) | Route::Stop(_) | Route::Ignore, None) => {
                tracing::debug!(key, position = event.position, "no instance for the event");
                return Ok(None);
            }
            (_, Some(instance)) if instance.status == InstanceStatus::Completed => {
                tracing::debug!(key, position = event.position, "the instance is completed");
                return Ok(None);
            }
            (_, Some(instance)) => instance,
        };
        let mut state = self.decode_state(&instance)?;
        let mut effects = self.manager.handle(&mut state, event).map_err(|source| {
            Failure::Fatal(ProcessError::Handler {
                name: self.slot.name.clone(),
                key: key.to_owned(),
                position: event.position,
                source,
            })
        })?;
        if matches!(route, Route::Stop(_)) {
            effects.complete = true;
        }
        let span = tracing::Span::current();
        span.record("commands", effects.commands.len());
        let mut metadata = event.metadata.caused_by(event.event_id);
        if let Some(context) = crate::trace::context_of(&span) {
            metadata.trace = Some(context);
        }
        let decision = Decision {
            effects,
            cause: event.event_id,
            metadata,
        };
        instance.last_position = event.position;
        self.apply(&mut instance, &state, decision)?;
        instance.revision = self.processes.save(&self.slot.name, &instance).await?;
        self.dispatch_pending(lease, instance).await
    }

    /// Writes a decision into the instance: state, outbox, deadlines, status.
    pub(super) fn apply(
        &self,
        instance: &mut ProcessInstance,
        state: &M::State,
        decision: Decision<M::Command>,
    ) -> Result<(), Failure> {
        let key = instance.key.clone();
        instance.state = Payload::encode(state).map_err(|e| self.json_error(&key, "state", e))?;
        for (index, command) in (0u32..).zip(&decision.effects.commands) {
            let command_id = process_command_id(&self.slot.name, &key, decision.cause, index);
            let mut metadata = decision.metadata.clone();
            metadata.command_id = Some(command_id);
            metadata
                .extra
                .insert("process_manager".to_owned(), self.slot.name.clone().into());
            instance.pending.push(PendingCommand {
                command_id,
                command: Payload::encode(command)
                    .map_err(|e| self.json_error(&key, "command", e))?,
                metadata,
            });
        }
        for name in &decision.effects.cancel {
            instance.deadlines.retain(|d| d.name != *name);
        }
        for (name, due_at) in &decision.effects.schedule {
            instance.deadlines.retain(|d| d.name != *name);
            let mut id_name = Vec::new();
            id_name.extend_from_slice(name.as_bytes());
            id_name.push(0);
            id_name.extend_from_slice(due_at.to_rfc3339().as_bytes());
            let id = process_command_id(
                &self.slot.name,
                &key,
                Uuid::new_v5(&decision.cause, &id_name),
                u32::MAX,
            );
            instance.deadlines.push(Deadline {
                name: name.clone(),
                due_at: *due_at,
                id,
            });
        }
        if decision.effects.complete {
            instance.status = InstanceStatus::Completed;
            instance.deadlines.clear();
        }
        Ok(())
    }
}
