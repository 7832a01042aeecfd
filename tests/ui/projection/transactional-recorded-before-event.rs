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

pub struct Transaction<'a>(std::marker::PhantomData<&'a ()>);

#[projection(name = "order_list", transactional)]
impl OrderList {
    async fn placed(&self, _: &Transaction<'_>, _: &RecordedEvent, _: &OrderPlaced) {}
}

fn main() {}
