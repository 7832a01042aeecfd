use factum::{event, projection};
use serde::{Deserialize, Serialize};

#[event]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderPlaced {}

#[event]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderShipped {}

#[derive(Debug, Default)]
pub struct OrderList {}

#[projection(nmae = "order_list", categories = ["order-archive"])]
impl OrderList {
    fn placed(&mut self, _: OrderPlaced) {}

    async fn shipped(&self, _: &OrderShipped) -> Option<()> {
        None
    }
}

fn main() {}
