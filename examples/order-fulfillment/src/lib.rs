//! The order-fulfillment example: four aggregates, a process manager that reserves stock,
//! waits for payment and creates the shipment (or cancels and compensates), read models fed
//! by projections, a demo and an HTTP API, on the in-memory store or PostgreSQL.

pub mod app;
pub mod domain;
pub mod fulfillment;
pub mod read_model;

pub use app::{App, AppError, AppOptions, NewOrder, Outcome, command_id_for};
pub mod demo;
pub mod http;
