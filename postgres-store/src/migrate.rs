//! Versioned schema migrations.

use deadpool_postgres::Pool;

use crate::config::{PgConfig, RoleName, SchemaName};
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
    (5, "tenants", include_str!("../migrations/0005_tenants.sql")),
    (6, "keys", include_str!("../migrations/0006_keys.sql")),
    (
        8,
        "partitions",
        include_str!("../migrations/0008_partitions.sql"),
    ),
];

/// Applies the missing migrations in one transaction, holding a transaction-level advisory
/// lock so that concurrent callers wait for each other and nothing outlives the transaction,
/// then, for a multi-tenant store, applies the multi-tenant layout (`sql/tenancy.sql`), and
/// grants the application role, when one is configured, its privileges.
///
/// When every migration (and the layout of a multi-tenant store) is applied already and no
/// role is to be granted, it only reads the catalog: the application role can call it too.
pub(crate) async fn migrate(
    pool: &Pool,
    config: &PgConfig,
    statements: &Statements,
) -> Result<(), PgError> {
    let schema = &config.schema;
    if config.application_role.is_none()
        && up_to_date(pool, schema, statements, config.multi_tenant).await
    {
        return Ok(());
    }
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
    if config.multi_tenant {
        tx.batch_execute(&render(include_str!("../sql/tenancy.sql"), schema))
            .await
            .map_err(|source| PgError::Tenancy {
                schema: schema.to_string(),
                source,
            })?;
    }
    if let Some(role) = &config.application_role {
        tx.batch_execute(&grants(schema, role))
            .await
            .map_err(|source| PgError::Grant {
                role: role.to_string(),
                schema: schema.to_string(),
                source,
            })?;
    }
    tx.commit().await.map_err(backend)?;
    Ok(())
}

/// The grants of the application role `role` (`sql/grant.sql`).
fn grants(schema: &SchemaName, role: &RoleName) -> String {
    render(include_str!("../sql/grant.sql"), schema).replace("__ROLE__", &role.quoted())
}

/// Whether every migration this build knows is applied, and row-level security forced on the
/// events when `multi_tenant`, read without writing anything. Any failure (no schema, no
/// table, no privilege) is a no: the full path reports it.
async fn up_to_date(
    pool: &Pool,
    schema: &SchemaName,
    statements: &Statements,
    multi_tenant: bool,
) -> bool {
    let Ok(client) = pool.get().await else {
        return false;
    };
    let table = format!("{}.schema_migrations", schema.quoted());
    let exists = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
        .await
        .and_then(|row| row.try_get::<_, bool>(0));
    if !matches!(exists, Ok(true)) {
        return false;
    }
    let Ok(rows) = client.query(&statements.migrations_applied, &[]).await else {
        return false;
    };
    let applied: Vec<i32> = rows.iter().filter_map(|row| row.try_get(0).ok()).collect();
    if multi_tenant {
        let events = format!("{}.events", schema.quoted());
        let forced = client
            .query_one(
                "SELECT coalesce((SELECT relforcerowsecurity FROM pg_class \
                 WHERE oid = to_regclass($1)), false)",
                &[&events],
            )
            .await
            .and_then(|row| row.try_get::<_, bool>(0));
        if !matches!(forced, Ok(true)) {
            return false;
        }
    }
    applied.len() == MIGRATIONS.len()
        && MIGRATIONS
            .iter()
            .all(|(version, _, _)| applied.contains(version))
}
