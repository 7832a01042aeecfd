use factum::command;

#[command(naem = "PlaceOrder")]
#[derive(Clone, Debug)]
pub struct PlaceOrderV1 {}

fn main() {}
