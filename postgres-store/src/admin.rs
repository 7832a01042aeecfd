//! What an operator reads and changes besides events: the applied migrations, the streams,
//! each projection's partitions (checkpoint, lease holder, parked events), the sessions
//! holding transactions open and the replication state; rewinding a projection and skipping
//! parked events. The `factum` command-line tool is built on it.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::{Object, Pool};
use factum::{StoreError, StreamId};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::PgStore;
use crate::config::SchemaName;
use crate::error::backend;
use crate::sql::render;

/// The operator's view of a [`PgStore`]'s schema. Cloning shares the pool.
///
/// It reads the tables directly, bypassing row-level security only as far as the store's role
/// does: on a multi-tenant store it sees what its role sees.
#[derive(Clone, Debug)]
pub struct PgAdmin {
    pool: Pool,
    schema: SchemaName,
    sql: Arc<Sql>,
    holder: String,
}

#[derive(Debug)]
struct Sql {
    migrations: String,
    streams: String,
    partitions: String,
    backlog: String,
    held_leases: String,
    take_leases: String,
    fence_checkpoints: String,
    still_held: String,
    release: String,
    rewind_checkpoints: String,
    clear_parked: String,
    skip_partitions: String,
    skip: String,
    replay_streams: String,
}

/// A migration recorded in the schema.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AppliedMigration {
    /// Its version.
    pub version: i32,
    /// Its name.
    pub name: String,
    /// When it was applied.
    pub applied_at: DateTime<Utc>,
}

/// One stream, as [`PgAdmin::streams`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamSummary {
    /// The stream.
    pub stream_id: String,
    /// Its version (the version of its last event).
    pub version: u64,
    /// The global position of its last event.
    pub position: u64,
    /// When its last event was recorded.
    pub recorded_at: DateTime<Utc>,
}

/// One partition of a projection or process manager, from the coordination tables.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct PartitionRecord {
    /// The projection or process manager.
    pub name: String,
    /// The partition.
    pub partition: u32,
    /// Its saved checkpoint (0 when none was saved).
    pub checkpoint: u64,
    /// How long ago the checkpoint was last saved; `None` when there is none.
    pub since_saved: Option<Duration>,
    /// The worker holding a live lease on it, if any.
    pub holder: Option<String>,
    /// How long the holder's lease has left.
    pub lease_left: Option<Duration>,
    /// How many of its events are parked.
    pub parked: u64,
}

/// The committed events after a checkpoint.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct Backlog {
    /// How many (of every stream and type, counted up to the limit given).
    pub events: u64,
    /// How long ago the first of them was recorded; `None` when there is none.
    pub oldest: Option<Duration>,
}

/// A session of the store's database inside a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Session {
    /// Its server process.
    pub pid: u32,
    /// Its application name (empty when it set none).
    pub application_name: String,
    /// Its role, when visible.
    pub user: Option<String>,
    /// Its client's address (`None` for a Unix socket, or when not visible).
    pub client_addr: Option<String>,
    /// What it is doing, such as `idle in transaction`; `None` when not visible.
    pub state: Option<String>,
    /// How long its transaction has been open.
    pub transaction_age: Option<Duration>,
    /// Whether its transaction holds a transaction id (it has written, or may write).
    pub writes: bool,
    /// Its last or current statement, when visible.
    pub query: Option<String>,
}

/// The replication state of the server.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Replication {
    /// Whether this server is a standby.
    pub standby: bool,
    /// On a standby: how long ago the last replayed transaction committed on the primary.
    pub replay_lag: Option<Duration>,
    /// On a primary: the standbys streaming from it.
    pub standbys: Vec<Standby>,
}

/// A standby streaming from this server (`pg_stat_replication`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Standby {
    /// Its application name.
    pub application_name: String,
    /// Its address.
    pub client_addr: Option<String>,
    /// Its state (`streaming`, `catchup`, ...), when visible.
    pub state: Option<String>,
    /// `sync`, `async`, ..., when visible.
    pub sync_state: Option<String>,
    /// How long its replay lags behind this server's commits, when known.
    pub replay_lag: Option<Duration>,
}

