//! The PostgreSQL store.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use factum::store::{
    AggregateRead, AppendResult, Blocker, CommandOutcome, CommandRecord, HeadStatus, NewEvent,
    ReadAll, ReplayEvent, Snapshot, StreamRead, check_retry, storable_message, validate_batch,
    validate_snapshot,
};
use factum::tenant::{TenantError, TenantId, tenant_of_append};
use factum::{EventStore, ExpectedVersion, RecordedEvent, StoreError, StreamId};
use futures_util::TryStreamExt;
use tokio::sync::watch;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::PgLsn;
use uuid::Uuid;

use crate::config::PgConfig;
use crate::error::{PgError, backend};
use crate::notify::{ListenerConfig, Notifier};
use crate::rows::{self, AggregateRow};
use crate::sql::Statements;
use crate::tls::{PgConnectOptions, pool_error};

/// How many times an append is retried after losing a race that was not a version
/// conflict: a unique violation when `ExpectedVersion::Any` (or `StreamExists`) still
/// holds, a serialization failure or a deadlock. Each lost race means another append won.
const TRANSIENT_RETRIES: u32 = 100;

/// The event store on PostgreSQL. Cloning shares the pool.
///
/// Connect with [`PgStore::connect_with`], then create or upgrade the tables with
/// [`PgStore::migrate`] (safe to run from several processes at once).
///
/// Global positions follow the writing transactions' ids, and [`EventStore::read_all`] and
/// [`EventStore::head_position`] only go as far as the oldest transaction still running that
/// may write to the store's database (transactions of other databases of the cluster are
/// left out), so a reader following positions never skips or reorders a committed event
/// (`docs/adr/02-postgres-ordering.md`). Positions are therefore sparse. A transaction left
/// open holds readers back until it ends: [`EventStore::head_status`] names its session,
/// and the runners report it in their health. So that a caller
/// reads its own appends, those two calls first wait, at most
/// [`PgConfig::settle_timeout`], for the appends that were committing when they were called;
/// after that they return what is safe to read, never more.
#[derive(Clone, Debug)]
pub struct PgStore {
    inner: Arc<Inner>,
    /// The tenant of a handle of a multi-tenant store ([`EventStore::tenant`]).
    tenant: Option<TenantId>,
}

#[derive(Debug)]
struct Inner {
    /// The primary's connections: every write, and every read of a primary handle.
    pool: Pool,
    /// The standby's connections, for the reads of a standby handle ([`PgStore::standby`]).
    standby: Option<Pool>,
    config: PgConfig,
    sql: Statements,
    listener: ListenerConfig,
    notifier: Notifier,
}

/// What the append function reported.
enum Outcome {
    Appended(AppendResult),
    Conflict(u64),
    /// The events' command id already has an outcome without events.
    Decided,
}

/// How far a standby is behind its primary ([`PgStore::standby_lag`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StandbyLag {
    /// WAL bytes the primary has written that the standby has not replayed yet: 0 when it
    /// holds everything committed on the primary.
    pub wal_bytes: u64,
    /// While the standby is behind, how long ago the last transaction it replayed committed
    /// on the primary: how stale its reads may be.
    pub last_replayed_age: Option<Duration>,
    /// Whether the standby was promoted: it is a primary now, with no lag.
    pub promoted: bool,
}

/// Most events one append can hold (positions are `transaction id * 65536 + index`).
pub const MAX_EVENTS_PER_APPEND: usize = 65_536;

/// How far the readable head stands, and how far the committed events go.
struct Head {
    /// The last committed position.
    visible: u64,
    /// The last position no running transaction can still commit below.
    safe: u64,
    /// The first position a running or future transaction can hold.
    bound: u64,
    /// The transaction holding committed events back, when `visible > safe` and it was
    /// found.
    blocker: Option<Blocker>,
}

impl PgStore {
    /// Connects to `url` with the default configuration (schema `factum`).
    ///
    /// See [`PgStore::connect_with`].
    pub async fn connect(url: &str) -> Result<Self, PgError> {
        Self::connect_with(url, PgConfig::default()).await
    }

