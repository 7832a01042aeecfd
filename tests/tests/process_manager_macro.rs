//! `#[process_manager]` sagas run through the process-manager runner on the in-memory stores:
//! routing by correlation key (start, strict start, continue, stop), old versions upcast
//! before routing, compensation of a rejected command, timeouts, decode errors.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use factum::coordination::{InstanceStatus, ProcessStore};
use factum::prelude::*;
use factum::process::{
    Clock, DispatchError, ManualClock, ProcessError, ProcessManagerRunner, ProcessOptions, Route,
    RunningProcessManagers, SystemClock, dispatch_fn,
};
use factum::store::{NewEvent, Payload};
use factum::testing::projections::eventually;
use factum::{
    Effects, ExpectedVersion, MemoryCoordination, MemoryStore, Metadata, ProcessManager,
    RecordedEvent, Rejection, StreamId,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

// ANCHOR: events
/// The first version: one unit of one item, the order's id in a field named `id`.
#[event(name = "OrderPlaced", version = 1, upcast_to = OrderPlaced)]
#[derive(Debug, Deserialize)]
pub struct OrderPlacedV1 {
    pub id: String,
    pub sku: String,
}

impl From<OrderPlacedV1> for OrderPlaced {
    fn from(v1: OrderPlacedV1) -> Self {
        Self {
            order_id: v1.id,
            sku: v1.sku,
            quantity: 1,
        }
    }
}

#[event(version = 2, previous = OrderPlacedV1)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderPlaced {
    pub order_id: String,
    pub sku: String,
    pub quantity: u32,
}

/// Of the inventory aggregate.
#[event]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InventoryReserved {
    pub order_id: String,
}

/// Of the payment aggregate.
#[event]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PaymentCharged {
    pub order_id: String,
    pub cents: u64,
}

/// Of the shipment aggregate.
#[event]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShipmentDelivered {
    pub order_id: String,
}
// ANCHOR_END: events

// ANCHOR: process
/// What the process dispatches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FulfillmentCommand {
    Reserve {
        order_id: String,
        sku: String,
        quantity: u32,
    },
    Charge {
        order_id: String,
    },
    Ship {
        order_id: String,
    },
    Cancel {
        order_id: String,
        reason: String,
    },
}

/// One order's progress.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fulfillment {
    pub placed: u32,
    pub reserved: bool,
    pub charged_cents: u64,
    pub rejections: u32,
}

/// How long a customer has to pay once the stock is reserved.
#[derive(Debug)]
pub struct OrderFulfillment {
    pub payment_window: Duration,
}

#[process_manager(name = "order_fulfillment")]
impl OrderFulfillment {
    #[start(by = order_id, strict)]
    fn placed(&self, state: &mut Fulfillment, event: &OrderPlaced) -> Vec<FulfillmentCommand> {
        state.placed += 1;
        vec![FulfillmentCommand::Reserve {
            order_id: event.order_id.clone(),
            sku: event.sku.clone(),
            quantity: event.quantity,
        }]
    }

    #[on(by = order_id)]
    fn reserved(
        &self,
        state: &mut Fulfillment,
        event: &InventoryReserved,
        recorded: &RecordedEvent,
    ) -> Effects<FulfillmentCommand> {
        state.reserved = true;
        Effects::none()
            .command(FulfillmentCommand::Charge {
                order_id: event.order_id.clone(),
            })
            .schedule("payment_due", recorded.recorded_at + self.payment_window)
    }

    #[on(by = order_id)]
    fn charged(
        &self,
        state: &mut Fulfillment,
        event: &PaymentCharged,
    ) -> Result<Effects<FulfillmentCommand>, FulfillmentError> {
        if event.cents == 0 {
            return Err(FulfillmentError::FreeOrder(event.order_id.clone()));
        }
        state.charged_cents = event.cents;
        Ok(Effects::none()
            .command(FulfillmentCommand::Ship {
                order_id: event.order_id.clone(),
            })
            .cancel("payment_due"))
    }

    #[stop(by = order_id)]
    fn delivered(&self, _: &mut Fulfillment, _: &ShipmentDelivered) {}