/// What [`PgAdmin::rewind`] changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rewound {
    /// Checkpoints set to 0.
    pub checkpoints: u64,
    /// Leases taken from their holders.
    pub leases: u64,
    /// Parked events removed.
    pub parked: u64,
}

/// A table name given to [`PgAdmin::rewind`] that is not `name` or `schema.name` of plain
/// identifiers.
#[derive(Debug, thiserror::Error)]
#[error("invalid table name `{0}`: expected `table` or `schema.table` (letters, digits, `_`)")]
pub struct InvalidTableName(pub String);

/// A table name, quoted: `table` (in the store's schema) or `schema.table`.
fn table_name(schema: &SchemaName, name: &str) -> Result<String, InvalidTableName> {
    let parts: Vec<&str> = name.split('.').collect();
    let valid = |part: &&str| {
        !part.is_empty()
            && part.len() <= 63
            && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !part.starts_with(|c: char| c.is_ascii_digit())
    };
    if parts.is_empty() || parts.len() > 2 || !parts.iter().all(valid) {
        return Err(InvalidTableName(name.to_owned()));
    }
    let quoted: Vec<String> = parts.iter().map(|p| format!("\"{p}\"")).collect();
    Ok(if quoted.len() == 1 {
        format!("{}.{}", schema.quoted(), quoted[0])
    } else {
        quoted.join(".")
    })
}

fn seconds(value: Option<f64>) -> Option<Duration> {
    value.map(|s| Duration::try_from_secs_f64(s.max(0.0)).unwrap_or_default())
}

fn unsigned(row: &Row, column: &str) -> Result<u64, StoreError> {
    let value: i64 = row.try_get(column).map_err(backend)?;
    u64::try_from(value).map_err(|_| StoreError::Corrupt {
        location: format!("column `{column}`"),
        message: format!("negative value {value}"),
    })
}

fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl PgAdmin {
    /// The operator's view of `store`'s schema, on its pool.
    pub fn new(store: &PgStore) -> Self {
        let schema = store.config().schema.clone();
        let r = |t: &str| render(t, &schema);
        let sql = Sql {
            migrations: r(include_str!("admin/migrations.sql")),
            streams: r(include_str!("admin/streams.sql")),
            partitions: r(include_str!("admin/partitions.sql")),
            backlog: r(include_str!("admin/backlog.sql")),
            held_leases: r(include_str!("admin/held_leases.sql")),
            take_leases: r(include_str!("admin/take_leases.sql")),
            fence_checkpoints: r(include_str!("admin/fence_checkpoints.sql")),
            still_held: r(include_str!("admin/still_held.sql")),
            release: r(include_str!("admin/release.sql")),
            rewind_checkpoints: r(include_str!("admin/rewind_checkpoints.sql")),
            clear_parked: r(include_str!("admin/clear_parked.sql")),
            skip_partitions: r(include_str!("admin/skip_partitions.sql")),
            skip: r(include_str!("admin/skip.sql")),
            replay_streams: r(include_str!("admin/replay_streams.sql")),
        };
        Self {
            pool: store.pool().clone(),
            schema,
            sql: Arc::new(sql),
            holder: format!(
                "factum-admin:{}:{}",
                std::process::id(),
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
        }
    }

    async fn client(&self) -> Result<Object, StoreError> {
        self.pool.get().await.map_err(backend)
    }

    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        self.client()
            .await?
            .query(sql, params)
            .await
            .map_err(backend)
    }

    /// The migrations applied to the schema, by version; `None` when the schema has no
    /// migrations table (it was never migrated).
    pub async fn applied_migrations(&self) -> Result<Option<Vec<AppliedMigration>>, StoreError> {
        let client = self.client().await?;
        let table = format!("{}.schema_migrations", self.schema.quoted());
        let exists: bool = client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
            .await
            .and_then(|row| row.try_get(0))
            .map_err(backend)?;
        if !exists {
            return Ok(None);
        }
        let rows = client
            .query(&self.sql.migrations, &[])
            .await
            .map_err(backend)?;
        rows.iter()
            .map(|row| {
                Ok(AppliedMigration {
                    version: row.try_get("version").map_err(backend)?,
                    name: row.try_get("name").map_err(backend)?,
                    applied_at: row.try_get("applied_at").map_err(backend)?,
                })
            })
            .collect::<Result<_, StoreError>>()
            .map(Some)
    }

    /// The streams (of `category` when given), by name, after stream id `after` when given,
    /// at most `limit` of them: a page costs a few index lookups per stream listed.
    pub async fn streams(
        &self,
        category: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StreamSummary>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.query(&self.sql.streams, &[&category, &limit, &after])
            .await?
            .iter()
            .map(|row| {
                Ok(StreamSummary {
                    stream_id: row.try_get("stream_id").map_err(backend)?,
                    version: unsigned(row, "version")?,
                    position: unsigned(row, "position")?,
                    recorded_at: row.try_get("recorded_at").map_err(backend)?,
                })
            })
            .collect()
    }

    /// The partitions of `name` (of every projection and process manager when `None`) that
    /// the coordination tables know, by name and partition.
    pub async fn partitions(&self, name: Option<&str>) -> Result<Vec<PartitionRecord>, StoreError> {
        self.query(&self.sql.partitions, &[&name])
            .await?
            .iter()
            .map(|row| {
                let partition: i32 = row.try_get("partition").map_err(backend)?;
                Ok(PartitionRecord {
                    name: row.try_get("name").map_err(backend)?,
                    partition: u32::try_from(partition).map_err(|_| StoreError::Corrupt {
                        location: "coordination tables".to_owned(),
                        message: format!("negative partition {partition}"),
                    })?,
                    checkpoint: unsigned(row, "position")?,
                    since_saved: seconds(row.try_get("since_update").map_err(backend)?),
                    holder: row.try_get("holder").map_err(backend)?,
                    lease_left: seconds(row.try_get("lease_left").map_err(backend)?),
                    parked: unsigned(row, "parked")?,
                })
            })
            .collect()
    }

    /// The committed events after `checkpoint`, counted up to `limit`.
    pub async fn backlog(&self, checkpoint: u64, limit: u64) -> Result<Backlog, StoreError> {
        let rows = self
            .query(&self.sql.backlog, &[&signed(checkpoint), &signed(limit)])
            .await?;
        let row = rows.first().ok_or_else(|| StoreError::Corrupt {
            location: "backlog".to_owned(),
            message: "no row".to_owned(),
        })?;
        Ok(Backlog {
            events: unsigned(row, "events")?,
            oldest: seconds(row.try_get("oldest").map_err(backend)?),
        })
    }

    /// The sessions of the store's database inside a transaction, oldest transaction first,
    /// at most `limit` of them (this one left out). What another role's session shows
    /// depends on this role's privileges (`pg_read_all_stats`).
    pub async fn open_transactions(&self, limit: usize) -> Result<Vec<Session>, StoreError> {
        self.sessions(None, limit).await
    }

    /// The session of server process `pid` in the store's database, if there is one.
    pub async fn session(&self, pid: u32) -> Result<Option<Session>, StoreError> {
        let pid = i32::try_from(pid).ok();
        if pid.is_none() {
            return Ok(None);
        }
        Ok(self.sessions(pid, 1).await?.into_iter().next())
    }

    async fn sessions(&self, pid: Option<i32>, limit: usize) -> Result<Vec<Session>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.query(include_str!("admin/sessions.sql"), &[&pid, &limit])
            .await?
            .iter()
            .map(|row| {
                let pid: i32 = row.try_get("pid").map_err(backend)?;
                Ok(Session {
                    pid: pid.unsigned_abs(),
                    application_name: row.try_get("application_name").map_err(backend)?,
                    user: row.try_get("usename").map_err(backend)?,
                    client_addr: row.try_get("client_addr").map_err(backend)?,
                    state: row.try_get("state").map_err(backend)?,
                    transaction_age: seconds(row.try_get("transaction_age").map_err(backend)?),
                    writes: row.try_get("writes").map_err(backend)?,
                    query: row.try_get("query").map_err(backend)?,
                })
            })
            .collect()
    }

    /// Whether the server is a standby, its replay lag there, and the standbys streaming
    /// from it otherwise.
    pub async fn replication(&self) -> Result<Replication, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(include_str!("admin/replication.sql"), &[])
            .await
            .map_err(backend)?;
        let standby: bool = row.try_get("standby").map_err(backend)?;
        let replay_lag = seconds(row.try_get("replay_lag").map_err(backend)?);
        let standbys = if standby {
            Vec::new()
        } else {
            client
                .query(include_str!("admin/standbys.sql"), &[])
                .await
                .map_err(backend)?
                .iter()
                .map(|row| {
                    Ok(Standby {
                        application_name: row.try_get("application_name").map_err(backend)?,
                        client_addr: row.try_get("client_addr").map_err(backend)?,
                        state: row.try_get("state").map_err(backend)?,
                        sync_state: row.try_get("sync_state").map_err(backend)?,
                        replay_lag: seconds(row.try_get("replay_lag").map_err(backend)?),
                    })
                })
                .collect::<Result<_, StoreError>>()?
        };
        Ok(Replication {
            standby,
            replay_lag,
            standbys,
        })
    }

    /// The lease holder this handle takes partitions as (`factum-admin:<process id>:<random>`).
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Takes the leases of `name`'s partitions (those in `partitions`, or all it has), as a
    /// worker would, from whoever holds them, and gives its checkpoints the new fence: a
    /// former holder's next renewal or checkpoint fails and it stops, as after a lost lease.
    /// Waits out the time the former holders' leases had left, after which none of them
    /// works on the partitions any more. Returns how many leases it took.
    async fn take(&self, name: &str, partitions: Option<&[i32]>) -> Result<u64, AdminError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let left = tx
            .query(&self.sql.held_leases, &[&name, &self.holder, &partitions])
            .await
            .map_err(backend)?
            .iter()
            .map(|row| row.try_get::<_, f64>("left_secs").map_err(backend))
            .collect::<Result<Vec<f64>, _>>()?
            .into_iter()
            .fold(0.0_f64, f64::max);
        let wait = seconds(Some(left)).unwrap_or_default();
        let hold = i64::try_from((wait + LEASE_MARGIN).as_millis()).unwrap_or(i64::MAX);
        let taken = tx
            .query(
                &self.sql.take_leases,
                &[&name, &partitions, &self.holder, &hold],
            )
            .await
            .map_err(backend)?
            .len() as u64;
        tx.execute(&self.sql.fence_checkpoints, &[&name, &self.holder])
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        if !wait.is_zero() {
            tracing::info!(
                projection = name,
                ?wait,
                "waiting out the former lease holders"
            );
            tokio::time::sleep(wait).await;
        }
        Ok(taken)
    }

    /// In `tx`: checks that this handle still holds the `taken` leases of `name`, then hands
    /// them back.
    async fn hand_back(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        name: &str,
        taken: u64,
    ) -> Result<(), AdminError> {
        let held = tx
            .query(&self.sql.still_held, &[&name, &self.holder])
            .await
            .map_err(backend)?
            .len() as u64;
        if held < taken {
            return Err(AdminError::LeaseLost {
                name: name.to_owned(),
            });
        }
        tx.execute(&self.sql.release, &[&name, &self.holder])
            .await
            .map_err(backend)?;
        Ok(())
    }

    /// Hands back what this handle holds of `name` after a failure (the leases expire
    /// anyway).
    async fn release_after_failure(&self, name: &str) {
        if let Ok(client) = self.client().await {
            let _ = client
                .execute(&self.sql.release, &[&name, &self.holder])
                .await;
        }
    }

    /// Rewinds projection `name` to the start of the global order: takes its partitions'
    /// leases from their holders and waits out the time those had left (see the crate's
    /// ADR 21), then, in one transaction, sets its checkpoints to 0, removes its parked
    /// events, empties `tables` (read-model tables, `table` in the store's schema or
    /// `schema.table`) and hands the leases back. The workers of the running application
    /// take them again and handle every event anew.
    ///
    /// A table name that is not `table` or `schema.table` is refused before anything
    /// changes.
    pub async fn rewind(&self, name: &str, tables: &[String]) -> Result<Rewound, AdminError> {
        let tables = tables
            .iter()
            .map(|t| table_name(&self.schema, t))
            .collect::<Result<Vec<_>, _>>()?;
        let leases = self.take(name, None).await?;
        let result = self.rewind_held(name, &tables, leases).await;
        if result.is_err() {
            self.release_after_failure(name).await;
        }
        result
    }

    async fn rewind_held(
        &self,
        name: &str,
        tables: &[String],
        leases: u64,
    ) -> Result<Rewound, AdminError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let checkpoints = tx
            .execute(&self.sql.rewind_checkpoints, &[&name])
            .await
            .map_err(backend)?;
        let parked = tx
            .execute(&self.sql.clear_parked, &[&name])
            .await
            .map_err(backend)?;
        for table in tables {
            tx.batch_execute(&format!("TRUNCATE {table}"))
                .await
                .map_err(|source| AdminError::Truncate {
                    table: table.clone(),
                    source,
                })?;
        }
        self.hand_back(&tx, name, leases).await?;
        tx.commit().await.map_err(backend)?;
        Ok(Rewound {
            checkpoints,
            leases,
            parked,
        })
    }

    /// Removes parked events of `name` (of `stream` and at `position` when given) without
    /// handling them. Takes the leases of their partitions and waits out the former holders
    /// first, as [`rewind`](Self::rewind) does, then, in one transaction, removes them, marks
    /// the parked events left in their streams (those that waited behind them) for replay
    /// and hands the leases back: the next holder reloads what is parked, so the streams are
    /// no longer held back. Returns how many were removed.
    pub async fn skip(
        &self,
        name: &str,
        stream: Option<&StreamId>,
        position: Option<u64>,
    ) -> Result<u64, AdminError> {
        let stream = stream.map(StreamId::as_str);
        let position = position.map(signed);
        let partitions: Vec<i32> = self
            .query(&self.sql.skip_partitions, &[&name, &stream, &position])
            .await?
            .iter()
            .map(|row| row.try_get("partition").map_err(backend))
            .collect::<Result<_, _>>()?;
        if partitions.is_empty() {
            return Ok(0);
        }
        let leases = self.take(name, Some(&partitions)).await?;
        let result = async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(backend)?;
            let mut streams: Vec<String> = tx
                .query(&self.sql.skip, &[&name, &stream, &position])
                .await
                .map_err(backend)?
                .iter()
                .map(|row| row.try_get("stream_id").map_err(backend))
                .collect::<Result<_, _>>()?;
            let removed = streams.len() as u64;
            streams.sort_unstable();
            streams.dedup();
            tx.execute(&self.sql.replay_streams, &[&name, &streams])
                .await
                .map_err(backend)?;
            self.hand_back(&tx, name, leases).await?;
            tx.commit().await.map_err(backend)?;
            Ok(removed)
        }
        .await;
        if result.is_err() {
            self.release_after_failure(name).await;
        }
        result
    }
}

