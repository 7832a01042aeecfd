//! Without a trace integration, factum records no trace context of its own, and one given with
//! a command is carried unchanged by its events, into the commands a process manager sends
//! for them and their events.

use std::sync::Arc;

use factum::prelude::*;
use factum::store::StreamRead;
use factum::trace::TraceContext;
use factum::{MemoryCoordination, MemoryStore, Metadata, StreamId};
use factum_tests::fulfilment::{self, OrderList, PlaceOrder};

#[tokio::test]
async fn a_commands_trace_context_reaches_its_events_and_the_commands_they_cause() {
    assert!(!factum::trace::installed());
    let store = MemoryStore::new();
    let orders = Arc::new(OrderList::default());
    let app = fulfilment::start(
        store.clone(),
        MemoryCoordination::new(),
        Arc::clone(&orders),
    );
    let context = TraceContext::new("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        .state("congo=t61rcWkgMzE");
    let order = PlaceOrder {
        order_id: "o1".to_owned(),
        sku: "tea".to_owned(),
    };
    app.dispatch(order, Metadata::new().trace(context.clone()))
        .await
        .unwrap();
    let untraced = PlaceOrder {
        order_id: "o2".to_owned(),
        sku: "tea".to_owned(),
    };
    app.dispatch(untraced, Metadata::new()).await.unwrap();
    app.settle().await.unwrap();
    assert_eq!(orders.status("o1"), Some("reserved"));
    app.shutdown().await.unwrap();

    for (category, id, expected) in [
        ("order", "o1", Some(&context)),
        ("stock", "o1", Some(&context)),
        ("order", "o2", None),
        ("stock", "o2", None),
    ] {
        let stream = StreamId::new(category, id).unwrap();
        let events = store
            .read_stream(&stream, &StreamRead::all())
            .await
            .unwrap();
        assert_eq!(events.len(), 1, "{stream}");
        assert_eq!(events[0].metadata.trace.as_ref(), expected, "{stream}");
    }
}
