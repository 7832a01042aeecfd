use factum::event;
use serde::{Deserialize, Serialize};

#[event(version = 2, upcast_json(from = 1, with = up), upcast_json(from = 1, with = up))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderPlaced {}

fn up(v: serde_json::Value) -> Result<serde_json::Value, String> {
    Ok(v)
}

fn main() {}
