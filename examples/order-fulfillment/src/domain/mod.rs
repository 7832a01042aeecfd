//! The domain: four aggregates written with the macros only.
//!
//! - [`order::Order`]: placed (with versioned commands and an upcast event), paid, shipped or
//!   cancelled.
//! - [`payment::Payment`]: captured once, refunded at most once.
//! - [`inventory::Inventory`]: stock of one SKU, reserved per order; long-lived, so
//!   snapshotted.
//! - [`shipment::Shipment`]: created once an order is paid and reserved, then dispatched.

pub mod inventory;
pub mod order;
pub mod payment;
pub mod shipment;

use serde::{Deserialize, Serialize};

/// One line of an order: a quantity of a SKU at a unit price, in the order's currency.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    /// The stock-keeping unit.
    pub sku: String,
    /// How many (at least 1).
    pub quantity: u32,
    /// The price of one, in cents.
    pub unit_price_cents: u64,
}

impl Line {
    /// The line's amount in cents (saturating: a line cannot overflow the total).
    pub fn amount_cents(&self) -> u64 {
        self.unit_price_cents
            .saturating_mul(u64::from(self.quantity))
    }
}

/// The total of `lines`, in cents.
pub fn total_cents(lines: &[Line]) -> u64 {
    lines
        .iter()
        .map(Line::amount_cents)
        .fold(0, u64::saturating_add)
}
