//! The stock of one SKU: received, reserved per order, released or shipped. One stream per
//! SKU lives as long as the product is sold, so its state is snapshotted.

use std::collections::BTreeMap;

use factum::prelude::*;
use serde::{Deserialize, Serialize};

/// Stock arrived.
#[event]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StockReceived {
    /// The SKU.
    pub sku: String,
    /// How many units.
    pub quantity: u32,
}

/// Units were set aside for an order.
#[event]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StockReserved {
    /// The SKU.
    pub sku: String,
    /// The order.
    pub order_id: String,
    /// How many units.
    pub quantity: u32,
}

/// A reservation was refused: not enough units were available. Recorded as a fact, so the
/// fulfillment process reacts to it like to any event, and a retried reservation gives the
/// same answer.
#[event]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReservationRejected {
    /// The SKU.
    pub sku: String,
    /// The order.
    pub order_id: String,
    /// How many units were asked for.
    pub requested: u32,
    /// How many were available.
    pub available: u32,
}

/// An order's reservation was given back.
#[event]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StockReleased {
    /// The SKU.
    pub sku: String,
    /// The order.
    pub order_id: String,
    /// How many units.
    pub quantity: u32,
}

/// An order's reserved units left the warehouse.
#[event]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StockShipped {
    /// The SKU.
    pub sku: String,
    /// The order.
    pub order_id: String,
    /// How many units.
    pub quantity: u32,
}

/// Adds received units.
#[command(validate = positive_receipt)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReceiveStockV1 {
    /// The SKU.
    #[id]
    pub sku: String,
    /// How many units (at least 1).
    pub quantity: u32,
}

fn positive_receipt(command: &ReceiveStockV1) -> Result<(), String> {
    if command.quantity == 0 {
        return Err("the quantity must be positive".into());
    }
    Ok(())
}

/// Reserves units for an order, if that many are available.
#[command]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReserveStockV1 {
    /// The SKU.
    #[id]
    pub sku: String,
    /// The order.
    pub order_id: String,
    /// How many units.
    pub quantity: u32,
}

/// Gives an order's reservation back; nothing happens when it holds none.
#[command]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReleaseStockV1 {
    /// The SKU.
    #[id]
    pub sku: String,
    /// The order.
    pub order_id: String,
}

/// Ships an order's reserved units.
#[command]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShipStockV1 {
    /// The SKU.
    #[id]
    pub sku: String,
    /// The order.
    pub order_id: String,
}

/// Why the inventory refuses a command.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InventoryError {
    /// Shipping units that were never reserved.
    #[error("order `{order_id}` holds no reservation of this SKU")]
    NoReservation {
        /// The order.
        order_id: String,
    },
}

// ANCHOR: aggregate
/// The stock of one SKU. Snapshotted every 10 events, at state version 1: a change to this
/// struct's shape bumps `state_version`, and older snapshots are then ignored.
#[aggregate(category = "inventory", snapshot_every = 10, state_version = 1)]
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Inventory {
    on_hand: u32,
    reservations: BTreeMap<String, u32>,
}

#[aggregate]
impl Inventory {
    #[handle]
    fn receive(&self, command: ReceiveStockV1) -> Result<StockReceived, InventoryError> {
        Ok(StockReceived {
            sku: command.sku,
            quantity: command.quantity,
        })
    }

    /// Never reserves more than is available: a reservation that does not fit is recorded
    /// as rejected. Reserving again for the same order changes nothing.
    #[handle]
    fn reserve(&self, command: ReserveStockV1) -> Result<Option<InventoryEvent>, InventoryError> {
        if self.reservations.contains_key(&command.order_id) {
            return Ok(None);
        }
        let available = self.available();
        let event = if command.quantity <= available {
            StockReserved {
                sku: command.sku,
                order_id: command.order_id,
                quantity: command.quantity,
            }
            .into()
        } else {
            ReservationRejected {
                sku: command.sku,
                order_id: command.order_id,
                requested: command.quantity,
                available,
            }
            .into()
        };
        Ok(Some(event))
    }

    #[handle]
    fn release(&self, command: ReleaseStockV1) -> Result<Option<StockReleased>, InventoryError> {
        Ok(self
            .reservations
            .get(&command.order_id)
            .map(|&quantity| StockReleased {
                sku: command.sku,
                order_id: command.order_id,
                quantity,
            }))
    }

    #[handle]
    fn ship(&self, command: ShipStockV1) -> Result<StockShipped, InventoryError> {
        let Some(&quantity) = self.reservations.get(&command.order_id) else {
            return Err(InventoryError::NoReservation {
                order_id: command.order_id,
            });
        };
        Ok(StockShipped {
            sku: command.sku,
            order_id: command.order_id,
            quantity,
        })
    }

    #[apply]
    fn received(&mut self, event: &StockReceived) {
        self.on_hand = self.on_hand.saturating_add(event.quantity);
    }

    #[apply]
    fn on_reserved(&mut self, event: &StockReserved) {
        self.reservations
            .insert(event.order_id.clone(), event.quantity);
    }

    #[apply]
    fn rejected(&mut self, _: &ReservationRejected) {}

    #[apply]
    fn released(&mut self, event: &StockReleased) {
        self.reservations.remove(&event.order_id);
    }

    #[apply]
    fn shipped(&mut self, event: &StockShipped) {
        self.reservations.remove(&event.order_id);
        self.on_hand = self.on_hand.saturating_sub(event.quantity);
    }
}
// ANCHOR_END: aggregate

impl Inventory {
    /// Units in the warehouse, reserved or not.
    pub fn on_hand(&self) -> u32 {
        self.on_hand
    }

    /// Units reserved for orders not shipped yet.
    pub fn reserved(&self) -> u32 {
        self.reservations
            .values()
            .fold(0, |sum, q| sum.saturating_add(*q))
    }

    /// Units free to reserve.
    pub fn available(&self) -> u32 {
        self.on_hand.saturating_sub(self.reserved())
    }

    /// The units reserved for `order_id`, if any.
    pub fn reservation(&self, order_id: &str) -> Option<u32> {
        self.reservations.get(order_id).copied()
    }
}
