// One mistake in the `#[aggregate]` impl block (a handler that takes its command by
// reference): the code below, which uses the enums and the `Aggregate` impl the macro
// generates, adds no error of its own.
use factum::{Aggregate, MemoryStore, Repository, aggregate, command, event};
use serde::{Deserialize, Serialize};

#[event]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderPlaced {}

#[command]
#[derive(Clone, Debug)]
pub struct PlaceOrderV1 {}

#[command]
#[derive(Clone, Debug)]
pub struct CancelOrderV1 {}

#[derive(Debug, thiserror::Error)]
#[error("refused")]
pub struct OrderError;

#[aggregate(category = "order")]
#[derive(Debug, Default)]
pub struct Order {}

#[aggregate]
impl Order {
    #[handle]
    fn place(&self, _: PlaceOrderV1) -> Result<OrderPlaced, OrderError> {
        Ok(OrderPlaced {})
    }

    #[handle]
    fn cancel(&self, _: &CancelOrderV1) -> Result<(), OrderError> {
        Ok(())
    }

    #[apply]
    fn placed(&mut self, _: &OrderPlaced) {}
}

fn is_aggregate<A: Aggregate<Error = OrderError>>() {}

fn uses(store: MemoryStore) {
    let _repository = Repository::<Order, MemoryStore>::new(store);
    let _event: OrderEvent = OrderPlaced {}.into();
    let _command = OrderCommand::from(PlaceOrderV1 {});
    if let OrderCommand::CancelOrderV1(_) = OrderCommand::from(CancelOrderV1 {}) {}
    let OrderEvent::OrderPlaced(_) = OrderEvent::from(OrderPlaced {});
    is_aggregate::<Order>();
}

fn main() {
    uses(MemoryStore::new());
}
