use factum::{aggregate, command, event};
use serde::{Deserialize, Serialize};

#[event]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderPlaced {}

#[event]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderShipped {}

#[command]
#[derive(Clone, Debug)]
pub struct PlaceOrderV1 {}

#[command]
#[derive(Clone, Debug)]
pub struct ShipOrderV1 {}

#[derive(Debug, thiserror::Error)]
#[error("refused")]
pub struct OrderError;

#[aggregate(category = "order")]
#[derive(Debug, Default)]
pub struct Order {}

#[aggregate(error = "OrderError")]
impl Order {
    #[handle]
    fn place(&self, _: PlaceOrderV1) -> Result<OrderPlaced, OrderError> {
        Ok(OrderPlaced {})
    }

    #[apply]
    fn placed(&mut self, _: &OrderPlaced) {}
}

fn main() {}
