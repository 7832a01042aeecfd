use factum::event;
use serde::{Deserialize, Serialize};

#[event(name = "Ping", version = 2, previous = Pong, upcast_to = Pong)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ping {}

#[event(name = "Pong", version = 2, previous = Ping, upcast_to = Ping)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pong {}

impl From<Ping> for Pong {
    fn from(_: Ping) -> Self {
        Self {}
    }
}

impl From<Pong> for Ping {
    fn from(_: Pong) -> Self {
        Self {}
    }
}

fn main() {}
