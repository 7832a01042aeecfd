//! Store configuration and schema names.

use std::fmt;
use std::time::Duration;

use crate::error::PgError;

/// Longest schema name PostgreSQL keeps, in bytes.
pub const MAX_SCHEMA_NAME_LEN: usize = 63;

/// A validated schema name: 1 to 63 bytes of ASCII letters, digits and `_`, not starting
/// with a digit nor with `pg_`. Always quoted in SQL, so its case is kept.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SchemaName(String);

impl SchemaName {
    /// Validates `name`.
    pub fn new(name: &str) -> Result<Self, PgError> {
        let invalid = |reason: &'static str| PgError::InvalidSchemaName {
            name: name.to_owned(),
            reason,
        };
        if name.is_empty() {
            return Err(invalid("it is empty"));
        }
        if name.len() > MAX_SCHEMA_NAME_LEN {
            return Err(invalid("it is longer than 63 bytes"));
        }
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(invalid("only ASCII letters, digits and `_` are allowed"));
        }
        if name.as_bytes()[0].is_ascii_digit() {
            return Err(invalid("it starts with a digit"));
        }
        if name.to_ascii_lowercase().starts_with("pg_") {
            return Err(invalid("names starting with `pg_` are reserved"));
        }
        Ok(Self(name.to_owned()))
    }

    /// The name as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name quoted for SQL: `"name"`.
    pub fn quoted(&self) -> String {
        // Validation leaves no `"` to escape.
        format!("\"{}\"", self.0)
    }

    /// A stable 32-bit key derived from the name (FNV-1a), for advisory locks.
    pub(crate) fn lock_key(&self) -> i32 {
        i32::from_ne_bytes(fnv1a32(self.0.as_bytes()).to_ne_bytes())
    }

    /// The `NOTIFY` channel of this schema (an identifier shorter than 63 bytes).
    pub(crate) fn channel(&self) -> String {
        format!("factum_{:08x}", fnv1a32(self.0.as_bytes()))
    }
}

fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |hash, &b| {
        (hash ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

impl fmt::Display for SchemaName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Default for SchemaName {
    fn default() -> Self {
        Self("factum".to_owned())
    }
}

/// A validated role name, for [`PgConfig::application_role`]: the same rules as a
/// [`SchemaName`] (1 to 63 bytes of ASCII letters, digits and `_`, not starting with a digit
/// nor with `pg_`). Always quoted in SQL, so its case is kept.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RoleName(String);

impl RoleName {
    /// Validates `name`.
    pub fn new(name: &str) -> Result<Self, PgError> {
        match SchemaName::new(name) {
            Ok(valid) => Ok(Self(valid.0)),
            Err(PgError::InvalidSchemaName { reason, .. }) => Err(PgError::InvalidRoleName {
                name: name.to_owned(),
                reason,
            }),
            Err(other) => Err(other),
        }
    }

    /// The name as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name quoted for SQL: `"name"`.
    pub fn quoted(&self) -> String {
        // Validation leaves no `"` to escape.
        format!("\"{}\"", self.0)
    }
}

impl fmt::Display for RoleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How [`PgStore`](crate::PgStore) connects and where it keeps its tables.
///
/// ```
/// use factum_postgres::PgConfig;
/// let config = PgConfig::default().schema("billing_events")?.pool_size(32);
/// assert_eq!(config.schema.as_str(), "billing_events");
/// assert!(PgConfig::default().schema("no-dashes").is_err());
/// # Ok::<(), factum_postgres::PgError>(())
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PgConfig {
    /// The schema holding the store's tables (default `factum`).
    pub schema: SchemaName,
    /// Most pooled connections (default 16).
    pub pool_size: usize,
    /// How often the head watcher polls, whatever notifications say (default 1 s).
    pub poll_interval: Duration,
    /// The shortest time between two `NOTIFY`s this store sends (default 5 ms): appends in
    /// between are announced together, which keeps notifications cheap under load.
    pub notify_interval: Duration,
    /// How long `read_all` and `head_position` wait, at most, for appends still committing
    /// when they started (default 250 ms); see [`PgStore`](crate::PgStore). Zero: never wait.
    pub settle_timeout: Duration,
    /// The role the application runs as, when it is not the one that migrates (default
    /// none): [`PgStore::migrate`](crate::PgStore::migrate) grants it what the store and
    /// the runtime need at run time (append and read events; read and write snapshots, the
    /// command log, checkpoints, leases, members, dead letters and process instances) and
    /// nothing more: it cannot update, delete or truncate events, nor drop or disable the
    /// append-only triggers. See "Roles" in the book's PostgreSQL chapter.
    pub application_role: Option<RoleName>,
    /// Whether the store is multi-tenant (default false). When set,
    /// [`PgStore::migrate`](crate::PgStore::migrate) makes the tenant part of the keys of
    /// events and snapshots and forces row-level security on them, the command log, dead
    /// letters and process instances, and the store serves calls through tenant handles
    /// ([`EventStore::tenant`](factum::EventStore::tenant)). See "Tenants" in the book's
    /// PostgreSQL chapter and `docs/adr/14-tenants.md`.
    pub multi_tenant: bool,
}

impl Default for PgConfig {
    fn default() -> Self {
        Self {
            schema: SchemaName::default(),
            pool_size: 16,
            poll_interval: Duration::from_secs(1),
            settle_timeout: Duration::from_millis(250),
            notify_interval: Duration::from_millis(5),
            application_role: None,
            multi_tenant: false,
        }
    }
}

impl PgConfig {
    /// Sets the schema, validating the name.
    pub fn schema(mut self, name: &str) -> Result<Self, PgError> {
        self.schema = SchemaName::new(name)?;
        Ok(self)
    }

    /// Sets the pool size (at least 1).
    #[must_use]
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size.max(1);
        self
    }

    /// Sets how long reads wait for appends still committing when they started.
    #[must_use]
    pub fn settle_timeout(mut self, timeout: Duration) -> Self {
        self.settle_timeout = timeout;
        self
    }

    /// Sets the shortest time between two `NOTIFY`s.
    #[must_use]
    pub fn notify_interval(mut self, interval: Duration) -> Self {
        self.notify_interval = interval;
        self
    }

    /// Sets the head watcher's polling interval.
    #[must_use]
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Sets the role the application runs as, validating the name: migrations run with this
    /// configuration grant it what it needs at run time, and nothing more
    /// ([`PgConfig::application_role`]).
    ///
    /// ```
    /// use factum_postgres::{PgConfig, PgError};
    /// let config = PgConfig::default().application_role("factum_app")?;
    /// assert_eq!(config.application_role.unwrap().as_str(), "factum_app");
    /// assert!(matches!(
    ///     PgConfig::default().application_role("app\"; DROP"),
    ///     Err(PgError::InvalidRoleName { .. })
    /// ));
    /// # Ok::<(), PgError>(())
    /// ```
    pub fn application_role(mut self, role: &str) -> Result<Self, PgError> {
        self.application_role = Some(RoleName::new(role)?);
        Ok(self)
    }

    /// Sets whether the store is multi-tenant ([`PgConfig::multi_tenant`]).
    #[must_use]
    pub fn multi_tenant(mut self, multi_tenant: bool) -> Self {
        self.multi_tenant = multi_tenant;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_validated() {
        for good in ["factum", "Events_2", "_x", &"a".repeat(63)] {
            assert_eq!(SchemaName::new(good).unwrap().as_str(), good);
        }
        for bad in [
            "",
            "1abc",
            "a-b",
            "a b",
            "a\"b",
            "x;drop",
            "pg_catalog",
            "PG_x",
            "é",
            &"a".repeat(64),
        ] {
            let err = SchemaName::new(bad).unwrap_err();
            assert!(matches!(err, PgError::InvalidSchemaName { .. }), "{bad}");
        }
        assert_eq!(SchemaName::new("Ab").unwrap().quoted(), "\"Ab\"");
    }

    #[test]
    fn role_names_are_validated_like_schema_names() {
        assert_eq!(
            RoleName::new("factum_App").unwrap().quoted(),
            "\"factum_App\""
        );
        for bad in [
            "",
            "a\"; DROP ROLE x; --",
            "1app",
            "pg_monitor",
            "app-role",
            "ü",
        ] {
            match RoleName::new(bad) {
                Err(PgError::InvalidRoleName { name, .. }) => assert_eq!(name, bad),
                other => panic!("{bad:?}: expected InvalidRoleName, got {other:?}"),
            }
        }
        let config = PgConfig::default().application_role("app").unwrap();
        assert_eq!(config.application_role, Some(RoleName::new("app").unwrap()));
        assert!(PgConfig::default().application_role.is_none());
    }

    #[test]
    fn channel_fits_an_identifier() {
        let name = SchemaName::new(&"z".repeat(63)).unwrap();
        assert!(name.channel().len() < 63);
        assert_ne!(
            SchemaName::new("a").unwrap().channel(),
            SchemaName::new("b").unwrap().channel()
        );
    }
}
