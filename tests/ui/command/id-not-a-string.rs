use factum::command;

#[command]
#[derive(Clone, Debug)]
pub struct PlaceOrderV1 {
    #[id]
    pub order_id: u64,
}

fn main() {}