    /// Connects to `url` (a `postgresql://` URL or a `key=value` string) with `config`.
    ///
    /// `sslmode` (`disable`, `prefer` by default, `require`, `verify-ca`, `verify-full`) and
    /// `sslrootcert` (a PEM file of CAs, or `system`) apply to every connection of the store,
    /// pooled or not, through rustls; see [`PgConnectOptions`] and the [`tls`](crate::tls)
    /// module for what each mode checks:
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), factum_postgres::PgError> {
    /// use factum_postgres::PgStore;
    /// let store = PgStore::connect(
    ///     "postgresql://app@db.example/app?sslmode=verify-full&sslrootcert=/etc/app/ca.pem",
    /// )
    /// .await?;
    /// # let _ = store;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// One connection is opened before this returns, so that a wrong address, credentials or
    /// TLS setting fail here: [`PgError::Tls`] names the host and the cause (no TLS on the
    /// server, a certificate for another name, an unknown authority),
    /// [`PgError::RootCert`] an unusable `sslrootcert`, [`PgError::InvalidOption`] an
    /// unknown `sslmode`, and [`PgError::Connect`] anything else, with the server's message.
    pub async fn connect_with(url: &str, config: PgConfig) -> Result<Self, PgError> {
        Self::connect_options(PgConnectOptions::parse(url)?, config).await
    }

    /// Connects with parsed options; see [`PgStore::connect_with`].
    pub async fn connect_options(
        options: PgConnectOptions,
        config: PgConfig,
    ) -> Result<Self, PgError> {
        let tls = options.connector()?;
        let pg_config = options.effective_config();
        let manager = Manager::from_config(
            pg_config.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager).max_size(config.pool_size).build()?;
        // The first connection stays in the pool.
        drop(pool.get().await.map_err(|e| pool_error(&pg_config, e))?);
        let sql = Statements::new(&config.schema);
        let mut listener_config = pg_config;
        listener_config.application_name("factum-head-listener");
        let listener = ListenerConfig {
            pg_config: listener_config,
            tls,
            channel: config.schema.channel(),
            head_sql: sql.head_position.clone(),
            poll_interval: config.poll_interval,
            min_interval: config.notify_interval,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                standby: None,
                config,
                sql,
                listener,
                notifier: Notifier::new(),
            }),
            tenant: None,
        })
    }

    /// Creates the schema and tables, or applies the migrations they lack. Concurrent calls,
    /// from this or other processes, wait for each other.
    ///
    /// With [`PgConfig::application_role`] set, it then grants that role what it needs at
    /// run time, and nothing more. When every migration is applied and no role is set, it
    /// only reads the applied versions: an application running as a role that may not
    /// create tables can call it at start-up.
    pub async fn migrate(&self) -> Result<(), PgError> {
        crate::migrate::migrate(&self.inner.pool, &self.inner.config, &self.inner.sql).await
    }

    /// Creates, when missing, the indexes that make a read of one partition of `count`
    /// ([`ReadAll::partition`](factum::store::ReadAll::partition)) a range of an index in
    /// position order, rather than a range of the whole log that skips other partitions'
    /// events: one partial index of the positions per partition (`count` indexes, together
    /// the size of one index of the log). Run it, as the role that owns the tables (as
    /// [`migrate`](Self::migrate)), once for each number of partitions a projection is
    /// split into; one partition needs none. Built `CONCURRENTLY`, one after the other:
    /// appends and reads go on meanwhile. An index a failed build left invalid is dropped
    /// and built again.
    ///
    /// Without them, partition reads return the same events, reading more to find them.
    pub async fn create_partition_index(&self, count: u32) -> Result<(), PgError> {
        if count == 0 {
            return Err(PgError::InvalidPartitionCount { count });
        }
        if count == 1 {
            return Ok(());
        }
        let client = self.inner.pool.get().await.map_err(backend)?;
        let schema = self.inner.config.schema.quoted();
        for index in 0..count {
            let name = crate::sql::partition_index_name(index, count);
            let qualified = format!("{schema}.{name}");
            let valid: Option<bool> = client
                .query_opt(include_str!("../sql/index_valid.sql"), &[&qualified])
                .await
                .map_err(backend)?
                .map(|row| row.get(0));
            match valid {
                Some(true) => continue,
                Some(false) => client
                    .batch_execute(&format!("DROP INDEX CONCURRENTLY IF EXISTS {qualified}"))
                    .await
                    .map_err(backend)?,
                None => {}
            }
            let predicate = crate::sql::partition_predicate(index, count);
            client
                .batch_execute(&format!(
                    "CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} \
                     ON {schema}.events (position) WHERE {predicate}"
                ))
                .await
                .map_err(backend)?;
        }
        Ok(())
    }

    /// The statement a read of partition `index` of `count` runs, with its parameters: `$1`
    /// the position to read after, `$2` the most events, `$3` categories and `$4` event
    /// types (`text[]`, all when empty). To check its plan with `EXPLAIN`.
    pub fn partition_read_statement(&self, index: u32, count: u32) -> String {
        crate::sql::partition_read(&self.inner.sql, index, count)
    }

    /// The configuration.
    pub fn config(&self) -> &PgConfig {
        &self.inner.config
    }

    /// The connection pool, for queries beside the store (for example read models updated
    /// in the same database). Connections go back to the pool as they are: leave no session
    /// setting, advisory lock, `LISTEN` or open transaction behind.
    pub fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    /// A receiver of the readable head position: the highest position a reader can read
    /// without skipping a commit, as [`EventStore::head_position`] reports it.
    ///
    /// It is updated on `NOTIFY` from any process appending to this schema, received on a
    /// dedicated connection outside the pool that reconnects when dropped, and by polling
    /// every [`PgConfig::poll_interval`], so a lost notification only delays it. The
    /// listener starts on the first call, inside a Tokio runtime, and stops when the last
    /// clone of the store is dropped.
    ///
    /// On a standby handle ([`PgStore::standby`]) the listener runs on the primary (a standby
    /// can neither `LISTEN` nor receive notifications), so the value is the primary's head,
    /// possibly above what the standby has replayed: a wake-up, not a promise.
    pub fn watch_head(&self) -> watch::Receiver<u64> {
        self.inner.notifier.watch(&self.inner.listener)
    }

    /// A handle that reads from the hot standby at `url` and writes nothing: aggregate
    /// loads, stream reads, [`EventStore::read_all`], the head, events by id, snapshots and
    /// command outcomes come from the standby, so subscriptions (projections, process
    /// managers) run on it; appends, snapshot saves and command records are refused with
    /// [`PgError::StandbyReadOnly`] (as a [`StoreError::Backend`]), before anything is sent.
    ///
    /// A standby is behind its primary, so what it reads may be stale; never stale out of
    /// order. Its global order has the primary's guarantee: a follower never passes a
    /// transaction still open on the primary, and never skips an event that transaction
    /// commits later. [`EventStore::head_status`] reports the standby's readable head against
    /// the primary's committed one, and [`PgStore::standby_lag`] the replay lag.
    ///
    /// Use it where a stale read is safe: read models, queries, process managers (whose
    /// commands go through a repository on the primary). Commands decide on the primary
    /// handle, whose loads are current: a [`Repository`](factum::Repository) on a standby
    /// handle loads, but its commands fail on the refused append. [`PgStore::pool`] stays
    /// the primary's, for read models written beside the store.
    /// See `docs/adr/18-standby-reads.md`.
    ///
    /// One connection to the standby is opened before this returns, with the configuration
    /// and TLS options of `url`; errors are those of [`PgStore::connect_with`].
    pub async fn standby(&self, url: &str) -> Result<Self, PgError> {
        let options = PgConnectOptions::parse(url)?;
        let tls = options.connector()?;
        let pg_config = options.effective_config();
        let manager = Manager::from_config(
            pg_config.clone(),
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let standby = Pool::builder(manager)
            .max_size(self.inner.config.pool_size)
            .build()?;
        drop(standby.get().await.map_err(|e| pool_error(&pg_config, e))?);
        let config = self.inner.config.clone();
        Ok(Self {
            inner: Arc::new(Inner {
                pool: self.inner.pool.clone(),
                standby: Some(standby),
                sql: Statements::new(&config.schema),
                listener: self.inner.listener.clone(),
                notifier: Notifier::new(),
                config,
            }),
            tenant: self.tenant.clone(),
        })
    }

    /// Whether this handle reads from a standby ([`PgStore::standby`]).
    pub fn is_standby(&self) -> bool {
        self.inner.standby.is_some()
    }

    /// How far the standby of this handle is behind its primary: WAL bytes written on the
    /// primary and not replayed yet. On a primary handle, no lag. Fails when the primary or
    /// the standby cannot be reached.
    pub async fn standby_lag(&self) -> Result<StandbyLag, PgError> {
        let Some(standby) = &self.inner.standby else {
            return Ok(StandbyLag::default());
        };
        let store = |e: tokio_postgres::Error| PgError::Store(backend(e));
        let client = standby
            .get()
            .await
            .map_err(|e| PgError::Store(backend(e)))?;
        let row = client
            .query_one(include_str!("../sql/standby_replay.sql"), &[])
            .await
            .map_err(store)?;
        let in_recovery: bool = row.try_get("in_recovery").map_err(store)?;
        if !in_recovery {
            return Ok(StandbyLag {
                promoted: true,
                ..StandbyLag::default()
            });
        }
        let replayed: Option<PgLsn> = row.try_get("replayed").map_err(store)?;
        let replay_age: Option<f64> = row.try_get("replay_age").map_err(store)?;
        let primary = self.client().await.map_err(PgError::Store)?;
        let written: PgLsn = primary
            .query_one("SELECT pg_current_wal_lsn()", &[])
            .await
            .map_err(store)?
            .try_get(0)
            .map_err(store)?;
        let wal_bytes = u64::from(written).saturating_sub(replayed.map_or(0, u64::from));
        Ok(StandbyLag {
            wal_bytes,
            last_replayed_age: (wal_bytes > 0)
                .then(|| replay_age.and_then(|s| Duration::try_from_secs_f64(s).ok()))
                .flatten(),
            promoted: false,
        })
    }

    async fn client(&self) -> Result<Object, StoreError> {
        self.inner.pool.get().await.map_err(backend)
    }

    /// A connection for a read: the standby's on a standby handle, the primary's otherwise.
    async fn read_client(&self) -> Result<Object, StoreError> {
        self.inner
            .standby
            .as_ref()
            .unwrap_or(&self.inner.pool)
            .get()
            .await
            .map_err(backend)
    }

    /// Refuses `operation` on a standby handle, before anything is sent.
    fn writable(&self, operation: &'static str) -> Result<(), StoreError> {
        match self.inner.standby {
            Some(_) => Err(backend(PgError::StandbyReadOnly { operation })),
            None => Ok(()),
        }
    }

    /// The tenant the calls of this handle run under: none for a single-tenant store, the
    /// bound one for a handle of a multi-tenant store, or the refusal of `operation` by a
    /// multi-tenant store bound to none, before anything is sent.
    fn scope(&self, operation: &'static str) -> Result<Option<&TenantId>, StoreError> {
        if !self.inner.config.multi_tenant {
            return Ok(None);
        }
        match &self.tenant {
            Some(tenant) => Ok(Some(tenant)),
            None => Err(TenantError::Required { operation }.into()),
        }
    }

    /// Runs `body`, a statement sent on its first poll, bound to `tenant`, in one round
    /// trip ([`crate::tenancy::bound`]).
    async fn scoped<T>(
        &self,
        client: &Object,
        tenant: Option<&TenantId>,
        body: impl Future<Output = T>,
    ) -> Result<T, tokio_postgres::Error> {
        crate::tenancy::bound(client, tenant, body).await
    }

    /// [`query_events`] bound to `tenant`.
    async fn events_in(
        &self,
        client: &Object,
        tenant: Option<&TenantId>,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let statement = client.prepare_cached(sql).await.map_err(backend)?;
        self.scoped(
            client,
            tenant,
            stream_rows(client, &statement, params, rows::event),
        )
        .await
        .map_err(backend)?
    }

    async fn call_append(
        &self,
        client: &Object,
        tenant: Option<&TenantId>,
        stream: &StreamId,
        expected: i64,
        events: &[NewEvent],
        metadata: &[String],
    ) -> Result<Outcome, tokio_postgres::Error> {
        let schema_version = |e: &NewEvent| i32::try_from(e.schema_version).unwrap_or(i32::MAX);
        let stream_name = stream.as_str();
        // Only an append whose first event carries a command id (the caller's idempotency
        // key) claims it in the command log; others run the statements without the claim.
        let command_id = events.first().and_then(|e| e.metadata.command_id);
        let sql = &self.inner.sql;
        let row = if let ([event], [metadata]) = (events, metadata) {
            let (payload, version) = (event.payload.as_str(), schema_version(event));
            let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![
                &stream_name,
                &expected,
                &event.event_id,
                &event.event_type,
                &version,
                &payload,
                metadata,
            ];
            let statement = match &command_id {
                Some(command_id) => {
                    params.push(command_id);
                    &sql.append_one_claimed
                }
                None => &sql.append_one,
            };
            let statement = client.prepare_cached(statement).await?;
            self.scoped(client, tenant, client.query_one(&statement, &params))
                .await??
        } else {
            let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
            let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
            let versions: Vec<i32> = events.iter().map(schema_version).collect();
            let payloads: Vec<&str> = events.iter().map(|e| e.payload.as_str()).collect();
            let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![
                &stream_name,
                &expected,
                &ids,
                &types,
                &versions,
                &payloads,
                &metadata,
            ];
            let statement = match &command_id {
                Some(command_id) => {
                    params.push(command_id);
                    &sql.append_claimed
                }
                None => &sql.append,
            };
            let statement = client.prepare_cached(statement).await?;
            self.scoped(client, tenant, client.query_one(&statement, &params))
                .await??
        };
        let status: i32 = row.try_get(0)?;
        let version: i64 = row.try_get(1)?;
        let first_position: i64 = row.try_get(2)?;
        let version = u64::try_from(version).unwrap_or(0);
        let first_position = u64::try_from(first_position).unwrap_or(0);
        let n = events.len() as u64;
        Ok(match status {
            0 if n == 0 => Outcome::Appended(AppendResult {
                version,
                first_version: version + 1,
                first_position: 0,
                last_position: 0,
                replayed: false,
            }),
            0 => Outcome::Appended(AppendResult {
                version,
                first_version: version + 1 - n,
                first_position,
                last_position: first_position + n - 1,
                replayed: false,
            }),
            2 => Outcome::Decided,
            _ => Outcome::Conflict(version),
        })
    }

    /// Whether `events` were already stored: the original result of a retry, a
    /// [`StoreError::DuplicateEventId`], or `None` when no id is stored.
    async fn earlier_append(
        &self,
        client: &Object,
        tenant: Option<&TenantId>,
        stream: &StreamId,
        events: &[NewEvent],
    ) -> Result<Option<AppendResult>, StoreError> {
        let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
        let stored = self
            .events_in(client, tenant, &self.inner.sql.events_by_ids, &[&ids])
            .await?
            .into_iter()
            .map(|e| (e.event_id, e))
            .collect::<HashMap<_, _>>();
        let in_order: Vec<Option<&RecordedEvent>> =
            events.iter().map(|e| stored.get(&e.event_id)).collect();
        check_retry(stream, events, &in_order)
    }

    async fn command_record_with(
        &self,
        client: &Object,
        tenant: Option<&TenantId>,
        command_id: Uuid,
    ) -> Result<Option<CommandRecord>, StoreError> {
        let statement = client
            .prepare_cached(&self.inner.sql.command_record)
            .await
            .map_err(backend)?;
        let first_id = factum::store::derived_event_id(command_id, 0);
        let row = self
            .scoped(
                client,
                tenant,
                client.query_opt(&statement, &[&command_id, &first_id]),
            )
            .await
            .map_err(backend)?
            .map_err(backend)?;
        row.map(|row| rows::command_record(&row, command_id))
            .transpose()
    }

    async fn version_of(
        &self,
        client: &Object,
        tenant: Option<&TenantId>,
        stream: &StreamId,
    ) -> Result<u64, StoreError> {
        let statement = client
            .prepare_cached(&self.inner.sql.stream_version)
            .await
            .map_err(backend)?;
        let row = self
            .scoped(
                client,
                tenant,
                client.query_one(&statement, &[&stream.as_str()]),
            )
            .await
            .map_err(backend)?
            .map_err(backend)?;
        let version: i64 = row.try_get(0).map_err(backend)?;
        u64::try_from(version).map_err(|_| StoreError::Corrupt {
            location: format!("stream `{stream}`"),
            message: format!("negative stream version {version}"),
        })
    }

    async fn head(&self, client: &Object, tenant: Option<&TenantId>) -> Result<Head, StoreError> {
        let statement = client
            .prepare_cached(&self.inner.sql.head_position)
            .await
            .map_err(backend)?;
        let row = self
            .scoped(client, tenant, client.query_one(&statement, &[]))
            .await
            .map_err(backend)?
            .map_err(backend)?;
        let get = |column: &str| -> Result<u64, StoreError> {
            let value: i64 = row.try_get(column).map_err(backend)?;
            u64::try_from(value).map_err(|_| StoreError::Corrupt {
                location: format!("position {value}"),
                message: "negative position".to_owned(),
            })
        };
        Ok(Head {
            visible: get("visible")?,
            safe: get("safe")?,
            bound: get("bound")?,
            blocker: blocker(&row)?,
        })
    }

    /// Runs `read` until it has seen every event committed before the first attempt (or a
    /// full batch), waiting at most the settle timeout for appends still committing, so
    /// that a reader sees its own appends. A read that times out returns what is safe to
    /// read: it never skips.
    async fn settled<T, F, Fut>(
        &self,
        client: &Object,
        tenant: Option<&TenantId>,
        mut read: F,
    ) -> Result<T, StoreError>
    where
        F: FnMut(Head) -> Fut,
        Fut: Future<Output = Result<(T, bool), StoreError>>,
    {
        let deadline = tokio::time::Instant::now() + self.inner.config.settle_timeout;
        let mut target = None;
        let mut delay = Duration::from_millis(1);
        let mut first = true;
        loop {
            let head = self.head(client, tenant).await?;
            let target = *target.get_or_insert(head.visible);
            let last = head.bound > target || tokio::time::Instant::now() >= deadline;
            // Read when settled, and once at first: a full batch needs no waiting.
            if last || first {
                let (value, full) = read(head).await?;
                if last || full {
                    return Ok(value);
                }
            }
            first = false;
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(50));
        }
    }

    /// Runs `sql` with `params` bound to `tenant`, decoding each row as an event.
    async fn query_events(
        &self,
        tenant: Option<&TenantId>,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let client = self.read_client().await?;
        self.events_in(&client, tenant, sql, params).await
    }
}

