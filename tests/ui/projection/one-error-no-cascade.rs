// One mistake in a `#[projection]` impl block (a handler that is not async): the code
// below, which needs the `Projection` impl the macro generates, adds no error of its own.
use factum::{Projection, event, projection};
use serde::{Deserialize, Serialize};

#[event]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderPlaced {}

#[derive(Debug, Default)]
pub struct OrderList {}

#[projection(name = "order_list")]
impl OrderList {
    fn placed(&self, _: &OrderPlaced) {}
}

fn register<P: Projection>(projection: P) -> P {
    projection
}

fn main() {
    let list = register(OrderList::default());
    let _name = list.name();
}
