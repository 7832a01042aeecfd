use factum::event;
use serde::{Deserialize, Serialize};

#[event(name = "")]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderPlaced {}

fn main() {}
