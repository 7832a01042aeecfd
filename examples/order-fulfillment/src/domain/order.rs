//! The order: placed once, paid, shipped only when paid, or cancelled.

use factum::personal::Personal;
use factum::prelude::*;
use serde::{Deserialize, Serialize};

use super::{Line, total_cents};

// ANCHOR: events
/// An order was placed. Stored as `("OrderPlaced", 2)`; version 2 added the currency.
///
/// The customer's name is personal data: stored encrypted under the customer's key (the
/// subject is `customer_id`), and read back as [`Personal::Erased`] once the customer is
/// forgotten. It is optional, so an `OrderPlaced` stored before it existed decodes as it
/// was, with no name (`None`).
#[event(version = 2, previous = OrderPlacedV1)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderPlaced {
    /// The order.
    pub order_id: String,
    /// Who placed it.
    pub customer_id: String,
    /// What was ordered.
    pub lines: Vec<Line>,
    /// ISO 4217 code of the prices' currency.
    pub currency: String,
    /// The customer's name, when the order gave one. Left out of the payload when there is
    /// none, so that an order without a name creates no key for its customer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[personal(subject = customer_id)]
    pub customer_name: Option<Personal<String>>,
}

/// The first shape of `OrderPlaced`, written before currencies existed: every price was in
/// euros. Kept only to read old history.
#[event(name = "OrderPlaced", version = 1, upcast_to = OrderPlaced)]
#[derive(Debug, Deserialize)]
pub struct OrderPlacedV1 {
    /// The order.
    pub order_id: String,
    /// Who placed it.
    pub customer_id: String,
    /// What was ordered.
    pub lines: Vec<Line>,
}

impl From<OrderPlacedV1> for OrderPlaced {
    fn from(v1: OrderPlacedV1) -> Self {
        Self {
            order_id: v1.order_id,
            customer_id: v1.customer_id,
            lines: v1.lines,
            currency: "EUR".into(),
            customer_name: None,
        }
    }
}
// ANCHOR_END: events

/// The order's payment was captured.
#[event]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderPaid {
    /// The order.
    pub order_id: String,
    /// The amount captured, in cents.
    pub amount_cents: u64,
}

/// The order left the warehouse.
#[event]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderShipped {
    /// The order.
    pub order_id: String,
    /// Who carries it.
    pub carrier: String,
    /// The carrier's tracking number.
    pub tracking: String,
}

/// The order was cancelled, by the customer or because its stock could not be reserved.
#[event]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderCancelled {
    /// The order.
    pub order_id: String,
    /// Why.
    pub reason: String,
}

// ANCHOR: commands
/// Places an order priced in euros: the first version of `PlaceOrder`, still accepted.
#[command(validate = validate_v1)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlaceOrderV1 {
    /// The new order's id.
    #[id]
    pub order_id: String,
    /// Who places it.
    pub customer_id: String,
    /// What is ordered.
    pub lines: Vec<Line>,
}

/// Places an order in any currency: version 2 of `PlaceOrder`.
#[command(validate = validate_v2)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlaceOrderV2 {
    /// The new order's id.
    #[id]
    pub order_id: String,
    /// Who places it.
    pub customer_id: String,
    /// What is ordered.
    pub lines: Vec<Line>,
    /// ISO 4217 code, such as `EUR` or `USD`.
    pub currency: String,
    /// The customer's name (personal data), when given.
    #[serde(default)]
    pub customer_name: Option<String>,
}

fn validate_v1(command: &PlaceOrderV1) -> Result<(), String> {
    validate_lines(&command.customer_id, &command.lines)
}

fn validate_v2(command: &PlaceOrderV2) -> Result<(), String> {
    validate_lines(&command.customer_id, &command.lines)?;
    let code = &command.currency;
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(format!(
            "the currency must be a three-letter ISO 4217 code, not {code:?}"
        ));
    }
    Ok(())
}
// ANCHOR_END: commands

fn validate_lines(customer_id: &str, lines: &[Line]) -> Result<(), String> {
    if customer_id.trim().is_empty() {
        return Err("the customer id must not be empty".into());
    }
    if lines.is_empty() {
        return Err("an order needs at least one line".into());
    }
    for line in lines {
        if line.sku.trim().is_empty() {
            return Err("every line needs a SKU".into());
        }
        if line.quantity == 0 {
            return Err(format!("the quantity of `{}` must be positive", line.sku));
        }
    }
    let mut skus: Vec<&str> = lines.iter().map(|l| l.sku.as_str()).collect();
    skus.sort_unstable();
    if skus.windows(2).any(|w| w[0] == w[1]) {
        return Err("each SKU may appear on one line only".into());
    }
    Ok(())
}

/// Records that the order's payment was captured (sent by the fulfillment process).
#[command]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MarkOrderPaidV1 {
    /// The order.
    #[id]
    pub order_id: String,
    /// The amount captured, in cents.
    pub amount_cents: u64,
}

