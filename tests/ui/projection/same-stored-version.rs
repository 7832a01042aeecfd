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

#[event(name = "OrderPlaced")]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderPlacedAgain {}

#[projection(name = "order_list")]
impl OrderList {
    async fn placed(&self, _: &OrderPlaced) {}

    async fn placed_again(&self, _: &OrderPlacedAgain) {}
}

fn main() {}
