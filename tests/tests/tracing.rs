//! One order's trace, exported through OpenTelemetry: an HTTP request's `traceparent`
//! continued by the command it dispatches, then through the event's metadata into the
//! projection and the process manager that handle it, into the command the process manager
//! sends, and into the handlers of that command's event. One trace id throughout, each span's
//! parent as designed, on the in-memory store and on PostgreSQL.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

use factum::prelude::*;
use factum::store::StreamRead;
use factum::trace::TraceContext;
use factum::{Coordination, Metadata, StreamId};
use factum_tests::fulfilment::{self, OrderList, PlaceOrder};
use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing::Instrument as _;
use tracing_subscriber::layer::SubscriberExt as _;

/// The spans every test of this binary exports, kept in memory.
fn exporter() -> &'static InMemorySpanExporter {
    static EXPORTER: OnceLock<InMemorySpanExporter> = OnceLock::new();
    EXPORTER.get_or_init(|| {
        let exporter = InMemorySpanExporter::default();
        // ANCHOR: setup
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("orders")));
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
        factum_otel::install().expect("installed once");
        // ANCHOR_END: setup
        exporter
    })
}

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.as_str().into_owned())
}

/// The spans of one trace, found by name and attributes.
struct Trace(Vec<SpanData>);

impl Trace {
    fn of(trace_id: TraceId) -> Self {
        let spans = exporter().get_finished_spans().expect("the exported spans");
        Self(
            spans
                .into_iter()
                .filter(|s| s.span_context.trace_id() == trace_id)
                .collect(),
        )
    }

    /// The one span named `name` whose attributes include `attributes`.
    fn one(&self, name: &str, attributes: &[(&str, &str)]) -> &SpanData {
        let found: Vec<&SpanData> = self
            .0
            .iter()
            .filter(|s| {
                s.name == name
                    && attributes
                        .iter()
                        .all(|(k, v)| attribute(s, k).as_deref() == Some(*v))
            })
            .collect();
        assert_eq!(
            found.len(),
            1,
            "one `{name}` span with {attributes:?} in the trace; the trace has {:#?}",
            self.names()
        );
        found[0]
    }

    fn names(&self) -> Vec<(String, BTreeMap<String, String>)> {
        self.0
            .iter()
            .map(|s| {
                let attributes = s
                    .attributes
                    .iter()
                    .map(|kv| (kv.key.to_string(), kv.value.as_str().into_owned()))
                    .collect();
                (s.name.to_string(), attributes)
            })
            .collect()
    }
}

fn id(span: &SpanData) -> SpanId {
    span.span_context.span_id()
}

fn traceparent_of(span: &SpanData) -> String {
    format!(
        "00-{}-{}-01",
        span.span_context.trace_id(),
        span.span_context.span_id()
    )
}

