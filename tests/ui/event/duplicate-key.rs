use factum::event;
use serde::{Deserialize, Serialize};

#[event(version = 1, version = 2)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderPlaced {}

fn main() {}
