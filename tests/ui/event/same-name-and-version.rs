use factum::event;
use serde::{Deserialize, Serialize};

#[event(version = 1, previous = OrderPlacedV1)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderPlaced {}

#[event(name = "OrderPlaced", version = 1, upcast_to = OrderPlaced)]
#[derive(Debug, Deserialize)]
pub struct OrderPlacedV1 {}

impl From<OrderPlacedV1> for OrderPlaced {
    fn from(_: OrderPlacedV1) -> Self {
        Self {}
    }
}

fn main() {}
