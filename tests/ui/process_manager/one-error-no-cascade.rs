// One mistake in a `#[process_manager]` impl block (a routed handler without `by`): the code
// below, which needs the `ProcessManager` impl the macro generates with its state and command
// types, adds no error of its own.
use factum::{ProcessManager, event, process_manager};
use serde::{Deserialize, Serialize};

#[event]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderPlaced {
    pub order_id: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum FulfillmentCommand {
    Ship { order_id: String },
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Fulfillment {}

#[derive(Debug)]
pub struct OrderFulfillment;

#[process_manager(name = "order_fulfillment")]
impl OrderFulfillment {
    #[start]
    fn placed(&self, _: &mut Fulfillment, _: &OrderPlaced) -> Vec<FulfillmentCommand> {
        Vec::new()
    }
}

fn register<P>(manager: P) -> P
where
    P: ProcessManager<State = Fulfillment, Command = FulfillmentCommand>,
{
    manager
}

fn main() {
    let manager = register(OrderFulfillment);
    let _name = manager.name();
}
