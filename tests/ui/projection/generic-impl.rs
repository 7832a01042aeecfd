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

pub struct Rows<T>(T);

#[projection(name = "rows")]
impl<T> Rows<T> {
    async fn placed(&self, _: &OrderPlaced) {}
}

fn main() {}
