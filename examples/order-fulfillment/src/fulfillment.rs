//! The `OrderFulfillment` process manager: one instance per order, keyed by the order id.
//!
//! - `OrderPlaced` starts it: reserve the first line's stock.
//! - `StockReserved`: reserve the next line; once every line is reserved and the payment
//!   captured, create the shipment.
//! - `PaymentCaptured`: record the payment on the order; create the shipment if every line is
//!   reserved.
//! - `ReservationRejected`: cancel the order.
//! - `OrderCancelled` (by the customer or by the step above): compensate — release the stock
//!   reserved so far, refund a captured payment, cancel a created shipment — then close the
//!   instance a day later, so a payment captured in the meantime is still refunded.
//! - `ShipmentDispatched` stops it: mark the order shipped and take its stock out.
//!
//! Lines are reserved one after the other, so when one cannot be, exactly the lines before it
//! hold stock. Every command gets a deterministic id from the runtime, so an event delivered
//! twice (after a crash) dispatches nothing twice.

use factum::{BoxError, Effects, EventSet, ProcessManager, RecordedEvent, Route};
use serde::{Deserialize, Serialize};

use crate::domain::Line;
use crate::domain::inventory::{
    InventoryEvent, ReleaseStockV1, ReservationRejected, ReserveStockV1, ShipStockV1, StockReserved,
};
use crate::domain::order::{CancelOrderV1, MarkOrderPaidV1, OrderEvent, OrderPlaced, ShipOrderV1};
use crate::domain::payment::{PaymentCaptured, PaymentEvent, RefundPaymentV1};
use crate::domain::shipment::{
    CancelShipmentV1, CreateShipmentV1, ShipmentDispatched, ShipmentEvent, ShipmentLine,
};

/// The process manager's name: the key of its instances and checkpoints.
pub const ORDER_FULFILLMENT: &str = "order_fulfillment";

/// The timeout that closes a cancelled order's instance.
const CLOSE: &str = "close";

/// The commands the process sends, to every aggregate of the domain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs, reason = "each variant is the command it holds")]
pub enum FulfillmentCommand {
    ReserveStock(ReserveStockV1),
    ReleaseStock(ReleaseStockV1),
    ShipStock(ShipStockV1),
    MarkOrderPaid(MarkOrderPaidV1),
    ShipOrder(ShipOrderV1),
    CancelOrder(CancelOrderV1),
    RefundPayment(RefundPaymentV1),
    CreateShipment(CreateShipmentV1),
    CancelShipment(CancelShipmentV1),
}

/// One order's progress, stored between events.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FulfillmentState {
    /// The order.
    pub order_id: String,
    /// Its lines, in the order they are reserved.
    pub lines: Vec<Line>,
    /// How many lines, from the first, hold stock.
    pub reserved: usize,
    /// Whether a line could not be reserved.
    pub reservation_failed: bool,
    /// Whether the payment was captured.
    pub paid: bool,
    /// Whether the shipment was asked for.
    pub shipment_requested: bool,
    /// Whether the order was cancelled.
    pub cancelled: bool,
}

impl FulfillmentState {
    fn all_reserved(&self) -> bool {
        !self.lines.is_empty() && self.reserved == self.lines.len()
    }

    fn reserve(&self, index: usize) -> Option<FulfillmentCommand> {
        self.lines.get(index).map(|line| {
            FulfillmentCommand::ReserveStock(ReserveStockV1 {
                sku: line.sku.clone(),
                order_id: self.order_id.clone(),
                quantity: line.quantity,
            })
        })
    }

    /// The shipment, once paid and reserved, asked for once.
    fn maybe_ship(&mut self, effects: Effects<FulfillmentCommand>) -> Effects<FulfillmentCommand> {
        if self.paid && self.all_reserved() && !self.cancelled && !self.shipment_requested {
            self.shipment_requested = true;
            let lines = self
                .lines
                .iter()
                .map(|l| ShipmentLine {
                    sku: l.sku.clone(),
                    quantity: l.quantity,
                })
                .collect();
            effects.command(FulfillmentCommand::CreateShipment(CreateShipmentV1 {
                order_id: self.order_id.clone(),
                lines,
            }))
        } else {
            effects
        }
    }
}

