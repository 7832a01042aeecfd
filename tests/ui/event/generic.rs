use factum::event;
use serde::{Deserialize, Serialize};

#[event]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderPlaced<T> {
    pub value: T,
}

fn main() {}
