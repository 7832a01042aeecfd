use factum::{event, projection};
use serde::{Deserialize, Serialize};

#[event]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderPlaced {}

#[derive(Debug, Default)]
pub struct OrderList {}

#[projection(name = "order_list", transactional)]
impl OrderList {
    async fn placed(&self, _: &OrderPlaced) {}
}

fn main() {}
