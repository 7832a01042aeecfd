use factum::command;

#[command(name = "PlaceOrder", name = "Order")]
#[derive(Clone, Debug)]
pub struct PlaceOrderV1 {}

fn main() {}