/// How much longer than the former holders' leases [`PgAdmin`] takes a lease for.
const LEASE_MARGIN: Duration = Duration::from_secs(60);

/// Why [`PgAdmin::rewind`] or [`PgAdmin::skip`] failed; nothing was changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// A table name is malformed.
    #[error(transparent)]
    TableName(#[from] InvalidTableName),
    /// A table cannot be emptied (it does not exist, or the role may not).
    #[error("cannot empty table {table}: {source}")]
    Truncate {
        /// The table, quoted.
        table: String,
        /// What the database reported.
        source: tokio_postgres::Error,
    },
    /// A lease taken for the change expired or was taken over before the change.
    #[error("a lease of `{name}` taken for the change was lost before it; nothing changed")]
    LeaseLost {
        /// The projection.
        name: String,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_plain_identifiers_quoted() {
        let schema = SchemaName::new("factum").expect("schema");
        assert_eq!(
            table_name(&schema, "daily_sales").expect("valid"),
            format!("{}.\"daily_sales\"", schema.quoted())
        );
        assert_eq!(
            table_name(&schema, "reports.daily_sales").expect("valid"),
            "\"reports\".\"daily_sales\""
        );
        for bad in ["", "a.b.c", "x; DROP TABLE y", "1abc", "a.", "\"q\""] {
            assert!(table_name(&schema, bad).is_err(), "{bad} accepted");
        }
    }
}
