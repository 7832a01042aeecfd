use factum::event;
use serde::Deserialize;

#[event]
#[derive(Debug, Deserialize)]
pub struct OrderPlaced {}

fn main() {}
