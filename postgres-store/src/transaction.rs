//! The transaction a transactional projection's handler gets: the store's schema first on its
//! `search_path`, and each distinct SQL text prepared once.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::{Mutex, MutexGuard, PoisonError};

use deadpool_postgres::ClientWrapper;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Error, Row, Statement};

use crate::config::SchemaName;
use crate::error::PgError;

/// A transaction in the store's schema, as [`PgProjection`](crate::PgProjection) handlers get
/// it from [`Transactional`](crate::Transactional).
///
/// - **Plain table names.** It begins with `SET LOCAL search_path TO "<schema>", public`:
///   tables and other objects named without a schema resolve to the store's schema first
///   (so `CREATE TABLE counts …` creates `"<schema>".counts`), then to `public`, where
///   extensions usually keep their functions and operators. `pg_catalog` is searched first, as
///   always. The setting ends with the transaction; the pooled connection keeps its own.
/// - **Prepared statements.** [`execute`](Self::execute), [`query`](Self::query),
///   [`query_one`](Self::query_one) and [`query_opt`](Self::query_opt) take SQL text, like
///   `tokio_postgres::Transaction`'s, and prepare each distinct text once per transaction: a
///   handler running the same statement for every event of a batch gets prepared-statement
///   speed without overriding [`handle_batch`](crate::PgProjection::handle_batch). The
///   statements are closed with the transaction, so SQL text built per call (values spliced
///   in) costs no more than it does with `tokio_postgres`, and never accumulates on the
///   connection; pass values as parameters all the same.
///
/// It dereferences to [`tokio_postgres::Transaction`] for everything else (`batch_execute`,
/// `prepare`, `query_raw`, `copy_in`, savepoints, and the methods above given a prepared
/// [`Statement`], through [`transaction`](Self::transaction)). Outside a projection,
/// [`begin`](Self::begin) opens one on a pooled connection, for queries of the same tables
/// with the same plain names:
///
/// ```no_run
/// # async fn demo(store: &factum_postgres::PgStore) -> Result<(), Box<dyn std::error::Error>> {
/// use factum_postgres::PgTransaction;
///
/// let mut client = store.pool().get().await?;
/// let tx = PgTransaction::begin(&mut client, &store.config().schema).await?;
/// let rows = tx.query("SELECT stream, events FROM counts ORDER BY stream", &[]).await?;
/// tx.commit().await?;
/// # let _ = rows;
/// # Ok(())
/// # }
/// ```
pub struct PgTransaction<'a> {
    tx: deadpool_postgres::Transaction<'a>,
    statements: Mutex<HashMap<String, Statement>>,
}

impl std::fmt::Debug for PgTransaction<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTransaction")
            .field("prepared", &self.statements().len())
            .finish_non_exhaustive()
    }
}

/// `SET LOCAL search_path` to `schema`, then `public`.
pub(crate) fn set_search_path(schema: &SchemaName) -> String {
    format!("SET LOCAL search_path TO {}, public", schema.quoted())
}

impl<'a> PgTransaction<'a> {
    /// Begins a transaction on `client` whose `search_path` is `schema`, then `public`.
    pub async fn begin(
        client: &'a mut ClientWrapper,
        schema: &SchemaName,
    ) -> Result<Self, PgError> {
        let failed = |source| PgError::Begin {
            schema: schema.as_str().to_owned(),
            source,
        };
        let tx = client.transaction().await.map_err(failed)?;
        tx.batch_execute(&set_search_path(schema))
            .await
            .map_err(failed)?;
        Ok(Self {
            tx,
            statements: Mutex::new(HashMap::new()),
        })
    }

    /// Binds `tenant` to this transaction (`set_config('factum.tenant', tenant, true)`): the
    /// row-level security of a multi-tenant store's tables, and of read-model tables given
    /// [`tenant_policy`](crate::tenant_policy), then lets it read and write `tenant`'s rows
    /// only. The binding ends with the transaction.
    pub async fn bind_tenant(&self, tenant: &factum::tenant::TenantId) -> Result<(), Error> {
        self.tx
            .execute(include_str!("../sql/bind_tenant.sql"), &[&tenant.as_str()])
            .await
            .map(drop)
    }

    /// The underlying `tokio_postgres` transaction, whose methods also take a prepared
    /// [`Statement`].
    pub fn transaction(&self) -> &tokio_postgres::Transaction<'a> {
        &self.tx
    }

    /// The pool's transaction, whose `prepare_cached` keeps statements for the connection's
    /// lifetime (for the runtime's own fully qualified statements).
    pub(crate) fn pooled(&self) -> &deadpool_postgres::Transaction<'a> {
        &self.tx
    }

    fn statements(&self) -> MutexGuard<'_, HashMap<String, Statement>> {
        // The map stays consistent whatever panicked while it was locked.
        self.statements
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// `sql` prepared in this transaction: the first call for a text prepares it, later
    /// calls with the same text return the same statement.
    pub async fn prepare_cached(&self, sql: &str) -> Result<Statement, Error> {
        let cached = self.statements().get(sql).cloned();
        if let Some(statement) = cached {
            return Ok(statement);
        }
        let statement = self.tx.prepare(sql).await?;
        self.statements()
            .entry(sql.to_owned())
            .or_insert(statement.clone());
        Ok(statement)
    }

    /// Runs `sql` (prepared once per transaction) and returns the number of rows it changed.
    pub async fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, Error> {
        let statement = self.prepare_cached(sql).await?;
        self.tx.execute(&statement, params).await
    }

    /// Runs `sql` (prepared once per transaction) and returns its rows.
    pub async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, Error> {
        let statement = self.prepare_cached(sql).await?;
        self.tx.query(&statement, params).await
    }

    /// Runs `sql` (prepared once per transaction) and returns its one row; an error when it
    /// returns none or several.
    pub async fn query_one(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Row, Error> {
        let statement = self.prepare_cached(sql).await?;
        self.tx.query_one(&statement, params).await
    }

    /// Runs `sql` (prepared once per transaction) and returns its row, if any; an error when
    /// it returns several.
    pub async fn query_opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, Error> {
        let statement = self.prepare_cached(sql).await?;
        self.tx.query_opt(&statement, params).await
    }

    /// Commits the transaction.
    pub async fn commit(self) -> Result<(), Error> {
        self.tx.commit().await
    }

    /// Rolls the transaction back (as dropping it does, without waiting).
    pub async fn rollback(self) -> Result<(), Error> {
        self.tx.rollback().await
    }
}

impl<'a> Deref for PgTransaction<'a> {
    type Target = tokio_postgres::Transaction<'a>;

    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

#[cfg(test)]
mod tests;