/// Runs `statement` and decodes each row as it arrives, while the server still sends the
/// next ones.
async fn stream_rows<T>(
    client: &Object,
    statement: &tokio_postgres::Statement,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    decode: impl Fn(&tokio_postgres::Row) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let rows = client
        .query_raw(statement, params.iter().copied())
        .await
        .map_err(backend)?;
    let mut rows = std::pin::pin!(rows);
    let mut events = Vec::new();
    while let Some(row) = rows.try_next().await.map_err(backend)? {
        events.push(decode(&row)?);
    }
    Ok(events)
}

/// The first and last version and the limit of `read` as statement parameters, or `None`
/// when it selects nothing.
fn version_bounds(read: &StreamRead) -> Option<(i64, i64, Option<i64>)> {
    let from = clamp(read.from.max(1));
    let to = read.to.map_or(i64::MAX, clamp);
    if to < from || read.limit == Some(0) {
        return None;
    }
    Some((from, to, read.limit.map(|l| clamp(l as u64))))
}

impl PgStore {
    /// Runs a stream read (`read_stream.sql` or `replay_stream_until.sql`, which take the same
    /// parameters) and decodes its rows as they arrive.
    async fn scan_stream<T>(
        &self,
        stream: &StreamId,
        read: &StreamRead,
        sql: &str,
        decode: impl Fn(&tokio_postgres::Row) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let tenant = self.scope("a stream read")?;
        let Some((from, to, limit)) = version_bounds(read) else {
            return Ok(Vec::new());
        };
        let client = self.read_client().await?;
        let statement = client.prepare_cached(sql).await.map_err(backend)?;
        self.scoped(
            &client,
            tenant,
            stream_rows(
                &client,
                &statement,
                &[&stream.as_str(), &from, &to, &read.until, &limit],
                decode,
            ),
        )
        .await
        .map_err(backend)?
    }
}

