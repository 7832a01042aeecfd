use factum::{event, projection};
use serde::{Deserialize, Serialize};

#[event]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderPlaced {}

/// Stands for `tokio_postgres::Transaction`: the macro reads the type's name.
pub struct Transaction<'a>(&'a ());

#[derive(Debug, Default)]
pub struct OrderList {}

#[projection(name = "order_list", transactional)]
impl OrderList {
    async fn placed(&self, _: &Transaction<'_>, _: &OrderPlaced) {}
}

fn main() {}
