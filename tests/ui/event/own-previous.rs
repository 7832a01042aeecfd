use factum::event;
use serde::{Deserialize, Serialize};

#[event(version = 2, previous = OrderPlaced)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderPlaced {}

fn main() {}
