use factum::event;
use factum::personal::Personal;
use serde::{Deserialize, Serialize};

/// A value with no serde implementations.
#[derive(Clone, Debug, PartialEq)]
pub struct Address(String);

#[event]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CustomerRegistered {
    pub customer_id: String,
    #[personal(subject = customer_id)]
    #[serde(skip, default = "erased")]
    pub address: Personal<Address>,
}

fn erased() -> Personal<Address> {
    Personal::Erased
}

fn main() {}
