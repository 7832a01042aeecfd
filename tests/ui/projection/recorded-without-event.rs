use factum::{RecordedEvent, event, projection};
use serde::{Deserialize, Serialize};

#[event]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderPlaced {}

#[event]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderShipped {}

#[derive(Debug, Default)]
pub struct OrderList {}

#[projection(name = "order_list")]
impl OrderList {
    async fn anything(&self, _: &RecordedEvent) {}
}

fn main() {}
