use factum::command;

#[command(validate = check)]
#[derive(Clone, Debug)]
pub struct PlaceOrderV1 {}

fn check(_: &PlaceOrderV1) -> bool {
    true
}

fn main() {}
