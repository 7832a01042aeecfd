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

/// A command retried with its command id in another trace is the same command: its first
/// outcome is returned and the events keep the first trace's context.
#[tokio::test]
async fn a_retry_in_another_trace_is_still_a_duplicate() {
    let store = MemoryStore::new();
    let orders = factum::Repository::<fulfilment::Order, _>::new(store.clone());
    let command_id = uuid::Uuid::now_v7();
    let first = TraceContext::new("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    let retry = TraceContext::new("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    let order = PlaceOrder {
        order_id: "o3".to_owned(),
        sku: "tea".to_owned(),
    };
    let metadata = Metadata::new().command_id(command_id);
    let done = orders
        .execute(order.clone(), metadata.clone().trace(first.clone()))
        .await
        .unwrap();
    assert!(!done.duplicate);
    let again = orders.execute(order, metadata.trace(retry)).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(again.position, done.position);
    let stream = StreamId::new("order", "o3").unwrap();
    let events = store
        .read_stream(&stream, &StreamRead::all())
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].metadata.trace, Some(first));
}
