use factum::event;
use serde::{Deserialize, Serialize};

#[event(version = 0)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderPlaced {}

fn main() {}