/// Runs one order through an application over `store` and `coordination`, from a request
/// carrying `traceparent`, and checks its trace.
async fn one_order_is_one_trace<S: EventStore, C: Coordination>(
    store: S,
    coordination: C,
    order_id: &str,
    trace_id: &str,
) {
    // The subscriber is set before anything starts.
    exporter();
    let orders = Arc::new(OrderList::default());
    let app = fulfilment::start(store.clone(), coordination, Arc::clone(&orders));

    let remote_parent = "b7ad6b7169203331";
    let traceparent = format!("00-{trace_id}-{remote_parent}-01");
    // ANCHOR: request
    let request = tracing::info_span!("request", method = "POST", path = "/orders");
    let continued = factum_otel::continue_trace(&request, Some(&traceparent), None);
    let placed = app
        .dispatch(
            PlaceOrder {
                order_id: order_id.to_owned(),
                sku: "tea".to_owned(),
            },
            Metadata::new(),
        )
        .instrument(request)
        .await
        .expect("the order is placed");
    // ANCHOR_END: request
    assert!(continued, "the request continues the incoming trace");
    app.settle().await.expect("the flow settles");
    assert_eq!(orders.status(order_id), Some("reserved"));
    app.shutdown().await.expect("a graceful stop");

    let trace = Trace::of(TraceId::from_hex(trace_id).unwrap());
    let request = trace.one("request", &[]);
    assert_eq!(
        request.parent_span_id,
        SpanId::from_hex(remote_parent).unwrap(),
        "the request continues the incoming traceparent"
    );
    let stream = format!("order-{order_id}");
    let place = trace.one(
        "execute",
        &[("command", "PlaceOrder"), ("stream", stream.as_str())],
    );
    assert_eq!(place.parent_span_id, id(request));
    assert_eq!(attribute(place, "aggregate").as_deref(), Some("order"));
    assert!(attribute(place, "command_id").is_some());
    let append = trace.one("append", &[("stream", stream.as_str())]);
    assert_eq!(append.parent_span_id, id(place));
    assert_eq!(attribute(append, "events").as_deref(), Some("1"));
    assert_eq!(attribute(append, "expected_version").as_deref(), Some("0"));
    let placed_at = placed.position.to_string();
    assert_eq!(
        attribute(append, "last_position").as_deref(),
        Some(placed_at.as_str())
    );

    // The event carries the context of the command's span.
    let events = store
        .read_stream(
            &StreamId::new("order", order_id).unwrap(),
            &StreamRead::all(),
        )
        .await
        .unwrap();
    assert_eq!(
        events[0].metadata.trace,
        Some(TraceContext::new(traceparent_of(place)))
    );

    // The projection and the process manager continue it, each event in its own span.
    let handled = trace.one(
        "handle",
        &[("projection", "order_list"), ("event_type", "OrderPlaced")],
    );
    assert_eq!(handled.parent_span_id, id(place));
    assert_eq!(
        attribute(handled, "position").as_deref(),
        Some(placed_at.as_str())
    );
    let dispatch = trace.one(
        "dispatch",
        &[("process", "fulfilment"), ("event_type", "OrderPlaced")],
    );
    assert_eq!(dispatch.parent_span_id, id(place));
    assert_eq!(attribute(dispatch, "commands").as_deref(), Some("1"));

    // The command the process manager sent continues the trace from its dispatch span.
    let stock = format!("stock-{order_id}");
    let reserve = trace.one(
        "execute",
        &[("command", "ReserveStock"), ("stream", stock.as_str())],
    );
    assert_eq!(reserve.parent_span_id, id(dispatch));
    let append = trace.one("append", &[("stream", stock.as_str())]);
    assert_eq!(append.parent_span_id, id(reserve));
    let handled = trace.one(
        "handle",
        &[
            ("projection", "order_list"),
            ("event_type", "StockReserved"),
        ],
    );
    assert_eq!(handled.parent_span_id, id(reserve));
    let stop = trace.one(
        "dispatch",
        &[("process", "fulfilment"), ("event_type", "StockReserved")],
    );
    assert_eq!(stop.parent_span_id, id(reserve));
    assert_eq!(attribute(stop, "commands").as_deref(), Some("0"));

    let reserved = store
        .read_stream(
            &StreamId::new("stock", order_id).unwrap(),
            &StreamRead::all(),
        )
        .await
        .unwrap();
    assert_eq!(
        reserved[0].metadata.trace.as_ref().map(|t| &t.traceparent),
        Some(&traceparent_of(reserve))
    );

    // Nothing else of this order's flow started a trace of its own.
    let by_id: HashMap<SpanId, &SpanData> = trace.0.iter().map(|s| (id(s), s)).collect();
    for span in &trace.0 {
        assert!(
            id(span) == id(request) || by_id.contains_key(&span.parent_span_id),
            "`{}` has a parent outside the trace",
            span.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_order_is_one_trace_in_memory() {
    one_order_is_one_trace(
        factum::MemoryStore::new(),
        factum::MemoryCoordination::new(),
        "o-memory",
        "0af7651916cd43dd8448eb211c80319c",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_order_is_one_trace_on_postgres() {
    let store = factum_postgres::testing::fresh_store()
        .await
        .expect("a throwaway database");
    let coordination = factum_postgres::PgCoordination::new(&store);
    one_order_is_one_trace(
        store,
        coordination,
        "o-pg",
        "4bf92f3577b34da6a3ce929d0e0e4736",
    )
    .await;
}

/// A traceparent that does not parse is no trace to continue: the request starts its own.
#[test]
fn a_malformed_traceparent_is_not_continued() {
    exporter();
    let span = tracing::info_span!("request");
    assert!(!factum_otel::continue_trace(
        &span,
        Some("00-nothex-01"),
        None
    ));
    assert!(!factum_otel::continue_trace(&span, None, Some("a=b")));
    assert_eq!(
        factum_otel::context_from_headers(
            Some("00-00000000000000000000000000000000-b7ad6b7169203331-01"),
            None
        ),
        None,
        "an all-zero trace id is invalid"
    );
}

/// Counts the events it is given, all of a batch at once.
#[derive(Debug, Default)]
struct Batched {
    events: std::sync::atomic::AtomicUsize,
}

impl factum::Projection for Batched {
    fn name(&self) -> &str {
        "batched"
    }

    async fn handle(&self, _: &factum::RecordedEvent) -> Result<(), factum::BoxError> {
        self.events
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    async fn handle_batch_in(
        &self,
        events: &[&factum::RecordedEvent],
        _: &factum::projection::HandleContext,
    ) -> Result<bool, factum::BoxError> {
        self.events
            .fetch_add(events.len(), std::sync::atomic::Ordering::SeqCst);
        Ok(true)
    }
}

/// A batch handles the events of several traces at once: its span is linked to each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_span_links_to_the_trace_of_each_of_its_events() {
    exporter();
    let store = factum::MemoryStore::new();
    let orders = factum::Repository::<fulfilment::Order, _>::new(store.clone());
    let trace_ids = [
        "11111111111111111111111111111111",
        "22222222222222222222222222222222",
        "33333333333333333333333333333333",
    ];
    for (n, trace_id) in trace_ids.iter().enumerate() {
        let request = tracing::info_span!("request");
        let traceparent = format!("00-{trace_id}-b7ad6b7169203331-01");
        assert!(factum_otel::continue_trace(
            &request,
            Some(&traceparent),
            None
        ));
        let order = PlaceOrder {
            order_id: format!("batch-{n}"),
            sku: "tea".to_owned(),
        };
        orders
            .execute(order, Metadata::new())
            .instrument(request)
            .await
            .unwrap();
    }
    let batched = Arc::new(Batched::default());
    let app = factum::Application::builder(store)
        .projection(
            Arc::clone(&batched),
            factum::projection::ProjectionOptions::new(),
        )
        .start();
    app.settle().await.unwrap();
    app.shutdown().await.unwrap();
    assert_eq!(batched.events.load(std::sync::atomic::Ordering::SeqCst), 3);

    let spans = exporter().get_finished_spans().unwrap();
    let batch = spans
        .iter()
        .find(|s| {
            s.name == "handle_batch" && attribute(s, "projection").as_deref() == Some("batched")
        })
        .expect("the batch's span");
    assert_eq!(attribute(batch, "events").as_deref(), Some("3"));
    assert_eq!(attribute(batch, "handled").as_deref(), Some("true"));
    let ids = |c: &opentelemetry::trace::SpanContext| format!("{}-{}", c.trace_id(), c.span_id());
    let mut linked: Vec<_> = batch.links.iter().map(|l| ids(&l.span_context)).collect();
    linked.sort();
    let mut executed: Vec<_> = trace_ids
        .iter()
        .map(|t| {
            ids(&Trace::of(TraceId::from_hex(t).unwrap())
                .one("execute", &[])
                .span_context)
        })
        .collect();
    executed.sort();
    assert_eq!(linked, executed);
    assert!(
        trace_ids
            .iter()
            .all(|t| batch.span_context.trace_id() != TraceId::from_hex(t).unwrap()),
        "the batch is in none of its events' traces"
    );
}

/// A command that fails says why on its span.
#[tokio::test]
async fn a_failed_command_records_its_error() {
    exporter();
    let store = factum::MemoryStore::new();
    let orders = factum::Repository::<fulfilment::Order, _>::new(store);
    let trace_id = "55555555555555555555555555555555";
    let request = tracing::info_span!("request");
    let traceparent = format!("00-{trace_id}-b7ad6b7169203331-01");
    assert!(factum_otel::continue_trace(
        &request,
        Some(&traceparent),
        None
    ));
    let order = PlaceOrder {
        order_id: "late".to_owned(),
        sku: "tea".to_owned(),
    };
    let refused = orders
        .execute_expecting(order, 3, Metadata::new())
        .instrument(request)
        .await;
    assert!(matches!(
        refused,
        Err(factum::Error::VersionMismatch { .. })
    ));
    let trace = Trace::of(TraceId::from_hex(trace_id).unwrap());
    let execute = trace.one("execute", &[("command", "PlaceOrder")]);
    let error = attribute(execute, "error").expect("the error on the span");
    assert!(error.contains("order-late"), "{error}");
}
