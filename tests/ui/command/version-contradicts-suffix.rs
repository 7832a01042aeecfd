use factum::command;

#[command(version = 2)]
#[derive(Clone, Debug)]
pub struct PlaceOrderV1 {}

fn main() {}
