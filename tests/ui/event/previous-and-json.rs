use factum::event;
use serde::{Deserialize, Serialize};

#[event(version = 3, previous = OrderPlacedV2, upcast_json(from = 1, with = up))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderPlaced {}

#[event(name = "OrderPlaced", version = 2, upcast_to = OrderPlaced)]
#[derive(Debug, Deserialize)]
pub struct OrderPlacedV2 {}

impl From<OrderPlacedV2> for OrderPlaced {
    fn from(_: OrderPlacedV2) -> Self {
        Self {}
    }
}

fn up(v: serde_json::Value) -> Result<serde_json::Value, String> {
    Ok(v)
}

fn main() {}
