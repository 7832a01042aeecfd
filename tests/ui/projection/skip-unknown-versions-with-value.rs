use factum::{event, projection};
use serde::{Deserialize, Serialize};

#[event]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderPlaced {}

#[derive(Debug, Default)]
pub struct OrderCount {}

#[projection(name = "order_count", skip_unknown_versions = true)]
impl OrderCount {
    async fn placed(&self, _: &OrderPlaced) {}
}

fn main() {}
