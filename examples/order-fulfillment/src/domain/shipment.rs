//! The shipment of one order: created by the fulfillment process once the order is paid and
//! its stock reserved, then dispatched, or cancelled with the order.

use factum::prelude::*;
use serde::{Deserialize, Serialize};

/// One line of a shipment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipmentLine {
    /// The SKU.
    pub sku: String,
    /// How many units.
    pub quantity: u32,
}

/// A shipment is ready to be picked up.
#[event]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShipmentCreated {
    /// The order (also the shipment's id).
    pub order_id: String,
    /// What to pack.
    pub lines: Vec<ShipmentLine>,
}

/// The shipment was handed to a carrier.
#[event]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShipmentDispatched {
    /// The order.
    pub order_id: String,
    /// The carrier.
    pub carrier: String,
    /// The carrier's tracking number.
    pub tracking: String,
}

/// The shipment will not leave.
#[event]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShipmentCancelled {
    /// The order.
    pub order_id: String,
}

/// Creates the shipment of an order; creating it again changes nothing.
#[command]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CreateShipmentV1 {
    /// The order.
    #[id]
    pub order_id: String,
    /// What to pack.
    pub lines: Vec<ShipmentLine>,
}

/// Hands the shipment to a carrier.
#[command(validate = carrier_named)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DispatchShipmentV1 {
    /// The order.
    #[id]
    pub order_id: String,
    /// The carrier.
    pub carrier: String,
}

fn carrier_named(command: &DispatchShipmentV1) -> Result<(), String> {
    if command.carrier.trim().is_empty() {
        return Err("the carrier must not be empty".into());
    }
    Ok(())
}

/// Cancels a shipment that has not left; nothing happens when there is none.
#[command]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CancelShipmentV1 {
    /// The order.
    #[id]
    pub order_id: String,
}

/// Why a shipment refuses a command.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ShipmentError {
    /// Dispatching before the order is paid and its stock reserved.
    #[error("there is no shipment yet: the order must be paid and its stock reserved first")]
    NotCreated,
    /// Dispatching or cancelling twice.
    #[error("the shipment has already left")]
    AlreadyDispatched,
    /// Dispatching a cancelled shipment.
    #[error("the shipment is cancelled")]
    Cancelled,
}

/// A shipment's state.
#[aggregate(category = "shipment")]
#[derive(Debug, Default)]
pub struct Shipment {
    created: bool,
    dispatched: bool,
    cancelled: bool,
}

#[aggregate]
impl Shipment {
    #[handle]
    fn create(&self, command: CreateShipmentV1) -> Result<Option<ShipmentCreated>, ShipmentError> {
        Ok((!self.created).then_some(ShipmentCreated {
            order_id: command.order_id,
            lines: command.lines,
        }))
    }

    #[handle]
    fn dispatch(&self, command: DispatchShipmentV1) -> Result<ShipmentDispatched, ShipmentError> {
        if !self.created {
            return Err(ShipmentError::NotCreated);
        }
        if self.cancelled {
            return Err(ShipmentError::Cancelled);
        }
        if self.dispatched {
            return Err(ShipmentError::AlreadyDispatched);
        }
        let tracking = format!(
            "{}-{}",
            command.carrier.to_ascii_uppercase(),
            command.order_id
        );
        Ok(ShipmentDispatched {
            order_id: command.order_id,
            carrier: command.carrier,
            tracking,
        })
    }

    #[handle]
    fn cancel(
        &self,
        command: CancelShipmentV1,
    ) -> Result<Option<ShipmentCancelled>, ShipmentError> {
        if self.dispatched {
            return Err(ShipmentError::AlreadyDispatched);
        }
        Ok(
            (self.created && !self.cancelled).then_some(ShipmentCancelled {
                order_id: command.order_id,
            }),
        )
    }

    #[apply]
    fn created(&mut self, _: &ShipmentCreated) {
        self.created = true;
    }

    #[apply]
    fn dispatched(&mut self, _: &ShipmentDispatched) {
        self.dispatched = true;
    }

    #[apply]
    fn cancelled(&mut self, _: &ShipmentCancelled) {
        self.cancelled = true;
    }
}

impl Shipment {
    /// Whether it was created.
    pub fn is_created(&self) -> bool {
        self.created
    }

    /// Whether it left.
    pub fn is_dispatched(&self) -> bool {
        self.dispatched
    }

    /// Whether it was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled
    }
}
