use factum::{event, process_manager};
use serde::{Deserialize, Serialize};

#[event]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderPlaced {
    pub order_id: String,
    pub cents: u64,
}

#[event]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderShipped {
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
    #[start(by = order_id)]
    fn placed(&self, _: &mut Fulfillment, _: &OrderPlaced) -> Vec<FulfillmentCommand> {
        Vec::new()
    }

    #[on_rejected]
    fn rejected(&self, _: &mut Fulfillment, _: &FulfillmentCommand, _: &factum::Rejection) {}

    #[on_rejected]
    fn rejected_again(&self, _: &mut Fulfillment, _: &FulfillmentCommand, _: &factum::Rejection) {}
}

fn main() {}
