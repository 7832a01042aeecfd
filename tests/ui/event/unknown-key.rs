use factum::event;
use serde::{Deserialize, Serialize};

#[event(nmae = "OrderPlaced")]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderPlaced {}

fn main() {}
