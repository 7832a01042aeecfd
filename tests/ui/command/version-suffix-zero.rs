use factum::command;

#[command]
#[derive(Clone, Debug)]
pub struct PlaceOrderV0 {}

fn main() {}
