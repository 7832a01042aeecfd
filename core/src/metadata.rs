//! Metadata carried by every event: correlation, causation, actor, tenant and free key-values.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::{has_nul, nul_path, push_member};
use crate::trace::TraceContext;

/// Metadata stored beside an event's payload, and given with a command.
///
/// Its strings (actor, tenant, the keys and values of `extra`) may hold any text: quotes,
/// SQL metacharacters, emoji, combining characters and long values are stored and read back
/// exactly. The one exception is the NUL character (`\u0000`), which no store keeps: an
/// append with it is refused with [`StoreError::NulCharacter`](crate::StoreError::NulCharacter)
/// and stores nothing.
///
/// When a command is executed, its events get `causation_id` = the command id (generated when
/// none was given) and inherit the command's correlation id (or start a correlation at the command id), actor, tenant and
/// extra keys; their `trace` is the context of the command's `execute` span when a trace
/// integration records it, else the command's own (see [`crate::trace`]).
///
/// ```
/// use factum::Metadata;
/// let meta = Metadata::new().actor("alice").tenant("acme").with("ip", "10.0.0.1");
/// assert_eq!(meta.actor.as_deref(), Some("alice"));
/// assert_eq!(meta.extra["ip"], "10.0.0.1");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Metadata {
    /// The idempotency key of a command: executing a command again with the same command id
    /// returns the first execution's outcome. Set only by the caller: on an event, it is the
    /// key of the command that caused it, and the store claims it in its command log when the
    /// event is the first of an append. Events of a command executed without one have none
    /// (their `causation_id` names the id generated for the command).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<Uuid>,
    /// Id shared by every message of one business flow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Uuid>,
    /// Id of the message (command or event) that directly caused this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    /// Who asked for it: a user name, a service name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// The tenant it belongs to, in a multi-tenant application.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Free key-values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, serde_json::Value>,
    /// The W3C trace context of the span that executed the command (on an event), or that
    /// the command continues (on a command): see [`crate::trace`]. Stored under the `trace`
    /// key. A `trace` key of another shape, written before factum used the key or by
    /// another writer, reads as `None` rather than making the event unreadable.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "trace_or_none"
    )]
    pub trace: Option<TraceContext>,
}

/// The `trace` key as a [`TraceContext`], or `None` when it has another shape.
fn trace_or_none<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<TraceContext>, D::Error> {
    let value = serde_json::Value::deserialize(deserializer)?;
    Ok(serde_json::from_value(value).ok())
}

impl Metadata {
    /// Empty metadata.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the command id, which makes the command idempotent.
    #[must_use]
    pub fn command_id(mut self, id: Uuid) -> Self {
        self.command_id = Some(id);
        self
    }

    /// Sets the correlation id.
    #[must_use]
    pub fn correlation_id(mut self, id: Uuid) -> Self {
        self.correlation_id = Some(id);
        self
    }

    /// Sets the causation id.
    #[must_use]
    pub fn causation_id(mut self, id: Uuid) -> Self {
        self.causation_id = Some(id);
        self
    }

