use factum::event;
use serde::{Deserialize, Serialize};

#[event(version = 2, previous = OrderPlacedV1)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderPlaced {}

#[event(name = "OrderPlaced", version = 1)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderPlacedV1 {}

fn main() {}