    #[on_rejected]
    fn rejected(
        &self,
        state: &mut Fulfillment,
        command: &FulfillmentCommand,
        error: &Rejection,
    ) -> Option<FulfillmentCommand> {
        state.rejections += 1;
        match command {
            FulfillmentCommand::Reserve { order_id, .. } => Some(FulfillmentCommand::Cancel {
                order_id: order_id.clone(),
                reason: error.to_string(),
            }),
            _ => None,
        }
    }

    #[on_timeout]
    fn timed_out(&self, key: &str, _: &mut Fulfillment, name: &str) -> Effects<FulfillmentCommand> {
        Effects::none()
            .command(FulfillmentCommand::Cancel {
                order_id: key.to_owned(),
                reason: name.to_owned(),
            })
            .complete()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FulfillmentError {
    #[error("order `{0}` was charged nothing")]
    FreeOrder(String),
}
// ANCHOR_END: process

const NAME: &str = "order_fulfillment";

type Dispatched = Arc<Mutex<Vec<(FulfillmentCommand, Metadata)>>>;

struct Harness {
    store: MemoryStore,
    processes: MemoryCoordination,
    clock: ManualClock,
    dispatched: Dispatched,
    running: RunningProcessManagers,
}

/// Starts the process with a dispatcher that records every command and rejects reservations
/// of the `sold-out` item.
fn start() -> Harness {
    let store = MemoryStore::new();
    let processes = MemoryCoordination::new();
    let clock = ManualClock::new(SystemClock.now());
    let dispatched: Dispatched = Arc::default();
    let log = Arc::clone(&dispatched);
    let dispatcher = dispatch_fn(move |command: &FulfillmentCommand, metadata: &Metadata| {
        let command = command.clone();
        let metadata = metadata.clone();
        let log = Arc::clone(&log);
        async move {
            let sold_out =
                matches!(&command, FulfillmentCommand::Reserve { sku, .. } if sku == "sold-out");
            log.lock().unwrap().push((command, metadata));
            if sold_out {
                return Err(DispatchError::Rejected(Rejection::new(
                    "`sold-out` is out of stock",
                )));
            }
            Ok(())
        }
    });
    // ANCHOR: register
    let running = ProcessManagerRunner::new(store.clone())
        .coordination(processes.clone())
        .clock(clock.clone())
        .register_with(
            OrderFulfillment {
                payment_window: Duration::from_secs(3600),
            },
            dispatcher,
            ProcessOptions::new().poll_interval(Duration::from_millis(10)),
        )
        .start();
    // ANCHOR_END: register
    Harness {
        store,
        processes,
        clock,
        dispatched,
        running,
    }
}

impl Harness {
    async fn append(&self, category: &str, id: &str, event: NewEvent) -> RecordedEvent {
        let event_id = event.event_id;
        self.store
            .append(
                &StreamId::new(category, id).unwrap(),
                ExpectedVersion::Any,
                &[event],
            )
            .await
            .unwrap();
        self.store.event_by_id(event_id).await.unwrap().unwrap()
    }

    async fn caught_up(&self, position: u64) {
        tokio::time::timeout(
            Duration::from_secs(30),
            self.running.wait_for(NAME, position),
        )
        .await
        .expect("caught up in time")
        .expect("running");
    }

    fn commands(&self) -> Vec<FulfillmentCommand> {
        self.dispatched
            .lock()
            .unwrap()
            .iter()
            .map(|(c, _)| c.clone())
            .collect()
    }

    fn metadata(&self) -> Vec<Metadata> {
        self.dispatched
            .lock()
            .unwrap()
            .iter()
            .map(|(_, m)| m.clone())
            .collect()
    }

    async fn instance(&self, key: &str) -> Option<(InstanceStatus, Fulfillment)> {
        let instance = ProcessStore::load(&self.processes, NAME, key)
            .await
            .unwrap()?;
        Some((instance.status, instance.state.decode().unwrap()))
    }
}

fn typed<E: Event>(event: &E) -> NewEvent {
    NewEvent::from_event(event, Metadata::new()).unwrap()
}

fn stored(event_type: &str, version: u32, json: &str) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: event_type.into(),
        schema_version: version,
        payload: Payload::from_json(json.into()).unwrap(),
        metadata: Metadata::new(),
    }
}

fn reserve(order_id: &str, sku: &str, quantity: u32) -> FulfillmentCommand {
    FulfillmentCommand::Reserve {
        order_id: order_id.into(),
        sku: sku.into(),
        quantity,
    }
}

