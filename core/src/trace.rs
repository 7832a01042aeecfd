//! W3C trace context carried in event metadata, so that a trace continues from a command into
//! the projections and process managers that handle its events, and into the commands they send.
//!
//! Factum's spans (all `tracing` spans, target `factum::…`):
//!
//! | span | level | fields |
//! |------|-------|--------|
//! | `execute` | info | `command`, `aggregate`, `stream`, `command_id`, `error` (when it fails or is rejected) |
//! | `load` | debug | `stream`, `version`, `snapshot` (whether it started from one) |
//! | `append` | debug | `stream`, `expected_version`, `events`, `first_position`, `last_position` |
//! | `batch` (projection) | debug | `projection`, `partition`, `from_position`, `to_position`, `events` |
//! | `handle` (projection) | info | `projection`, `partition`, `stream`, `event_type`, `position` |
//! | `handle_batch` (projection) | info | `projection`, `partition`, `from_position`, `to_position`, `events`, `handled` (false: declined) |
//! | `dispatch` (process manager) | info | `process`, `stream`, `event_type`, `position`, `commands` |
//!
//! Core does not depend on OpenTelemetry. An integration (the `factum-otel` crate) installs a
//! [`Propagation`] that reads the W3C context of a span and sets the parent of another; until
//! one is installed, [`context_of`] is `None` and [`set_parent`] does nothing, and a
//! [`TraceContext`] given with a command is passed on to its events unchanged.
//!
//! `execute` stores its own context in the metadata of the events it appends (the `trace`
//! key, see [`Metadata::trace`](crate::Metadata::trace)); a projection's `handle` span and a
//! process manager's `dispatch` span take that context as their parent, and the commands a
//! process manager sends carry the `dispatch` span's context, which their `execute` span
//! continues. A projection that handles a batch of events at once (`handle_batch`, as a
//! transactional PostgreSQL projection does) gets one `handle_batch` span, linked to the
//! context of each of its events rather than the child of one of them.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

/// The W3C trace context of a span: the `traceparent` and `tracestate` header values.
///
/// Stored in [`Metadata::trace`](crate::Metadata::trace) as
/// `{"traceparent": "00-…-…-01", "tracestate": "…"}`. Factum does not interpret it: the
/// installed [`Propagation`] does, and ignores one it cannot parse (the span then starts a
/// trace of its own), as the W3C recommendation asks of a malformed `traceparent`.
///
/// ```
/// use factum::trace::TraceContext;
/// let context = TraceContext::new("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
///     .state("congo=t61rcWkgMzE");
/// assert_eq!(context.tracestate.as_deref(), Some("congo=t61rcWkgMzE"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceContext {
    /// The `traceparent` value: version, trace id, parent span id and flags.
    pub traceparent: String,
    /// The `tracestate` value: vendor-specific entries, when there are any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
}

impl TraceContext {
    /// A context from a `traceparent` value.
    pub fn new(traceparent: impl Into<String>) -> Self {
        Self {
            traceparent: traceparent.into(),
            tracestate: None,
        }
    }

    /// Sets the `tracestate` value.
    #[must_use]
    pub fn state(mut self, tracestate: impl Into<String>) -> Self {
        self.tracestate = Some(tracestate.into());
        self
    }
}

/// Reads and continues W3C trace contexts on `tracing` spans: what an integration with a
/// tracing system (OpenTelemetry's, in `factum-otel`) implements, and installs with
/// [`install`].
pub trait Propagation: Send + Sync + 'static {
    /// The context of `span`, or `None` when the span is not recorded (disabled, or no
    /// integration layer in the subscriber).
    fn context_of(&self, span: &tracing::Span) -> Option<TraceContext>;

    /// Makes the span that `context` names the parent of `span`, which has not been entered
    /// yet. A context that does not parse is ignored.
    fn set_parent(&self, span: &tracing::Span, context: &TraceContext);

    /// Links `span` to the span that `context` names, for a span that handles the messages
    /// of several traces at once (a projection's batch). A context that does not parse is
    /// ignored; by default, links are not recorded.
    fn add_link(&self, span: &tracing::Span, context: &TraceContext) {
        let _ = (span, context);
    }
}

static PROPAGATION: OnceLock<Box<dyn Propagation>> = OnceLock::new();

/// [`install`] was called already: the propagation of a process is chosen once.
#[derive(Debug, thiserror::Error)]
#[error("a trace propagation is installed already")]
pub struct AlreadyInstalled;

/// Installs the propagation factum's spans use, once per process.
pub fn install(propagation: impl Propagation) -> Result<(), AlreadyInstalled> {
    PROPAGATION
        .set(Box::new(propagation))
        .map_err(|_| AlreadyInstalled)
}

/// Whether a propagation is installed.
pub fn installed() -> bool {
    PROPAGATION.get().is_some()
}

/// The W3C context of `span` by the installed propagation; `None` without one, or when the
/// span is not recorded.
pub fn context_of(span: &tracing::Span) -> Option<TraceContext> {
    let propagation = PROPAGATION.get()?;
    if span.is_disabled() {
        return None;
    }
    propagation.context_of(span)
}

/// Makes `context` the parent of `span` (not entered yet) by the installed propagation; does
/// nothing without one.
pub fn set_parent(span: &tracing::Span, context: &TraceContext) {
    if let Some(propagation) = PROPAGATION.get() {
        if !span.is_disabled() {
            propagation.set_parent(span, context);
        }
    }
}

/// Links `span` to the span that `context` names by the installed propagation; does nothing
/// without one.
pub fn add_link(span: &tracing::Span, context: &TraceContext) {
    if let Some(propagation) = PROPAGATION.get() {
        if !span.is_disabled() {
            propagation.add_link(span, context);
        }
    }
}

/// Continues `incoming` (a command's or an event's trace, if any) in `span`, and returns the
/// context the messages caused within `span` carry on: `span`'s own when it is recorded,
/// else `incoming` unchanged.
pub(crate) fn continue_in(
    span: &tracing::Span,
    incoming: Option<&TraceContext>,
) -> Option<TraceContext> {
    if let Some(incoming) = incoming {
        set_parent(span, incoming);
    }
    context_of(span).or_else(|| incoming.cloned())
}
