use factum::{event, projection};
use serde::{Deserialize, Serialize};

#[event]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderPlaced {}

pub struct PgTransaction<'a>(&'a ());

#[derive(Debug, Default)]
pub struct OrderList {}

#[projection(name = "order_list", transactional = true)]
impl OrderList {
    async fn placed(&self, _: &PgTransaction<'_>, _: &OrderPlaced) {}
}

fn main() {}
