use factum::{event, projection};
use serde::{Deserialize, Serialize};

#[event]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderPlaced {}

#[event]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderShipped {}

#[derive(Debug)]
pub struct OrderList {}

#[projection(name = "order_list")]
impl Default for OrderList {
    fn default() -> Self {
        OrderList {}
    }
}

fn main() {}
