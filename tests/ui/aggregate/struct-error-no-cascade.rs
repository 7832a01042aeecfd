// One mistake in the `#[aggregate]` attribute of the struct: the impl block, which reads the
// struct's configuration, and the code that uses the aggregate add no error of their own.
use factum::{MemoryStore, Repository, aggregate, command, event};
use serde::{Deserialize, Serialize};

#[event]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderPlaced {}

#[command]
#[derive(Clone, Debug)]
pub struct PlaceOrderV1 {}

#[derive(Debug, thiserror::Error)]
#[error("refused")]
pub struct OrderError;

#[aggregate(category = "order", snapshot_every = "10")]
#[derive(Debug, Default)]
pub struct Order {}

#[aggregate]
impl Order {
    #[handle]
    fn place(&self, _: PlaceOrderV1) -> Result<OrderPlaced, OrderError> {
        Ok(OrderPlaced {})
    }

    #[apply]
    fn placed(&mut self, _: &OrderPlaced) {}
}

fn main() {
    let _repository = Repository::<Order, MemoryStore>::new(MemoryStore::new());
    let _command = OrderCommand::from(PlaceOrderV1 {});
}
