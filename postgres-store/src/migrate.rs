//! Versioned schema migrations.

use deadpool_postgres::Pool;

use crate::config::SchemaName;
use crate::error::{PgError, backend};
use crate::sql::{MIGRATE_LOCK_CLASS, Statements, render};

/// The store's migrations, in order: version, name, SQL (with a `__SCHEMA__` placeholder).
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "events", include_str!("../migrations/0001_events.sql")),
    (2, "append", include_str!("../migrations/0002_append.sql")),
    (
        3,
        "coordination",
        include_str!("../migrations/0003_coordination.sql"),
    ),
    (
        4,
        "command_log",
        include_str!("../migrations/0004_command_log.sql"),
    ),
];

/// Applies the missing migrations in one transaction, holding a transaction-level advisory
/// lock so that concurrent callers wait for each other and nothing outlives the transaction.
pub(crate) async fn migrate(
    pool: &Pool,
    schema: &SchemaName,
    statements: &Statements,
) -> Result<(), PgError> {
    let mut client = pool.get().await.map_err(backend)?;
    let tx = client.transaction().await.map_err(backend)?;
    tx.execute(
        include_str!("../sql/migrate_lock.sql"),
        &[&MIGRATE_LOCK_CLASS, &schema.lock_key()],
    )
    .await
    .map_err(backend)?;
    tx.batch_execute(&statements.migrations_table)
        .await
        .map_err(backend)?;
    let applied = tx
        .query(&statements.migrations_applied, &[])
        .await
        .map_err(backend)?
        .iter()
        .map(|row| row.try_get::<_, i32>(0))
        .collect::<Result<Vec<i32>, _>>()
        .map_err(backend)?;
    if let Some(&unknown) = applied
        .iter()
        .find(|v| !MIGRATIONS.iter().any(|(known, _, _)| known == *v))
    {
        return Err(PgError::UnknownMigration {
            schema: schema.to_string(),
            version: unknown,
        });
    }
    for &(version, name, sql) in MIGRATIONS {
        if applied.contains(&version) {
            continue;
        }
        let failed = |source| PgError::Migration {
            version,
            name,
            source,
        };
        tx.batch_execute(&render(sql, schema))
            .await
            .map_err(failed)?;
        tx.execute(&statements.migration_record, &[&version, &name])
            .await
            .map_err(failed)?;
    }
    tx.commit().await.map_err(backend)?;
    Ok(())
}