impl PgStore {
    /// Replays `stream` within the version bounds and limit of `read`, without a time bound
    /// (`replay_stream.sql`), decoding rows as they arrive.
    async fn replay_untimed(
        &self,
        stream: &StreamId,
        read: &StreamRead,
    ) -> Result<Vec<ReplayEvent>, StoreError> {
        let tenant = self.scope("a stream read")?;
        let Some((from, to, limit)) = version_bounds(read) else {
            return Ok(Vec::new());
        };
        let client = self.read_client().await?;
        let statement = client
            .prepare_cached(&self.inner.sql.replay_stream)
            .await
            .map_err(backend)?;
        self.scoped(
            &client,
            tenant,
            stream_rows(
                &client,
                &statement,
                &[&stream.as_str(), &from, &to, &limit],
                |row| rows::replay_event(row, stream),
            ),
        )
        .await
        .map_err(backend)?
    }

    /// [`EventStore::load_aggregate`] in one statement (`load_aggregate.sql`): the snapshot's
    /// row, then the events after it.
    async fn load_aggregate_at(
        &self,
        stream: &StreamId,
        schema_version: u32,
        max_version: Option<u64>,
    ) -> Result<AggregateRead, StoreError> {
        let tenant = self.scope("an aggregate load")?;
        let Ok(stored_version) = i32::try_from(schema_version) else {
            // No snapshot of this schema version can be stored: the events alone.
            let mut read = StreamRead::from_version(1);
            read.to = max_version;
            let events = self.replay_untimed(stream, &read).await?;
            return Ok(AggregateRead {
                snapshot: None,
                events,
            });
        };
        let max_version = max_version.map_or(i64::MAX, clamp);
        let client = self.read_client().await?;
        let statement = client
            .prepare_cached(&self.inner.sql.load_aggregate)
            .await
            .map_err(backend)?;
        let rows = self
            .scoped(
                &client,
                tenant,
                stream_rows(
                    &client,
                    &statement,
                    &[&stream.as_str(), &stored_version, &max_version],
                    |row| rows::aggregate_row(row, stream, schema_version),
                ),
            )
            .await
            .map_err(backend)??;
        let mut read = AggregateRead {
            snapshot: None,
            events: Vec::with_capacity(rows.len()),
        };
        for row in rows {
            match row {
                AggregateRow::Event(event) => read.events.push(event),
                AggregateRow::Snapshot(snapshot) => {
                    if let Some(first) = &read.snapshot {
                        return Err(StoreError::Corrupt {
                            location: format!("snapshots of stream `{stream}`"),
                            message: format!(
                                "two latest snapshots of schema version {schema_version} \
                                 (versions {} and {})",
                                first.version, snapshot.version
                            ),
                        });
                    }
                    read.snapshot = Some(snapshot);
                }
            }
        }
        // The statement returns the events in stream order; this holds whatever plan ran.
        if !read.events.is_sorted_by_key(|e| e.stream_version) {
            read.events.sort_by_key(|e| e.stream_version);
        }
        Ok(read)
    }
}