#[test]
fn names_and_event_types() {
    let process = OrderFulfillment {
        payment_window: Duration::from_secs(3600),
    };
    assert_eq!(process.name(), NAME);
    assert_eq!(
        process.event_types(),
        [
            "OrderPlaced",
            "InventoryReserved",
            "PaymentCharged",
            "ShipmentDelivered"
        ]
    );
}

/// The stored v1 `OrderPlaced` names the key `id`: it is routed by the upcast event's
/// `order_id`.
#[tokio::test]
async fn start_continue_stop_with_an_old_version() {
    let h = start();
    let placed = h
        .append(
            "order",
            "o-1",
            stored("OrderPlaced", 1, r#"{"id":"o-1","sku":"apple"}"#),
        )
        .await;
    h.append(
        "inventory",
        "apple",
        typed(&InventoryReserved {
            order_id: "o-1".into(),
        }),
    )
    .await;
    h.append(
        "payment",
        "p-1",
        typed(&PaymentCharged {
            order_id: "o-1".into(),
            cents: 1250,
        }),
    )
    .await;
    h.append(
        "shipment",
        "s-1",
        typed(&ShipmentDelivered {
            order_id: "o-1".into(),
        }),
    )
    .await;
    let late = h
        .append(
            "payment",
            "p-2",
            typed(&PaymentCharged {
                order_id: "o-1".into(),
                cents: 99,
            }),
        )
        .await;
    h.caught_up(late.position).await;

    assert_eq!(
        h.commands(),
        [
            reserve("o-1", "apple", 1),
            FulfillmentCommand::Charge {
                order_id: "o-1".into()
            },
            FulfillmentCommand::Ship {
                order_id: "o-1".into()
            },
        ],
        "the completed instance ignores the late payment"
    );
    let first = &h.metadata()[0];
    assert_eq!(first.causation_id, Some(placed.event_id));
    assert_eq!(first.correlation_id, Some(placed.event_id));
    assert_eq!(
        first.command_id,
        Some(factum::process::process_command_id(
            NAME,
            "o-1",
            placed.event_id,
            0
        ))
    );
    assert_eq!(
        h.instance("o-1").await,
        Some((
            InstanceStatus::Completed,
            Fulfillment {
                placed: 1,
                reserved: true,
                charged_cents: 1250,
                rejections: 0,
            }
        ))
    );
    h.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn strict_start_refuses_an_existing_instance_and_continue_needs_one() {
    let h = start();
    let placed = OrderPlaced {
        order_id: "o-2".into(),
        sku: "pear".into(),
        quantity: 3,
    };
    h.append("order", "o-2", typed(&placed)).await;
    h.append("order", "o-2", typed(&placed)).await;
    let unknown = h
        .append(
            "inventory",
            "pear",
            typed(&InventoryReserved {
                order_id: "o-404".into(),
            }),
        )
        .await;
    h.caught_up(unknown.position).await;

    assert_eq!(h.commands(), [reserve("o-2", "pear", 3)]);
    assert_eq!(h.instance("o-2").await.unwrap().1.placed, 1);
    assert_eq!(h.instance("o-404").await, None);
    h.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_rejected_command_is_compensated() {
    let h = start();
    let placed = h
        .append(
            "order",
            "o-3",
            typed(&OrderPlaced {
                order_id: "o-3".into(),
                sku: "sold-out".into(),
                quantity: 1,
            }),
        )
        .await;
    h.caught_up(placed.position).await;
    eventually("the compensation to be dispatched", || async {
        h.commands().len() == 2
    })
    .await;

    assert_eq!(
        h.commands(),
        [
            reserve("o-3", "sold-out", 1),
            FulfillmentCommand::Cancel {
                order_id: "o-3".into(),
                reason: "`sold-out` is out of stock".into(),
            },
        ]
    );
    let (status, state) = h.instance("o-3").await.unwrap();
    assert_eq!((status, state.rejections), (InstanceStatus::Active, 1));
    h.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_timeout_fires_after_the_payment_window() {
    let h = start();
    h.append(
        "order",
        "o-4",
        typed(&OrderPlaced {
            order_id: "o-4".into(),
            sku: "fig".into(),
            quantity: 1,
        }),
    )
    .await;
    let reserved = h
        .append(
            "inventory",
            "fig",
            typed(&InventoryReserved {
                order_id: "o-4".into(),
            }),
        )
        .await;
    h.caught_up(reserved.position).await;
    assert_eq!(h.commands().len(), 2, "reserve and charge, no timeout yet");

    h.clock.advance(Duration::from_secs(2 * 3600));
    eventually("the timeout to fire", || async { h.commands().len() == 3 }).await;
    assert_eq!(
        h.commands()[2],
        FulfillmentCommand::Cancel {
            order_id: "o-4".into(),
            reason: "payment_due".into(),
        }
    );
    assert_eq!(
        h.instance("o-4").await.unwrap().0,
        InstanceStatus::Completed
    );
    h.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn routes_unhandled_undecodable_and_failing_events() {
    let store = MemoryStore::new();
    let process = OrderFulfillment {
        payment_window: Duration::from_secs(3600),
    };
    let record = |event: NewEvent| {
        let store = store.clone();
        async move {
            let id = event.event_id;
            store
                .append(
                    &StreamId::new("order", "o-5").unwrap(),
                    ExpectedVersion::Any,
                    &[event],
                )
                .await
                .unwrap();
            store.event_by_id(id).await.unwrap().unwrap()
        }
    };
    let other = record(stored("OrderNoted", 1, r#"{"order_id":"o-5"}"#)).await;
    assert_eq!(process.route(&other).unwrap(), Route::Ignore);
    let effects = process.handle(&mut Fulfillment::default(), &other).unwrap();
    assert_eq!(effects, Effects::none());

    let placed = record(stored("OrderPlaced", 1, r#"{"id":"o-5","sku":"kiwi"}"#)).await;
    assert_eq!(
        process.route(&placed).unwrap(),
        Route::StartStrict("o-5".into())
    );
    let delivered = record(typed(&ShipmentDelivered {
        order_id: "o-5".into(),
    }))
    .await;
    assert_eq!(
        process.route(&delivered).unwrap(),
        Route::Stop("o-5".into())
    );

    let broken = record(stored("PaymentCharged", 1, r#"{"order_id":5}"#)).await;
    let expected = format!(
        "`order_fulfillment` cannot decode `PaymentCharged` version 1 at position {} of stream `order-o-5`: ",
        broken.position
    );
    let error = process.route(&broken).unwrap_err().to_string();
    assert!(
        error.starts_with(&expected),
        "routing an undecodable event is an error: {error}"
    );
    let error = process
        .handle(&mut Fulfillment::default(), &broken)
        .unwrap_err()
        .to_string();
    assert!(error.starts_with(&expected), "{error}");

    let newer = record(stored(
        "PaymentCharged",
        7,
        r#"{"order_id":"o-5","cents":1}"#,
    ))
    .await;
    let error = process.route(&newer).unwrap_err().to_string();
    assert_eq!(
        error,
        format!(
            "`order_fulfillment` cannot decode `PaymentCharged` version 7 at position {} of stream `order-o-5`: unknown version 7 of event type `PaymentCharged`",
            newer.position
        ),
        "an unknown version of a handled event is never skipped"
    );

    let free = record(typed(&PaymentCharged {
        order_id: "o-5".into(),
        cents: 0,
    }))
    .await;
    let error = process
        .handle(&mut Fulfillment::default(), &free)
        .unwrap_err();
    assert_eq!(error.to_string(), "order `o-5` was charged nothing");
}

/// A stored event that decodes into no handled type stops the partition instead of being
/// skipped.
#[tokio::test]
async fn an_undecodable_event_stops_the_partition() {
    let h = start();
    let broken = h
        .append(
            "payment",
            "p-9",
            stored("PaymentCharged", 1, r#"{"order_id":9}"#),
        )
        .await;
    let result = tokio::time::timeout(
        Duration::from_secs(30),
        h.running.wait_for(NAME, broken.position),
    )
    .await
    .expect("settled in time");
    assert!(result.is_err(), "the partition stopped at the event");
    let error = h.running.shutdown().await.unwrap_err();
    assert!(
        matches!(&error, ProcessError::Route { position, .. } if *position == broken.position),
        "routing failed at the event: {error:?}"
    );
    let error = error.to_string();
    assert!(
        error.contains("cannot decode `PaymentCharged` version 1"),
        "{error}"
    );
}
