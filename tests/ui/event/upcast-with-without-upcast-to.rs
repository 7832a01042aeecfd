use factum::event;
use serde::Deserialize;

#[event(version = 1, upcast_with = upgrade)]
#[derive(Debug, Deserialize)]
pub struct OrderPlacedV1 {}

fn main() {}
