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

use factum::{Effects, RecordedEvent, Rejection, command, process_manager};
use serde::{Deserialize, Serialize};

use crate::domain::Line;
use crate::domain::inventory::{
    InventoryError, ReleaseStockV1, ReservationRejected, ReserveStockV1, ShipStockV1, StockReserved,
};
use crate::domain::order::{
    CancelOrderV1, MarkOrderPaidV1, OrderCancelled, OrderPlaced, ShipOrderV1,
};
use crate::domain::payment::{PaymentCaptured, RefundPaymentV1};
use crate::domain::shipment::{
    CancelShipmentV1, CreateShipmentV1, ShipmentDispatched, ShipmentLine,
};

/// The process manager's name: the key of its instances and checkpoints.
pub const ORDER_FULFILLMENT: &str = "order_fulfillment";

/// The timeout that closes a cancelled order's instance.
const CLOSE: &str = "close";

// ANCHOR: commands
/// The commands the process sends, to every aggregate of the domain. `#[command]` on the
/// enum makes it `Routable`: the application's router dispatches each variant's command to
/// the aggregate that accepts it, on the instance its `#[id]` names, and `From` each command
/// builds the variant.
#[command]
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
// ANCHOR_END: commands

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

    fn release(&self, sku: &str) -> FulfillmentCommand {
        FulfillmentCommand::ReleaseStock(ReleaseStockV1 {
            sku: sku.to_owned(),
            order_id: self.order_id.clone(),
        })
    }

    fn refund(&self) -> FulfillmentCommand {
        FulfillmentCommand::RefundPayment(RefundPaymentV1 {
            order_id: self.order_id.clone(),
            reason: "order cancelled".into(),
        })
    }

    fn cancel_order(&self, reason: String) -> FulfillmentCommand {
        FulfillmentCommand::CancelOrder(CancelOrderV1 {
            order_id: self.order_id.clone(),
            reason,
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

// ANCHOR: process
/// The order-fulfillment process manager: one handler per event type it reads.
/// `#[process_manager]` generates its `ProcessManager` impl: the stored event types to read
/// (`OrderPlaced`'s first version included), the routing by each event's `order_id`, the
/// decoding and the hooks. An event that does not decode (one that names no order, say)
/// stops the process at it, with an error naming its type, version, position and stream.
#[derive(Clone, Copy, Debug, Default)]
pub struct OrderFulfillment;

#[process_manager(name = "order_fulfillment")]
impl OrderFulfillment {
    #[start(by = order_id, strict)]
    fn placed(
        &self,
        state: &mut FulfillmentState,
        placed: &OrderPlaced,
    ) -> Option<FulfillmentCommand> {
        state.order_id.clone_from(&placed.order_id);
        state.lines.clone_from(&placed.lines);
        state.reserve(0)
    }

    #[on(by = order_id)]
    fn reserved(
        &self,
        state: &mut FulfillmentState,
        reserved: &StockReserved,
    ) -> Effects<FulfillmentCommand> {
        if state.cancelled {
            // Reserved while the order was being cancelled: give it back.
            return Effects::none().command(state.release(&reserved.sku));
        }
        state.reserved += 1;
        match state.reserve(state.reserved) {
            Some(next) => Effects::none().command(next),
            None => state.maybe_ship(Effects::none()),
        }
    }

    #[on(by = order_id)]
    fn rejected(
        &self,
        state: &mut FulfillmentState,
        rejected: &ReservationRejected,
    ) -> Option<FulfillmentCommand> {
        if state.cancelled {
            return None;
        }
        state.reservation_failed = true;
        let reason = format!(
            "out of stock: {} (requested {}, available {})",
            rejected.sku, rejected.requested, rejected.available
        );
        Some(state.cancel_order(reason))
    }

    #[on(by = order_id)]
    fn captured(
        &self,
        state: &mut FulfillmentState,
        captured: &PaymentCaptured,
    ) -> Effects<FulfillmentCommand> {
        state.paid = true;
        if state.cancelled {
            return Effects::none().command(state.refund());
        }
        let paid = Effects::none().command(FulfillmentCommand::MarkOrderPaid(MarkOrderPaidV1 {
            order_id: state.order_id.clone(),
            amount_cents: captured.amount_cents,
        }));
        state.maybe_ship(paid)
    }

    /// Compensates, then keeps the instance a day, so that a payment captured in the meantime
    /// is still refunded.
    #[on(by = order_id)]
    fn cancelled(
        &self,
        state: &mut FulfillmentState,
        _: &OrderCancelled,
        recorded: &RecordedEvent,
    ) -> Effects<FulfillmentCommand> {
        state.cancelled = true;
        let mut effects = Effects::none();
        for line in &state.lines[..state.reserved.min(state.lines.len())] {
            effects = effects.command(state.release(&line.sku));
        }
        if state.paid {
            effects = effects.command(state.refund());
        }
        if state.shipment_requested {
            effects = effects.command(FulfillmentCommand::CancelShipment(CancelShipmentV1 {
                order_id: state.order_id.clone(),
            }));
        }
        effects.schedule(CLOSE, recorded.recorded_at + chrono::Duration::days(1))
    }

    #[stop(by = order_id)]
    fn dispatched(
        &self,
        state: &mut FulfillmentState,
        dispatched: &ShipmentDispatched,
    ) -> Vec<FulfillmentCommand> {
        let ship = FulfillmentCommand::ShipOrder(ShipOrderV1 {
            order_id: state.order_id.clone(),
            carrier: dispatched.carrier.clone(),
            tracking: dispatched.tracking.clone(),
        });
        let take_out = state.lines.iter().map(|line| {
            FulfillmentCommand::ShipStock(ShipStockV1 {
                sku: line.sku.clone(),
                order_id: state.order_id.clone(),
            })
        });
        std::iter::once(ship).chain(take_out).collect()
    }

    #[on_rejected]
    fn refused(
        &self,
        state: &mut FulfillmentState,
        command: &FulfillmentCommand,
        error: &Rejection,
    ) -> Option<FulfillmentCommand> {
        tracing::info!(order_id = %state.order_id, ?command, %error, "fulfillment command refused");
        match command {
            // Not expected (refusals are recorded as `ReservationRejected`), but if an
            // inventory ever refuses outright, the order cannot be served either.
            FulfillmentCommand::ReserveStock(_)
                if !state.cancelled && error.is::<InventoryError>() =>
            {
                state.reservation_failed = true;
                Some(state.cancel_order(format!("reservation failed: {error}")))
            }
            // Everything else is refused because the order moved on (cancelled, shipped)
            // while the command was on its way; the events of that move compensate.
            _ => None,
        }
    }

    #[on_timeout]
    fn timed_out(
        &self,
        _key: &str,
        _: &mut FulfillmentState,
        name: &str,
    ) -> Effects<FulfillmentCommand> {
        if name == CLOSE {
            Effects::none().complete()
        } else {
            Effects::none()
        }
    }
}
// ANCHOR_END: process

#[cfg(test)]
mod tests {
    use factum::ProcessManager;

    use super::*;

    #[test]
    fn it_reads_the_six_event_types_under_its_name() {
        assert_eq!(OrderFulfillment.name(), ORDER_FULFILLMENT);
        assert_eq!(
            OrderFulfillment.event_types(),
            [
                "OrderPlaced",
                "StockReserved",
                "ReservationRejected",
                "PaymentCaptured",
                "OrderCancelled",
                "ShipmentDispatched",
            ]
        );
    }
}
