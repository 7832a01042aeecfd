//! OpenTelemetry for factum: the W3C trace context of factum's spans, read and continued with
//! OpenTelemetry's propagator, so that one trace runs from an HTTP request through a command's
//! `execute` span into each projection and process manager that handles its events, and into
//! the commands they send.
//!
//! Install [`OtelPropagation`] once ([`install`]), and export factum's spans with a
//! [`tracing_opentelemetry`] layer in the subscriber:
//!
//! ```
//! use opentelemetry::trace::TracerProvider as _;
//! use tracing_subscriber::layer::SubscriberExt;
//!
//! let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
//! let subscriber = tracing_subscriber::registry()
//!     .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("orders")));
//! factum_otel::install().expect("installed once");
//! # drop(subscriber);
//! ```
//!
//! A service continues the trace of an incoming request with [`continue_trace`] (on its
//! request span) or [`context_from_headers`] (into the command's
//! [`Metadata`](factum::Metadata)).

use std::collections::HashMap;

use factum::trace::{AlreadyInstalled, Propagation, TraceContext};
use opentelemetry::Context;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub use opentelemetry;
pub use opentelemetry_sdk;
pub use tracing_opentelemetry;

/// The `traceparent` header (and metadata key).
pub const TRACEPARENT: &str = "traceparent";
/// The `tracestate` header (and metadata key).
pub const TRACESTATE: &str = "tracestate";

/// Reads and sets the W3C context of `tracing` spans through the OpenTelemetry layer of the
/// subscriber ([`tracing_opentelemetry::layer`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct OtelPropagation;

impl Propagation for OtelPropagation {
    fn context_of(&self, span: &tracing::Span) -> Option<TraceContext> {
        to_trace_context(&span.context())
    }

    fn set_parent(&self, span: &tracing::Span, context: &TraceContext) {
        if let Some(parent) = to_otel_context(context) {
            if let Err(error) = span.set_parent(parent) {
                tracing::debug!(%error, "could not continue a trace");
            }
        }
    }

    fn add_link(&self, span: &tracing::Span, context: &TraceContext) {
        if let Some(linked) = to_otel_context(context) {
            span.add_link(linked.span().span_context().clone());
        }
    }
}

/// Installs [`OtelPropagation`] as factum's propagation (once per process).
pub fn install() -> Result<(), AlreadyInstalled> {
    factum::trace::install(OtelPropagation)
}

/// The trace context of an incoming request's `traceparent` and `tracestate` header values,
/// checked by OpenTelemetry's W3C propagator: `None` when there is no `traceparent` or it is
/// malformed (then the request starts a trace of its own, as the W3C recommendation asks).
///
/// ```
/// let context = factum_otel::context_from_headers(
///     Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
///     Some("congo=t61rcWkgMzE"),
/// )
/// .expect("a valid traceparent");
/// assert_eq!(context.tracestate.as_deref(), Some("congo=t61rcWkgMzE"));
/// assert_eq!(factum_otel::context_from_headers(Some("00-zz-01"), None), None);
/// ```
pub fn context_from_headers(
    traceparent: Option<&str>,
    tracestate: Option<&str>,
) -> Option<TraceContext> {
    let mut context = TraceContext::new(traceparent?);
    context.tracestate = tracestate.map(str::to_owned);
    to_trace_context(&to_otel_context(&context)?)
}

/// Makes the trace of an incoming request's `traceparent` and `tracestate` header values the
/// parent of `span` (the request's span, before it is entered), so that the commands executed
/// within it continue that trace. Returns whether there was a valid context to continue.
pub fn continue_trace(
    span: &tracing::Span,
    traceparent: Option<&str>,
    tracestate: Option<&str>,
) -> bool {
    match context_from_headers(traceparent, tracestate).and_then(|c| to_otel_context(&c)) {
        Some(parent) => span.set_parent(parent).is_ok(),
        None => false,
    }
}

/// The W3C headers of `context`'s span, when it has a valid one.
fn to_trace_context(context: &Context) -> Option<TraceContext> {
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(context, &mut carrier);
    let mut trace = TraceContext::new(carrier.remove(TRACEPARENT)?);
    trace.tracestate = carrier.remove(TRACESTATE).filter(|s| !s.is_empty());
    Some(trace)
}

/// The remote span `trace` names, when it parses.
fn to_otel_context(trace: &TraceContext) -> Option<Context> {
    let mut carrier = HashMap::with_capacity(2);
    carrier.insert(TRACEPARENT.to_owned(), trace.traceparent.clone());
    if let Some(state) = &trace.tracestate {
        carrier.insert(TRACESTATE.to_owned(), state.clone());
    }
    let context = TraceContextPropagator::new().extract(&carrier);
    context.span().span_context().is_valid().then_some(context)
}