/// The events the process reads, decoded from any of the aggregates.
#[derive(Debug)]
enum Input {
    Placed(OrderPlaced),
    Cancelled,
    Reserved(StockReserved),
    Rejected(ReservationRejected),
    Captured(PaymentCaptured),
    Dispatched(ShipmentDispatched),
    Other,
}

impl Input {
    fn decode(event: &RecordedEvent) -> Result<Vec<Self>, BoxError> {
        let inputs = match event.stream_id.category() {
            "order" => OrderEvent::decode_recorded(event)?
                .into_iter()
                .map(|e| match e {
                    OrderEvent::OrderPlaced(e) => Input::Placed(e),
                    OrderEvent::OrderCancelled(_) => Input::Cancelled,
                    _ => Input::Other,
                })
                .collect(),
            "inventory" => InventoryEvent::decode_recorded(event)?
                .into_iter()
                .map(|e| match e {
                    InventoryEvent::StockReserved(e) => Input::Reserved(e),
                    InventoryEvent::ReservationRejected(e) => Input::Rejected(e),
                    _ => Input::Other,
                })
                .collect(),
            "payment" => PaymentEvent::decode_recorded(event)?
                .into_iter()
                .map(|e| match e {
                    PaymentEvent::PaymentCaptured(e) => Input::Captured(e),
                    PaymentEvent::PaymentRefunded(_) => Input::Other,
                })
                .collect(),
            "shipment" => ShipmentEvent::decode_recorded(event)?
                .into_iter()
                .map(|e| match e {
                    ShipmentEvent::ShipmentDispatched(e) => Input::Dispatched(e),
                    _ => Input::Other,
                })
                .collect(),
            _ => Vec::new(),
        };
        Ok(inputs)
    }
}

/// Reads just the correlation key of an event: every event the process handles names its
/// order.
#[derive(Deserialize)]
struct Key {
    order_id: String,
}

// ANCHOR: process
/// The order-fulfillment process manager.
#[derive(Clone, Copy, Debug, Default)]
pub struct OrderFulfillment;

impl ProcessManager for OrderFulfillment {
    type State = FulfillmentState;
    type Command = FulfillmentCommand;

    fn name(&self) -> &str {
        ORDER_FULFILLMENT
    }

    fn event_types(&self) -> Vec<String> {
        [
            "OrderPlaced",
            "OrderCancelled",
            "StockReserved",
            "ReservationRejected",
            "PaymentCaptured",
            "ShipmentDispatched",
        ]
        .map(String::from)
        .to_vec()
    }

    fn route(&self, event: &RecordedEvent) -> Result<Route, BoxError> {
        // Every version of every event read here names its order: one that does not is
        // corrupt, and stops the process at it rather than being skipped.
        let Key { order_id } = event.payload.decode::<Key>().map_err(|e| {
            format!(
                "`{}` v{} at position {} of `{}` names no order: {e}",
                event.event_type, event.schema_version, event.position, event.stream_id
            )
        })?;
        Ok(match event.event_type.as_str() {
            "OrderPlaced" => Route::StartStrict(order_id),
            "ShipmentDispatched" => Route::Stop(order_id),
            _ => Route::Continue(order_id),
        })
    }

    fn handle(
        &self,
        state: &mut FulfillmentState,
        event: &RecordedEvent,
    ) -> Result<Effects<FulfillmentCommand>, BoxError> {
        let mut effects = Effects::none();
        for input in Input::decode(event)? {
            effects = merge(effects, decide(state, input, event));
        }
        Ok(effects)
    }

    fn on_rejected(
        &self,
        state: &mut FulfillmentState,
        command: &FulfillmentCommand,
        error: &str,
    ) -> Result<Effects<FulfillmentCommand>, BoxError> {
        tracing::info!(order_id = %state.order_id, ?command, error, "fulfillment command refused");
        Ok(match command {
            // Not expected (refusals are recorded as `ReservationRejected`), but if an
            // inventory ever refuses outright, the order cannot be served either.
            FulfillmentCommand::ReserveStock(_) if !state.cancelled => {
                state.reservation_failed = true;
                Effects::none().command(cancel_order(state, format!("reservation failed: {error}")))
            }
            // Everything else is refused because the order moved on (cancelled, shipped)
            // while the command was on its way; the events of that move compensate.
            _ => Effects::none(),
        })
    }

