use factum::event;
use serde::{Deserialize, Serialize};

#[event(version = 2, upcast_json(from = 1))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderPlaced {}

fn main() {}
