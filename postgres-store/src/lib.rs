//! PostgreSQL event store for `factum`, on `tokio-postgres` and `deadpool-postgres`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use factum::{EventStore};
//! use factum::store::{ReadAll};
//! use factum_postgres::{PgConfig, PgStore};
//!
//! let store = PgStore::connect_with(
//!     "postgresql://app@localhost/app",
//!     PgConfig::default().schema("events")?,
//! )
//! .await?;
//! store.migrate().await?;
//! let batch = store.read_all(&ReadAll::after(0)).await?;
//! # let _ = batch;
//! # Ok(())
//! # }
//! ```
//!
//! - Every connection honours `sslmode` (`disable`, `prefer`, `require`, `verify-ca`,
//!   `verify-full`) and `sslrootcert` from the URL, through rustls; see the [`tls`] module and
//!   [`PgStore::connect_with`] for what each mode checks and the typed errors.
//! - Appends are one round trip: a PL/pgSQL function checks the expected version, reserves
//!   global positions and inserts every event, all-or-nothing.
//! - Loading an aggregate is one statement: the latest snapshot and the events after it, read
//!   by an ordered index scan of the stream's versions in every plan
//!   (`docs/adr/09-lean-statements.md`).
//! - A reader following global positions never skips or reorders a committed event: reads
//!   are bounded by the oldest running transaction that may write to the store's database
//!   (`docs/adr/02-postgres-ordering.md`). One that stays open is reported by
//!   [`EventStore::head_status`](factum::EventStore::head_status), naming its session.
//! - The events table is append-only at the database level. Migrated by an owner role with
//!   [`PgConfig::application_role`] set, it leaves the application a role that can append and
//!   read events but neither change them nor switch the triggers off
//!   ([`PgStore::check_least_privilege`] checks it at start-up).
//! - [`PgStore::standby`] reads from a hot standby (loads, stream reads, the global order with
//!   the same bound, subscriptions) and refuses writes, so commands decide on the primary; a
//!   stale standby shows in [`EventStore::head_status`](factum::EventStore::head_status) and
//!   [`PgStore::standby_lag`]. A store built from a multi-host URL with
//!   `target_session_attrs=read-write` follows a promotion (`docs/adr/18-standby-reads.md`).
//! - [`PgStore::watch_head`] wakes subscribers through `LISTEN`/`NOTIFY` on a dedicated
//!   connection, with polling as the guarantee.
//! - [`Transactional`] runs a [`PgProjection`] whose read model lives in the same database,
//!   its writes and its checkpoint in one transaction. Handlers get a [`PgTransaction`]: its
//!   `search_path` is the store's schema, so their SQL names tables plainly, and it prepares
//!   each SQL text once per transaction.
//! - [`PgConfig::multi_tenant`] keeps tenants apart by row-level security, bound per
//!   transaction to the tenant of a handle ([`EventStore::tenant`](factum::EventStore::tenant));
//!   [`tenant_policy`] applies the same policy to a read-model table
//!   (`docs/adr/14-tenants.md`).
//! - [`PgKeyStore`] keeps the data keys of crypto-shredding (`factum::personal`) in the
//!   table `data_keys`, wrapped by a master key; forgetting a subject leaves a tombstone.
//! - [`PgAdmin`] is the operator's view: streams, each projection's checkpoints, lease
//!   holders and parked events, open transactions and replication; it rewinds a projection
//!   and skips parked events (the `factum` command-line tool uses it).

#![forbid(unsafe_code)]
#![warn(missing_docs, clippy::unwrap_used)]

mod admin;
mod config;
mod coordination;
mod error;
mod keys;
mod migrate;
mod notify;
mod roles;
mod rows;
mod sql;
mod store;
mod tenancy;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;
mod transaction;
mod transactional;

pub use admin::{
    AdminError, AppliedMigration, Backlog, InvalidTableName, PartitionRecord, PgAdmin, Replication,
    Rewound, Session, Standby, StreamSummary,
};
pub use config::{MAX_SCHEMA_NAME_LEN, PgConfig, RoleName, SchemaName};
pub use coordination::PgCoordination;
pub use error::PgError;
pub use keys::PgKeyStore;
pub use migrate::MIGRATIONS;
pub use store::{MAX_EVENTS_PER_APPEND, PgStore, StandbyLag};
pub use tenancy::tenant_policy;
pub use tls::{PgConnectOptions, RootCert, SslMode, TlsFailure};
pub use transaction::PgTransaction;
pub use transactional::{PgProjection, Transactional};

/// The PostgreSQL client this store is built on: its types appear in this crate's API
/// ([`PgTransaction`] dereferences to a [`tokio_postgres::Transaction`]), so use this re-export
/// to stay on the same version.
pub use tokio_postgres;

/// The connection pool this store is built on ([`PgStore::pool`]).
pub use deadpool_postgres;