    fn on_timeout(
        &self,
        _key: &str,
        _state: &mut FulfillmentState,
        name: &str,
    ) -> Result<Effects<FulfillmentCommand>, BoxError> {
        Ok(if name == CLOSE {
            Effects::none().complete()
        } else {
            Effects::none()
        })
    }
}
// ANCHOR_END: process

fn cancel_order(state: &FulfillmentState, reason: String) -> FulfillmentCommand {
    FulfillmentCommand::CancelOrder(CancelOrderV1 {
        order_id: state.order_id.clone(),
        reason,
    })
}

fn merge(
    mut into: Effects<FulfillmentCommand>,
    more: Effects<FulfillmentCommand>,
) -> Effects<FulfillmentCommand> {
    into.commands.extend(more.commands);
    into.schedule.extend(more.schedule);
    into.cancel.extend(more.cancel);
    into.complete |= more.complete;
    into
}

// ANCHOR: decide
/// What one event means for one order.
fn decide(
    state: &mut FulfillmentState,
    input: Input,
    event: &RecordedEvent,
) -> Effects<FulfillmentCommand> {
    let none = Effects::none();
    match input {
        Input::Placed(placed) => {
            state.order_id = placed.order_id;
            state.lines = placed.lines;
            state
                .reserve(0)
                .map_or(none, |c| Effects::none().command(c))
        }
        Input::Reserved(reserved) => {
            if state.cancelled {
                // Reserved while the order was being cancelled: give it back.
                return none.command(FulfillmentCommand::ReleaseStock(ReleaseStockV1 {
                    sku: reserved.sku,
                    order_id: state.order_id.clone(),
                }));
            }
            state.reserved += 1;
            match state.reserve(state.reserved) {
                Some(next) => none.command(next),
                None => state.maybe_ship(none),
            }
        }
        Input::Rejected(rejected) if !state.cancelled => {
            state.reservation_failed = true;
            let reason = format!(
                "out of stock: {} (requested {}, available {})",
                rejected.sku, rejected.requested, rejected.available
            );
            none.command(cancel_order(state, reason))
        }
        Input::Captured(captured) => {
            state.paid = true;
            if state.cancelled {
                return none.command(refund(state));
            }
            let paid = none.command(FulfillmentCommand::MarkOrderPaid(MarkOrderPaidV1 {
                order_id: state.order_id.clone(),
                amount_cents: captured.amount_cents,
            }));
            state.maybe_ship(paid)
        }
        Input::Cancelled => {
            state.cancelled = true;
            let mut effects = none;
            for line in &state.lines[..state.reserved.min(state.lines.len())] {
                effects = effects.command(FulfillmentCommand::ReleaseStock(ReleaseStockV1 {
                    sku: line.sku.clone(),
                    order_id: state.order_id.clone(),
                }));
            }
            if state.paid {
                effects = effects.command(refund(state));
            }
            if state.shipment_requested {
                effects = effects.command(FulfillmentCommand::CancelShipment(CancelShipmentV1 {
                    order_id: state.order_id.clone(),
                }));
            }
            effects.schedule(CLOSE, event.recorded_at + chrono::Duration::days(1))
        }
        Input::Dispatched(dispatched) => {
            let mut effects = none.command(FulfillmentCommand::ShipOrder(ShipOrderV1 {
                order_id: state.order_id.clone(),
                carrier: dispatched.carrier,
                tracking: dispatched.tracking,
            }));
            for line in &state.lines {
                effects = effects.command(FulfillmentCommand::ShipStock(ShipStockV1 {
                    sku: line.sku.clone(),
                    order_id: state.order_id.clone(),
                }));
            }
            effects
        }
        Input::Rejected(_) | Input::Other => none,
    }
}
// ANCHOR_END: decide

fn refund(state: &FulfillmentState) -> FulfillmentCommand {
    FulfillmentCommand::RefundPayment(RefundPaymentV1 {
        order_id: state.order_id.clone(),
        reason: "order cancelled".into(),
    })
}
