//! The order-fulfillment example: four aggregates, a process manager that reserves stock,
//! waits for payment and creates the shipment (or cancels and compensates), read models fed
//! by projections, a demo and an HTTP API, on the in-memory store or PostgreSQL.
//!
//! - [`domain`]: the aggregates `Order`, `Payment`, `Inventory` and `Shipment`.
//! - [`fulfillment`]: the `OrderFulfillment` process manager.
//! - [`read_model`]: the order list, customer statistics and daily sales, in memory.
//! - [`pg_read_model`]: the same read models in PostgreSQL tables.
//! - [`app`]: the [`App`] (one `factum::Application` on the in-memory store or on
//!   PostgreSQL), its use cases and idempotency keys.
//! - [`tenants`]: the application for several tenants of a multi-tenant store, one
//!   [`App`] per tenant.
//! - [`http`] and [`demo`]: the two ways in; [`service`] the HTTP service's limits, metrics
//!   and lag history, and [`admin`] the operator's page.

#![forbid(unsafe_code)]
#![warn(missing_docs, clippy::unwrap_used)]

pub mod admin;
pub mod app;
pub mod demo;
pub mod domain;
pub mod fulfillment;
pub mod http;
pub mod pg_read_model;
pub mod read_model;
pub mod service;
pub mod tenants;

pub use app::{
    App, AppError, AppOptions, BlockerInfo, HealthIssue, HealthReport, MemoryApp, NewOrder,
    Outcome, PersonalStore, PgApp, command_id_for, personal_schema, tenant_command_id_for,
};
pub use service::ServiceOptions;
pub use tenants::{MemoryTenants, PgTenants, Tenants};

/// The repository README's code, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
