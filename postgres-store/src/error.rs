//! Errors of setting up the store. Store operations report [`factum::StoreError`].

use factum::StoreError;

use crate::tls::{RootCertProblem, TlsFailure};

/// What connecting to or migrating the store reports.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgError {
    /// The schema name is not a valid identifier.
    #[error("invalid schema name `{name}`: {reason}")]
    InvalidSchemaName {
        /// The name given.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// The connection URL cannot be parsed.
    #[error("invalid connection URL: {0}")]
    InvalidUrl(#[source] tokio_postgres::Error),
    /// A connection option has a value the store does not accept.
    #[error("invalid connection option `{key}={value}`: {reason}")]
    InvalidOption {
        /// The option.
        key: &'static str,
        /// The value given.
        value: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// The CA certificates `sslrootcert` names cannot be used.
    #[error("cannot use sslrootcert `{path}`: {problem}")]
    RootCert {
        /// The file, or `system` for the platform's roots.
        path: String,
        /// What is wrong with it.
        problem: RootCertProblem,
    },
    /// TLS with a server failed: it does not offer TLS, or its certificate is refused.
    #[error("TLS connection to `{host}` failed: {cause}")]
    Tls {
        /// The host name the certificate was checked against (all the hosts, comma
        /// separated, when the server refused TLS).
        host: String,
        /// Why.
        cause: TlsFailure,
    },
    /// The first connection failed for a reason other than TLS: unreachable server,
    /// refused by `pg_hba.conf`, wrong credentials, ...
    #[error("cannot connect: {reason}")]
    Connect {
        /// The cause; the server's message when it refused the connection.
        reason: String,
        /// The error reported.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A write on a handle that reads from a standby ([`PgStore::standby`](crate::PgStore::standby)):
    /// commands and snapshots go through the primary's handle.
    #[error(
        "{operation} on a standby handle: a standby handle only reads; write through the \
         primary's store"
    )]
    StandbyReadOnly {
        /// What was refused, such as `an append`.
        operation: &'static str,
    },
    /// The pool cannot be built.
    #[error("cannot build the connection pool: {0}")]
    Pool(#[from] deadpool_postgres::BuildError),
    /// A migration failed.
    #[error("migration {version} ({name}) failed: {source}")]
    Migration {
        /// The migration's version.
        version: i32,
        /// The migration's name.
        name: &'static str,
        /// What the database reported.
        source: tokio_postgres::Error,
    },
    /// The database reports a migration this build does not know: a newer version of the
    /// store migrated it.
    #[error("schema `{schema}` has migration {version}, newer than this build knows")]
    UnknownMigration {
        /// The schema.
        schema: String,
        /// The unknown version.
        version: i32,
    },
    /// A transaction in the store's schema cannot begin
    /// ([`PgTransaction::begin`](crate::PgTransaction::begin)).
    #[error("cannot begin a transaction in schema `{schema}`: {source}")]
    Begin {
        /// The schema.
        schema: String,
        /// What the database reported.
        source: tokio_postgres::Error,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The role name is not a valid identifier.
    #[error("invalid role name `{name}`: {reason}")]
    InvalidRoleName {
        /// The name given.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// Granting the application role its privileges failed (for example: no such role).
    #[error(
        "cannot grant role `{role}` its privileges on schema `{schema}`: {}",
        db_message(source)
    )]
    Grant {
        /// The application role.
        role: String,
        /// The schema.
        schema: String,
        /// What the database reported.
        source: tokio_postgres::Error,
    },
    /// The store's role can do more to the events than append and read them
    /// ([`PgStore::check_least_privilege`](crate::PgStore::check_least_privilege)).
    #[error(
        "role `{role}` {reason} in schema `{schema}`: run the application as a role that can only append and read events (PgConfig::application_role)"
    )]
    Privileged {
        /// The role the store connects as.
        role: String,
        /// The schema.
        schema: String,
        /// What it can do.
        reason: &'static str,
    },
    /// A read-model table name refused by [`tenant_policy`](crate::tenant_policy).
    #[error("invalid table name `{name}`: {reason}")]
    InvalidTableName {
        /// The name given.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// The multi-tenant layout (`PgConfig::multi_tenant`) could not be applied: for example,
    /// the schema holds events, snapshots or command outcomes without a tenant, stored by a
    /// single-tenant store.
    #[error("cannot make schema `{schema}` multi-tenant: {}", db_message(source))]
    Tenancy {
        /// The schema.
        schema: String,
        /// What the database reported.
        source: tokio_postgres::Error,
    },
    /// A number of partitions that cannot split streams: there is no partition of 0.
    #[error("invalid number of partitions {count}: at least 1")]
    InvalidPartitionCount {
        /// The number given.
        count: u32,
    },
}

/// Wraps a backend error.
pub(crate) fn backend<E>(error: E) -> StoreError
where
    E: std::error::Error + Send + Sync + 'static,
{
    StoreError::Backend(Box::new(error))
}

/// The server's message of a database error, or the client's description of another error.
fn db_message(error: &tokio_postgres::Error) -> String {
    error
        .as_db_error()
        .map_or_else(|| error.to_string(), |db| db.message().to_owned())
}
