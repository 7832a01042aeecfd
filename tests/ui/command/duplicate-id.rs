use factum::command;

#[command]
#[derive(Clone, Debug)]
pub struct PlaceOrderV1 {
    #[id]
    pub order_id: String,
    #[id]
    pub customer_id: String,
}

fn main() {}
