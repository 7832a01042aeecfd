use factum::event;
use serde::{Deserialize, Serialize};

#[event]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CustomerRegistered {
    pub customer_id: String,
    #[personal(subject = customer_id)]
    pub name: String,
}

fn main() {}
