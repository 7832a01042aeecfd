//! Tenants in read models: the policy of the store's tables, applied to a table of yours.

use crate::config::SchemaName;
use crate::error::PgError;

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
