//! Least privilege: what the store's role may do to the events.

use crate::error::{PgError, backend};
use crate::store::PgStore;

impl PgStore {
    /// Checks that the store's role can only append and read events: that it is not a
    /// superuser, does not own the events table (nor is a member of its owner, which could
    /// disable or drop the append-only triggers), and holds no `UPDATE`, `DELETE` or
    /// `TRUNCATE` on it; for a multi-tenant store
    /// ([`PgConfig::multi_tenant`](crate::PgConfig::multi_tenant)), also that it does not
    /// bypass row-level security (`BYPASSRLS`). Fails with [`PgError::Privileged`] naming
    /// the role and what it can do, or with [`PgError::Store`] when the schema is not
    /// migrated or the database fails.
    ///
    /// Call it at start-up of an application that runs as the role granted by
    /// [`PgConfig::application_role`](crate::PgConfig::application_role). The store does not
    /// call it by itself: the process that migrates connects as the owner on purpose (see `docs/adr/13-least-privilege.md`).
    pub async fn check_least_privilege(&self) -> Result<(), PgError> {
        let schema = &self.config().schema;
        let table = format!("{}.events", schema.quoted());
        let client = self.pool().get().await.map_err(backend)?;
        let row = client
            .query_opt(include_str!("../sql/privileges.sql"), &[&table])
            .await
            .map_err(backend)?;
        let Some(row) = row else {
            return Err(PgError::Store(factum::StoreError::Backend(
                format!("schema `{schema}` has no events table: run the migrations first").into(),
            )));
        };
        let role: String = row.try_get("role").map_err(backend)?;
        let reason = if row.try_get::<_, bool>("superuser").map_err(backend)? {
            Some("is a superuser")
        } else if row.try_get::<_, bool>("owner").map_err(backend)? {
            Some(
                "owns the events table or is a member of its owner, so it can disable or drop the append-only triggers",
            )
        } else if row.try_get::<_, bool>("modify").map_err(backend)? {
            Some("holds UPDATE, DELETE or TRUNCATE on the events table")
        } else if self.config().multi_tenant
            && row.try_get::<_, bool>("bypassrls").map_err(backend)?
        {
            Some("bypasses row-level security (BYPASSRLS), which keeps tenants apart")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(PgError::Privileged {
                role,
                schema: schema.to_string(),
                reason,
            }),
            None => Ok(()),
        }
    }
}
