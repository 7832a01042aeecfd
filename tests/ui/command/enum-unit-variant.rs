use factum::command;

#[command]
#[derive(Clone, Debug)]
pub enum PlaceOrderV1 {
    Now,
}

fn main() {}
