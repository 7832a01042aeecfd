//! Tenants in read models: the policy of the store's tables, applied to a table of yours.

use std::future::Future;

use deadpool_postgres::Object;
use factum::tenant::TenantId;

use crate::config::SchemaName;
use crate::error::PgError;

/// Runs `body`, a statement sent on its first poll, bound to `tenant`: `BEGIN`,
/// `set_config('factum.tenant', tenant, true)`, the statement and `COMMIT`, pipelined in
/// one round trip, so the binding is the statement's transaction's and ends with it (a
/// pooled connection never carries it to its next user). Without a tenant, `body` runs as
/// it is. The outer error is the binding's; `body`'s own is inside.
///
/// Whatever happens to `body`, the `COMMIT` is sent with it (a failed statement makes it a
/// rollback), so the connection goes back to the pool outside any transaction.
pub(crate) async fn bound<T>(
    client: &Object,
    tenant: Option<&TenantId>,
    body: impl Future<Output = T>,
) -> Result<T, tokio_postgres::Error> {
    let Some(tenant) = tenant else {
        return Ok(body.await);
    };
    // Prepared first: an unprepared statement would be sent only after its preparation's
    // reply, behind the `COMMIT`.
    let bind = client
        .prepare_cached(include_str!("../sql/bind_tenant.sql"))
        .await?;
    // `join4` polls in order: the four requests are queued on the connection in this order
    // before any response is awaited.
    let (begun, set, value, committed) = futures_util::future::join4(
        client.batch_execute("BEGIN"),
        client.execute(&bind, &[&tenant.as_str()]),
        body,
        client.batch_execute("COMMIT"),
    )
    .await;
    begun?;
    set?;
    committed?;
    Ok(value)
}

/// The SQL that gives the read-model table `table` of `schema` the tenant isolation of the
/// events (`docs/adr/14-tenants.md`): a `tenant` column whose default is the tenant bound to
/// the writing transaction (`current_setting('factum.tenant', true)`), and row-level
/// security, forced on the table's owner too, that lets a session read and write only rows
/// of the tenant bound to its transaction, and none without one.
///
/// Run it once, as the table's owner, on a new table (rows already there would need a
/// tenant: the `NOT NULL` column refuses them), and make the tenant part of the table's keys
/// (`PRIMARY KEY (tenant, …)`). Running it again changes nothing. A [`Transactional`]
/// projection run on a tenant's handle binds that tenant in each of its transactions, so
/// its writes land under it; other queries bind one with [`PgTransaction::bind_tenant`].
///
/// `table` follows the rules of a [`SchemaName`] (ASCII letters, digits and `_`), and is
/// quoted; anything else is [`PgError::InvalidTableName`].
///
/// ```
/// use factum_postgres::{SchemaName, tenant_policy};
/// let sql = tenant_policy(&SchemaName::new("factum")?, "order_summaries")?;
/// assert!(sql.contains("FORCE ROW LEVEL SECURITY"));
/// assert!(tenant_policy(&SchemaName::new("factum")?, "x; DROP TABLE y").is_err());
/// # Ok::<(), factum_postgres::PgError>(())
/// ```
///
/// [`Transactional`]: crate::Transactional
/// [`PgTransaction::bind_tenant`]: crate::PgTransaction::bind_tenant
pub fn tenant_policy(schema: &SchemaName, table: &str) -> Result<String, PgError> {
    let table = match SchemaName::new(table) {
        Ok(valid) => valid,
        Err(PgError::InvalidSchemaName { reason, .. }) => {
            return Err(PgError::InvalidTableName {
                name: table.to_owned(),
                reason,
            });
        }
        Err(other) => return Err(other),
    };
    let name = table.quoted();
    Ok(include_str!("../sql/read_model_tenancy.sql")
        .replace("__TABLE__", &format!("{}.{name}", schema.quoted()))
        .replace("__NAME__", &name))
}
