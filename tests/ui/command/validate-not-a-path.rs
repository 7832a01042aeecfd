use factum::command;

#[command(validate = "check")]
#[derive(Clone, Debug)]
pub struct PlaceOrderV1 {}

fn main() {}
