use factum::event;
use factum::personal::Personal;
use serde::{Deserialize, Serialize};

#[event]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CustomerRegistered {
    pub customer_id: String,
    #[personal(subject = customer)]
    pub name: Personal<String>,
}

fn main() {}
