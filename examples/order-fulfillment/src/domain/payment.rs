//! The payment of one order: captured once, refunded at most once.

use factum::prelude::*;
use serde::{Deserialize, Serialize};

/// Money was captured for an order.
#[event]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PaymentCaptured {
    /// The order paid for (also the payment's id).
    pub order_id: String,
    /// The amount, in cents.
    pub amount_cents: u64,
    /// Its currency.
    pub currency: String,
}

/// A captured payment was given back.
#[event]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PaymentRefunded {
    /// The order.
    pub order_id: String,
    /// The amount, in cents.
    pub amount_cents: u64,
    /// Its currency.
    pub currency: String,
    /// Why.
    pub reason: String,
}

/// Captures the payment of an order.
#[command(validate = positive_amount)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CapturePaymentV1 {
    /// The order paid for.
    #[id]
    pub order_id: String,
    /// The amount, in cents.
    pub amount_cents: u64,
    /// Its currency.
    pub currency: String,
}

fn positive_amount(command: &CapturePaymentV1) -> Result<(), String> {
    if command.amount_cents == 0 {
        return Err("the amount must be positive".into());
    }
    Ok(())
}

/// Refunds a captured payment; refunding twice changes nothing.
#[command]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RefundPaymentV1 {
    /// The order.
    #[id]
    pub order_id: String,
    /// Why.
    pub reason: String,
}

/// Why a payment refuses a command.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    /// A second capture.
    #[error("the payment is already captured")]
    AlreadyCaptured,
    /// A refund of nothing.
    #[error("no payment was captured")]
    NotCaptured,
}

/// A payment's state.
#[aggregate(category = "payment")]
#[derive(Debug, Default)]
pub struct Payment {
    captured: Option<(u64, String)>,
    refunded: bool,
}

#[aggregate]
impl Payment {
    #[handle]
    fn capture(&self, command: CapturePaymentV1) -> Result<PaymentCaptured, PaymentError> {
        if self.captured.is_some() {
            return Err(PaymentError::AlreadyCaptured);
        }
        Ok(PaymentCaptured {
            order_id: command.order_id,
            amount_cents: command.amount_cents,
            currency: command.currency,
        })
    }

    #[handle]
    fn refund(&self, command: RefundPaymentV1) -> Result<Option<PaymentRefunded>, PaymentError> {
        let Some((amount_cents, currency)) = &self.captured else {
            return Err(PaymentError::NotCaptured);
        };
        Ok((!self.refunded).then(|| PaymentRefunded {
            order_id: command.order_id,
            amount_cents: *amount_cents,
            currency: currency.clone(),
            reason: command.reason,
        }))
    }

    #[apply]
    fn captured(&mut self, event: &PaymentCaptured) {
        self.captured = Some((event.amount_cents, event.currency.clone()));
    }

    #[apply]
    fn refunded(&mut self, _: &PaymentRefunded) {
        self.refunded = true;
    }
}

impl Payment {
    /// Whether the payment was captured.
    pub fn is_captured(&self) -> bool {
        self.captured.is_some()
    }

    /// Whether it was refunded.
    pub fn is_refunded(&self) -> bool {
        self.refunded
    }
}
