use factum::command;

#[command]
#[derive(Clone, Debug)]
pub struct PlaceOrderV1 {
    #[id(order)]
    pub order_id: String,
}

fn main() {}