/// The `blocker_*` columns of the head query.
fn blocker(row: &tokio_postgres::Row) -> Result<Option<Blocker>, StoreError> {
    let pid: Option<i32> = row.try_get("blocker_pid").map_err(backend)?;
    let application_name: Option<String> =
        row.try_get("blocker_application_name").map_err(backend)?;
    let state: Option<String> = row.try_get("blocker_state").map_err(backend)?;
    let age: Option<f64> = row.try_get("blocker_age").map_err(backend)?;
    if pid.is_none() && state.is_none() {
        return Ok(None);
    }
    let pid = pid
        .map(|pid| {
            u32::try_from(pid).map_err(|_| StoreError::Corrupt {
                location: "pg_stat_activity".to_owned(),
                message: format!("negative process id {pid}"),
            })
        })
        .transpose()?;
    let mut blocker = Blocker::default();
    blocker.pid = pid;
    blocker.application_name = application_name;
    blocker.state = state;
    // A clock step can make the age negative for a moment: read it as zero.
    blocker.transaction_age = age.map(|s| Duration::try_from_secs_f64(s).unwrap_or_default());
    Ok(Some(blocker))
}

fn clamp(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl EventStore for PgStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Result<AppendResult, StoreError> {
        self.writable("an append")?;
        validate_batch(stream, events)?;
        let filled;
        let (tenant, events) = if self.inner.config.multi_tenant {
            let (tenant, with_tenant) = tenant_of_append(self.tenant.as_ref(), stream, events)?;
            filled = with_tenant;
            (Some(tenant), filled.as_deref().unwrap_or(events))
        } else {
            (None, events)
        };
        let tenant = tenant.as_ref();
        if events.len() > MAX_EVENTS_PER_APPEND {
            return Err(StoreError::Backend(
                format!(
                    "{} events in one append to `{stream}`: at most {MAX_EVENTS_PER_APPEND} fit",
                    events.len()
                )
                .into(),
            ));
        }
        if let Some(event) = events
            .iter()
            .find(|e| i32::try_from(e.schema_version).is_err())
        {
            return Err(StoreError::Backend(
                format!(
                    "schema version {} of `{}` is larger than the store keeps ({})",
                    event.schema_version,
                    event.event_type,
                    i32::MAX
                )
                .into(),
            ));
        }
        let metadata = events
            .iter()
            .map(|e| serde_json::to_string(&e.metadata))
            .collect::<Result<Vec<String>, _>>()
            .map_err(|source| StoreError::Encode {
                what: "event metadata",
                source,
            })?;
        let expected_code = match expected {
            ExpectedVersion::Any => -1,
            ExpectedVersion::StreamExists => -2,
            ExpectedVersion::NoStream => 0,
            ExpectedVersion::Exact(v) => clamp(v),
        };
        let conflict = |actual| StoreError::WrongExpectedVersion {
            stream: stream.clone(),
            expected,
            actual,
        };

        let mut attempts = 0;
        loop {
            attempts += 1;
            let client = self.client().await?;
            let outcome = self
                .call_append(&client, tenant, stream, expected_code, events, &metadata)
                .await;
            match outcome {
                Ok(Outcome::Appended(result)) => {
                    if result.last_position > 0 {
                        self.inner.notifier.appended(
                            result.last_position,
                            &self.inner.pool,
                            &self.inner.listener.channel,
                            &self.inner.sql.notify,
                            self.inner.config.notify_interval,
                        );
                    }
                    return Ok(result);
                }
                Ok(Outcome::Conflict(actual)) => {
                    // An append stored earlier with these ids is a retry, whatever the
                    // version is now.
                    if !events.is_empty() {
                        if let Some(result) =
                            self.earlier_append(&client, tenant, stream, events).await?
                        {
                            return Ok(result);
                        }
                    }
                    return Err(conflict(actual));
                }
                Ok(Outcome::Decided) => {
                    let command_id = events
                        .first()
                        .and_then(|e| e.metadata.command_id)
                        .unwrap_or_default();
                    // The first outcome in another stream names that stream.
                    let first = self
                        .command_record_with(&client, tenant, command_id)
                        .await?;
                    return Err(StoreError::CommandDecided {
                        command_id,
                        stream: first.map_or_else(|| stream.clone(), |r| r.stream_id),
                    });
                }
                Err(error) => {
                    let code = error.code().cloned();
                    let transient = code.as_ref().is_some_and(|code| {
                        *code == SqlState::UNIQUE_VIOLATION
                            || *code == SqlState::T_R_SERIALIZATION_FAILURE
                            || *code == SqlState::T_R_DEADLOCK_DETECTED
                    });
                    if !transient {
                        // Leave nothing behind: a connection that failed mid-append is
                        // closed rather than returned to the pool.
                        drop(Object::take(client));
                        return Err(backend(error));
                    }
                    // A concurrent append won: either these very events (a retry), an
                    // event with one of these ids (a reused id), or the next version of
                    // the stream (a conflict, or a lost race to retry for `Any`).
                    if let Some(result) =
                        self.earlier_append(&client, tenant, stream, events).await?
                    {
                        return Ok(result);
                    }
                    let actual = self.version_of(&client, tenant, stream).await?;
                    if !expected.matches(actual) {
                        return Err(conflict(actual));
                    }
                    if attempts > TRANSIENT_RETRIES {
                        return Err(backend(error));
                    }
                    tracing::debug!(
                        %stream,
                        append_retry = attempts,
                        sqlstate = code.as_ref().map(SqlState::code),
                        "append lost a race to a concurrent one; retrying"
                    );
                }
            }
        }
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        read: &StreamRead,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.scan_stream(stream, read, &self.inner.sql.read_stream, |row| {
            rows::stream_event(row, stream)
        })
        .await
    }

    async fn replay_stream(
        &self,
        stream: &StreamId,
        read: &StreamRead,
    ) -> Result<Vec<ReplayEvent>, StoreError> {
        if read.until.is_none() {
            return self.replay_untimed(stream, read).await;
        }
        self.scan_stream(stream, read, &self.inner.sql.replay_stream_until, |row| {
            rows::replay_event(row, stream)
        })
        .await
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<u64, StoreError> {
        let tenant = self.scope("a stream version")?;
        let client = self.read_client().await?;
        self.version_of(&client, tenant, stream).await
    }

    async fn read_all(&self, read: &ReadAll) -> Result<Vec<RecordedEvent>, StoreError> {
        let tenant = self.scope("a read of all streams")?;
        if read.limit == 0 {
            return Ok(Vec::new());
        }
        let after = clamp(read.after);
        let limit = clamp(read.limit as u64);
        let sql = &self.inner.sql;
        let client = self.read_client().await?;
        let client = &client;
        let partition_sql = read
            .partition
            .map(|p| crate::sql::partition_read(sql, p.index(), p.count()));
        let partition_sql = &partition_sql;
        self.settled(client, tenant, |_| async move {
            if let Some(partition_read) = partition_sql {
                let events = self
                    .events_in(
                        client,
                        tenant,
                        partition_read,
                        &[&after, &limit, &read.categories, &read.event_types],
                    )
                    .await?;
                let full = events.len() >= read.limit;
                return Ok((events, full));
            }
            let events = match (read.categories.is_empty(), read.event_types.is_empty()) {
                (true, true) => {
                    self.events_in(client, tenant, &sql.read_all, &[&after, &limit])
                        .await
                }
                (false, true) => {
                    self.events_in(
                        client,
                        tenant,
                        &sql.read_all_categories,
                        &[&after, &limit, &read.categories],
                    )
                    .await
                }
                (true, false) => {
                    self.events_in(
                        client,
                        tenant,
                        &sql.read_all_types,
                        &[&after, &limit, &read.event_types],
                    )
                    .await
                }
                (false, false) => {
                    self.events_in(
                        client,
                        tenant,
                        &sql.read_all_categories_types,
                        &[&after, &limit, &read.categories, &read.event_types],
                    )
                    .await
                }
            }?;
            let full = events.len() >= read.limit;
            Ok((events, full))
        })
        .await
    }

    async fn head_position(&self) -> Result<u64, StoreError> {
        let tenant = self.scope("the head position")?;
        let client = self.read_client().await?;
        self.settled(
            &client,
            tenant,
            |head| async move { Ok((head.safe, false)) },
        )
        .await
    }

    async fn event_by_id(&self, event_id: Uuid) -> Result<Option<RecordedEvent>, StoreError> {
        let tenant = self.scope("a read of an event by id")?;
        Ok(self
            .query_events(tenant, &self.inner.sql.event_by_id, &[&event_id])
            .await?
            .pop())
    }

    async fn save_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        self.writable("a snapshot save")?;
        validate_snapshot(snapshot)?;
        let tenant = self.scope("a snapshot save")?;
        let schema_version = i32::try_from(snapshot.schema_version).map_err(|_| {
            StoreError::Backend(
                format!(
                    "snapshot schema version {} is larger than the store keeps ({})",
                    snapshot.schema_version,
                    i32::MAX
                )
                .into(),
            )
        })?;
        let client = self.client().await?;
        let sql = match tenant {
            Some(_) => &self.inner.sql.save_snapshot_tenant,
            None => &self.inner.sql.save_snapshot,
        };
        let statement = client.prepare_cached(sql).await.map_err(backend)?;
        let stream = snapshot.stream_id.as_str();
        let version = clamp(snapshot.version);
        let state = snapshot.state.as_str();
        self.scoped(
            &client,
            tenant,
            client.execute(
                &statement,
                &[
                    &stream,
                    &schema_version,
                    &version,
                    &state,
                    &snapshot.taken_at,
                ],
            ),
        )
        .await
        .map_err(backend)?
        .map_err(backend)?;
        Ok(())
    }

    async fn load_snapshot(
        &self,
        stream: &StreamId,
        schema_version: u32,
        max_version: Option<u64>,
    ) -> Result<Option<Snapshot>, StoreError> {
        let tenant = self.scope("a snapshot load")?;
        let Ok(schema_version) = i32::try_from(schema_version) else {
            return Ok(None);
        };
        let max_version = max_version.map_or(i64::MAX, clamp);
        let client = self.read_client().await?;
        let statement = client
            .prepare_cached(&self.inner.sql.load_snapshot)
            .await
            .map_err(backend)?;
        let row = self
            .scoped(
                &client,
                tenant,
                client.query_opt(
                    &statement,
                    &[&stream.as_str(), &schema_version, &max_version],
                ),
            )
            .await
            .map_err(backend)?
            .map_err(backend)?;
        row.as_ref().map(rows::snapshot).transpose()
    }

    /// One statement: the snapshot and the events after it (`load_aggregate.sql`).
    async fn load_aggregate(
        &self,
        stream: &StreamId,
        schema_version: u32,
        max_version: Option<u64>,
    ) -> Result<AggregateRead, StoreError> {
        self.load_aggregate_at(stream, schema_version, max_version)
            .await
    }

    async fn record_command(
        &self,
        record: &CommandRecord,
    ) -> Result<Option<CommandRecord>, StoreError> {
        self.writable("a command record")?;
        let tenant = self.scope("a command record")?;
        let (outcome, message): (i16, Option<std::borrow::Cow<'_, str>>) = match &record.outcome {
            CommandOutcome::Appended => (0, None),
            CommandOutcome::NoEvents => (1, None),
            CommandOutcome::Rejected { message } => (2, Some(storable_message(message))),
        };
        let message = message.as_deref();
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&self.inner.sql.record_command)
            .await
            .map_err(backend)?;
        // A record that lost a race reads the winner; one that is rolled back meanwhile
        // (rows are never removed otherwise) lets the next try write.
        let stream = record.stream_id.as_str();
        let version = clamp(record.version);
        let first_id = factum::store::derived_event_id(record.command_id, 0);
        for _ in 0..TRANSIENT_RETRIES {
            let row = self
                .scoped(
                    &client,
                    tenant,
                    client.query_one(
                        &statement,
                        &[
                            &record.command_id,
                            &stream,
                            &version,
                            &outcome,
                            &message,
                            &first_id,
                        ],
                    ),
                )
                .await
                .map_err(backend)?
                .map_err(backend)?;
            if row.try_get::<_, bool>(0).map_err(backend)? {
                return Ok(None);
            }
            if let Some(first) = self
                .command_record_with(&client, tenant, record.command_id)
                .await?
            {
                return Ok(Some(first));
            }
        }
        // In a multi-tenant store, a row this tenant may not see also reads as none.
        let why = match tenant {
            Some(_) => "its row kept changing, or the command id is another tenant's",
            None => "its row kept changing",
        };
        Err(StoreError::Backend(
            format!(
                "could not record the outcome of command {} in stream `{}`: {why}",
                record.command_id, record.stream_id
            )
            .into(),
        ))
    }

    async fn command_record(&self, command_id: Uuid) -> Result<Option<CommandRecord>, StoreError> {
        let tenant = self.scope("a command lookup")?;
        let client = self.read_client().await?;
        self.command_record_with(&client, tenant, command_id).await
    }

    /// The head watcher's hint; none for a multi-tenant store, whose listener, bound to no
    /// tenant, sees no events (its subscribers poll).
    fn head_hint(&self) -> Option<watch::Receiver<u64>> {
        (!self.inner.config.multi_tenant).then(|| self.watch_head())
    }

    /// A handle of a multi-tenant store ([`PgConfig::multi_tenant`]) bound to `tenant`:
    /// each of its statements runs in a transaction that binds `tenant` first, and
    /// row-level security lets it see and write only `tenant`'s rows.
    fn tenant(&self, tenant: &TenantId) -> Result<Self, StoreError> {
        if !self.inner.config.multi_tenant {
            return Err(TenantError::NotMultiTenant.into());
        }
        Ok(Self {
            inner: Arc::clone(&self.inner),
            tenant: Some(tenant.clone()),
        })
    }

    fn bound_tenant(&self) -> Option<&TenantId> {
        self.tenant.as_ref()
    }

    /// One head query, without waiting for appends still committing: the readable head,
    /// the last committed position and, when events are committed above the readable head,
    /// the oldest transaction that may write to this database and still runs
    /// (`docs/adr/02-postgres-ordering.md`).
    ///
    /// On a standby handle ([`PgStore::standby`]), the readable head is the standby's and the
    /// committed one the primary's, so a standby behind the primary shows as a held-back
    /// head (the lag of the runners) with, as blocker, the primary's session holding the
    /// order back if any. When the primary cannot be reached, the standby's own head.
    async fn head_status(&self) -> Result<HeadStatus, StoreError> {
        let tenant = self.scope("the head status")?;
        let client = self.read_client().await?;
        let head = self.head(&client, tenant).await?;
        drop(client);
        if self.inner.standby.is_none() {
            return Ok(HeadStatus::held_back(head.safe, head.visible, head.blocker));
        }
        let primary = match self.client().await {
            Ok(client) => self.head(&client, tenant).await,
            Err(e) => Err(e),
        };
        match primary {
            Ok(primary) => Ok(HeadStatus::held_back(
                head.safe,
                head.visible.max(primary.visible),
                primary.blocker.or(head.blocker),
            )),
            Err(error) => {
                tracing::warn!(%error, "no head from the primary; the standby's head only");
                Ok(HeadStatus::held_back(head.safe, head.visible, head.blocker))
            }
        }
    }
}