/// Records that the order was shipped (sent by the fulfillment process once its shipment
/// left).
#[command]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShipOrderV1 {
    /// The order.
    #[id]
    pub order_id: String,
    /// Who carries it.
    pub carrier: String,
    /// The carrier's tracking number.
    pub tracking: String,
}

/// Cancels the order.
#[command]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CancelOrderV1 {
    /// The order.
    #[id]
    pub order_id: String,
    /// Why.
    pub reason: String,
}

/// Why an order refuses a command.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    /// Placing an order twice.
    #[error("the order is already placed")]
    AlreadyPlaced,
    /// Any command but placing, on an order never placed.
    #[error("the order is not placed")]
    NotPlaced,
    /// Shipping an order that is not paid.
    #[error("the order is not paid; it cannot be shipped")]
    PaymentRequired,
    /// Cancelling or shipping a shipped order.
    #[error("the order is already shipped")]
    AlreadyShipped,
    /// Any change to a cancelled order.
    #[error("the order is cancelled")]
    Cancelled,
}

// ANCHOR: aggregate
/// An order's state: just what its invariants need.
#[aggregate(category = "order")]
#[derive(Debug, Default)]
pub struct Order {
    placed: bool,
    customer_id: String,
    currency: String,
    total_cents: u64,
    paid: bool,
    shipped: bool,
    cancelled: bool,
}

#[aggregate]
impl Order {
    #[handle]
    fn place_v1(&self, command: PlaceOrderV1) -> Result<OrderPlaced, OrderError> {
        // Version 1 of the command predates currencies: its prices are in euros.
        self.place(PlaceOrderV2 {
            order_id: command.order_id,
            customer_id: command.customer_id,
            lines: command.lines,
            currency: "EUR".into(),
            customer_name: None,
        })
    }

    #[handle]
    fn place(&self, command: PlaceOrderV2) -> Result<OrderPlaced, OrderError> {
        if self.placed {
            return Err(OrderError::AlreadyPlaced);
        }
        Ok(OrderPlaced {
            order_id: command.order_id,
            customer_id: command.customer_id,
            lines: command.lines,
            currency: command.currency,
            customer_name: command.customer_name.map(Personal::Known),
        })
    }

    #[handle]
    fn mark_paid(&self, command: MarkOrderPaidV1) -> Result<Option<OrderPaid>, OrderError> {
        self.require_open()?;
        Ok((!self.paid).then_some(OrderPaid {
            order_id: command.order_id,
            amount_cents: command.amount_cents,
        }))
    }

    #[handle]
    fn ship(&self, command: ShipOrderV1) -> Result<OrderShipped, OrderError> {
        self.require_open()?;
        if !self.paid {
            return Err(OrderError::PaymentRequired);
        }
        Ok(OrderShipped {
            order_id: command.order_id,
            carrier: command.carrier,
            tracking: command.tracking,
        })
    }

    #[handle]
    fn cancel(&self, command: CancelOrderV1) -> Result<OrderCancelled, OrderError> {
        self.require_open()?;
        Ok(OrderCancelled {
            order_id: command.order_id,
            reason: command.reason,
        })
    }

    /// Placed, neither shipped nor cancelled.
    fn require_open(&self) -> Result<(), OrderError> {
        if !self.placed {
            Err(OrderError::NotPlaced)
        } else if self.cancelled {
            Err(OrderError::Cancelled)
        } else if self.shipped {
            Err(OrderError::AlreadyShipped)
        } else {
            Ok(())
        }
    }

    #[apply]
    fn placed(&mut self, event: &OrderPlaced) {
        self.placed = true;
        self.customer_id.clone_from(&event.customer_id);
        self.currency.clone_from(&event.currency);
        self.total_cents = total_cents(&event.lines);
    }

    #[apply]
    fn paid(&mut self, _: &OrderPaid) {
        self.paid = true;
    }

    #[apply]
    fn shipped(&mut self, _: &OrderShipped) {
        self.shipped = true;
    }

    #[apply]
    fn cancelled(&mut self, _: &OrderCancelled) {
        self.cancelled = true;
    }
}
// ANCHOR_END: aggregate

impl Order {
    /// Whether the order was placed.
    pub fn is_placed(&self) -> bool {
        self.placed
    }

    /// Who placed it.
    pub fn customer_id(&self) -> &str {
        &self.customer_id
    }

    /// Its currency.
    pub fn currency(&self) -> &str {
        &self.currency
    }

    /// Its total, in cents.
    pub fn total_cents(&self) -> u64 {
        self.total_cents
    }

    /// Whether its payment was recorded.
    pub fn is_paid(&self) -> bool {
        self.paid
    }

    /// Whether it was shipped.
    pub fn is_shipped(&self) -> bool {
        self.shipped
    }

    /// Whether it was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled
    }

    /// Its status as one word: `new`, `placed`, `paid`, `shipped` or `cancelled`.
    pub fn status(&self) -> &'static str {
        if self.cancelled {
            "cancelled"
        } else if self.shipped {
            "shipped"
        } else if self.paid {
            "paid"
        } else if self.placed {
            "placed"
        } else {
            "new"
        }
    }
}