    /// Sets the actor.
    #[must_use]
    pub fn actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = Some(actor.into());
        self
    }

    /// Sets the tenant.
    #[must_use]
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    /// Sets the trace context the command continues (from an incoming `traceparent` header,
    /// for example).
    #[must_use]
    pub fn trace(mut self, context: TraceContext) -> Self {
        self.trace = Some(context);
        self
    }

    /// Adds a free key-value.
    #[must_use]
    pub fn with(mut self, key: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        self.extra.insert(key.into(), value.into());
        self
    }

    /// Where the metadata holds the NUL character (`\u0000`), which no store keeps
    /// (PostgreSQL's `jsonb` refuses it): the JSONPath of the first string holding it in the
    /// stored metadata document, such as `$.actor`, `$.tenant` or `$.extra.ip` (a key holding
    /// it is named by its own path); `None` when there is none. Stores call it before
    /// appending ([`validate_batch`](crate::store::validate_batch)).
    ///
    /// ```
    /// use factum::Metadata;
    /// assert_eq!(Metadata::new().actor("a'; --").nul_character(), None);
    /// let meta = Metadata::new().with("trace", serde_json::json!(["ok", "a\u{0}"]));
    /// assert_eq!(meta.nul_character().as_deref(), Some("$.extra.trace[1]"));
    /// ```
    pub fn nul_character(&self) -> Option<String> {
        let nul = |s: &str| s.contains('\0');
        let trace = self.trace.as_ref();
        let clean = !self.actor.as_deref().is_some_and(nul)
            && !self.tenant.as_deref().is_some_and(nul)
            && !trace.is_some_and(|t| nul(&t.traceparent))
            && !trace.and_then(|t| t.tracestate.as_deref()).is_some_and(nul)
            && !self
                .extra
                .iter()
                .any(|(key, value)| nul(key) || has_nul(value));
        if clean {
            return None;
        }
        if self.actor.as_deref().is_some_and(|s| s.contains('\0')) {
            return Some("$.actor".to_owned());
        }
        if self.tenant.as_deref().is_some_and(|s| s.contains('\0')) {
            return Some("$.tenant".to_owned());
        }
        if trace.is_some_and(|t| nul(&t.traceparent)) {
            return Some("$.trace.traceparent".to_owned());
        }
        if trace.and_then(|t| t.tracestate.as_deref()).is_some_and(nul) {
            return Some("$.trace.tracestate".to_owned());
        }
        self.extra.iter().find_map(|(key, value)| {
            let mut path = String::from("$.extra");
            push_member(&mut path, key);
            if key.contains('\0') {
                return Some(path);
            }
            nul_path(value).map(|inner| path + &inner[1..])
        })
    }

    /// The metadata of an event caused by the message whose metadata is `self` and whose id is
    /// `cause`: same correlation (or `cause` when there was none), causation = `cause`, same
    /// actor, tenant, extra keys and trace context.
    pub fn caused_by(&self, cause: Uuid) -> Self {
        Self {
            command_id: self.command_id,
            correlation_id: Some(self.correlation_id.unwrap_or(cause)),
            causation_id: Some(cause),
            actor: self.actor.clone(),
            tenant: self.tenant.clone(),
            extra: self.extra.clone(),
            trace: self.trace.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caused_by_inherits_correlation_or_starts_one() {
        let cmd = Uuid::now_v7();
        let started = Metadata::new().actor("a").caused_by(cmd);
        assert_eq!(started.correlation_id, Some(cmd));
        assert_eq!(started.causation_id, Some(cmd));
        assert_eq!(started.actor.as_deref(), Some("a"));

        let flow = Uuid::now_v7();
        let inherited = Metadata::new().correlation_id(flow).caused_by(cmd);
        assert_eq!(inherited.correlation_id, Some(flow));
    }

    #[test]
    fn the_trace_context_is_stored_under_trace_and_checked_for_nul() {
        let context = TraceContext::new("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
        let meta = Metadata::new().trace(context.clone());
        let json = serde_json::to_value(&meta).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"trace": {"traceparent": context.traceparent}})
        );
        let back: Metadata = serde_json::from_value(json).unwrap();
        assert_eq!(back.caused_by(Uuid::now_v7()).trace, Some(context.clone()));
        for foreign in [
            serde_json::json!({"trace": 5}),
            serde_json::json!({"trace": "00-abc"}),
            serde_json::json!({"trace": {"parent": "x"}}),
            serde_json::json!({"trace": null}),
        ] {
            let read: Metadata = serde_json::from_value(foreign.clone()).unwrap();
            assert_eq!(read.trace, None, "{foreign}");
        }
        let bad = Metadata::new().trace(context.state("a=\u{0}"));
        assert_eq!(bad.nul_character().as_deref(), Some("$.trace.tracestate"));
    }

    #[test]
    fn empty_fields_are_not_serialized() {
        assert_eq!(serde_json::to_string(&Metadata::new()).unwrap(), "{}");
    }
}
