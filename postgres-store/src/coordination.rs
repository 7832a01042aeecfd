//! Checkpoints, leases, members, parked events and process instances in PostgreSQL: the
//! stores the projection and process-manager runtimes of `factum` need, so that workers in
//! several processes share them (migration 3; `docs/adr/04-projections.md`).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::{Object, Pool};
use factum::StreamId;
use factum::coordination::{
    CheckpointStore, CoordinationError, DeadLetterStore, Deadline, InstanceStatus, Lease,
    LeaseStore, ParkedEvent, ProcessInstance, ProcessStore,
};
use factum::store::Payload;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::PgStore;
use crate::sql::render;

/// The checkpoint, lease, dead-letter and process stores on the tables of a [`PgStore`]'s
/// schema. Cloning shares the pool.
///
/// Lease and member expiry use the database's clock, so processes on hosts with drifting
/// clocks still agree on who holds what.
///
/// Made on a tenant's handle of a multi-tenant store
/// ([`EventStore::tenant`](factum::EventStore::tenant)), each of its statements is bound to
/// that tenant, as the store's are: its dead letters and process instances are the tenant's
/// (row-level security covers them, as it does the events), while checkpoints, leases and
/// members, which hold no tenant data, are shared and keyed by name, so a runner per tenant
/// takes a name of the tenant's.
#[derive(Clone, Debug)]
pub struct PgCoordination {
    pool: Pool,
    sql: Arc<Sql>,
    tenant: Option<factum::tenant::TenantId>,
}

#[derive(Debug)]
struct Sql {
    checkpoint_load: String,
    checkpoint_claim: String,
    checkpoint_save: String,
    lease_acquire: String,
    lease_renew: String,
    lease_release: String,
    lease_holder: String,
    member_join: String,
    members: String,
    member_leave: String,
    dead_letter_park: String,
    dead_letter_list: String,
    dead_letter_request_replay: String,
    dead_letter_remove: String,
    dead_letter_clear: String,
    process_load: String,
    process_insert: String,
    process_update: String,
    process_revision: String,
    process_due: String,
    process_with_pending: String,
}

impl PgCoordination {
    /// The coordination stores on `store`'s pool and schema (migrated by
    /// [`PgStore::migrate`]).
    pub fn new(store: &PgStore) -> Self {
        let schema = &store.config().schema;
        let r = |t: &str| render(t, schema);
        let sql = Sql {
            checkpoint_load: r(include_str!("coordination/checkpoint_load.sql")),
            checkpoint_claim: r(include_str!("coordination/checkpoint_claim.sql")),
            checkpoint_save: r(include_str!("coordination/checkpoint_save.sql")),
            lease_acquire: r(include_str!("coordination/lease_acquire.sql")),
            lease_renew: r(include_str!("coordination/lease_renew.sql")),
            lease_release: r(include_str!("coordination/lease_release.sql")),
            lease_holder: r(include_str!("coordination/lease_holder.sql")),
            member_join: r(include_str!("coordination/member_join.sql")),
            members: r(include_str!("coordination/members.sql")),
            member_leave: r(include_str!("coordination/member_leave.sql")),
            dead_letter_park: r(include_str!("coordination/dead_letter_park.sql")),
            dead_letter_list: r(include_str!("coordination/dead_letter_list.sql")),
            dead_letter_request_replay: r(include_str!(
                "coordination/dead_letter_request_replay.sql"
            )),
            dead_letter_remove: r(include_str!("coordination/dead_letter_remove.sql")),
            dead_letter_clear: r(include_str!("coordination/dead_letter_clear.sql")),
            process_load: r(include_str!("coordination/process_load.sql")),
            process_insert: r(include_str!("coordination/process_insert.sql")),
            process_update: r(include_str!("coordination/process_update.sql")),
            process_revision: r(include_str!("coordination/process_revision.sql")),
            process_due: r(include_str!("coordination/process_due.sql")),
            process_with_pending: r(include_str!("coordination/process_with_pending.sql")),
        };
        Self {
            pool: store.pool().clone(),
            sql: Arc::new(sql),
            tenant: factum::EventStore::bound_tenant(store).cloned(),
        }
    }

    async fn client(&self) -> Result<Object, CoordinationError> {
        self.pool.get().await.map_err(backend)
    }

    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, CoordinationError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await.map_err(backend)?;
        crate::tenancy::bound(
            &client,
            self.tenant.as_ref(),
            client.query(&statement, params),
        )
        .await
        .map_err(backend)?
        .map_err(backend)
    }

    async fn execute(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, CoordinationError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await.map_err(backend)?;
        crate::tenancy::bound(
            &client,
            self.tenant.as_ref(),
            client.execute(&statement, params),
        )
        .await
        .map_err(backend)?
        .map_err(backend)
    }

    async fn fence_of(&self, name: &str, partition: i32) -> Result<u64, CoordinationError> {
        let rows = self
            .query(&self.sql.checkpoint_load, &[&name, &partition])
            .await?;
        rows.first().map_or(Ok(0), |row| unsigned(row, "fence"))
    }

    fn fenced(lease: &Lease, current: u64) -> CoordinationError {
        CoordinationError::Fenced {
            name: lease.name.clone(),
            partition: lease.partition,
            fence: lease.fence,
            current,
        }
    }
}

fn backend<E: std::error::Error + Send + Sync + 'static>(error: E) -> CoordinationError {
    CoordinationError::Backend(Box::new(error))
}

fn corrupt(message: String) -> CoordinationError {
    CoordinationError::Backend(message.into())
}

fn json(what: &'static str) -> impl Fn(serde_json::Error) -> CoordinationError {
    move |source| CoordinationError::Json { what, source }
}

fn signed(value: u64, what: &str) -> Result<i64, CoordinationError> {
    i64::try_from(value).map_err(|_| corrupt(format!("{what} {value} does not fit a bigint")))
}

fn partition(value: u32) -> Result<i32, CoordinationError> {
    i32::try_from(value).map_err(|_| corrupt(format!("partition {value} does not fit an integer")))
}

fn millis(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)
}

fn unsigned(row: &Row, column: &str) -> Result<u64, CoordinationError> {
    let value: i64 = row.try_get(column).map_err(backend)?;
    u64::try_from(value).map_err(|_| corrupt(format!("negative {column} {value}")))
}

impl LeaseStore for PgCoordination {
    async fn acquire(
        &self,
        name: &str,
        partition_: u32,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, CoordinationError> {
        let rows = self
            .query(
                &self.sql.lease_acquire,
                &[&name, &partition(partition_)?, &holder, &millis(ttl)],
            )
            .await?;
        rows.first()
            .map(|row| {
                Ok(Lease::new(
                    name,
                    partition_,
                    holder,
                    unsigned(row, "fence")?,
                ))
            })
            .transpose()
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<bool, CoordinationError> {
        let renewed = self
            .execute(
                &self.sql.lease_renew,
                &[
                    &lease.name,
                    &partition(lease.partition)?,
                    &lease.holder,
                    &signed(lease.fence, "fence")?,
                    &millis(ttl),
                ],
            )
            .await?;
        Ok(renewed == 1)
    }

    async fn release(&self, lease: &Lease) -> Result<(), CoordinationError> {
        self.execute(
            &self.sql.lease_release,
            &[
                &lease.name,
                &partition(lease.partition)?,
                &signed(lease.fence, "fence")?,
            ],
        )
        .await?;
        Ok(())
    }

    async fn holder(
        &self,
        name: &str,
        partition_: u32,
    ) -> Result<Option<Lease>, CoordinationError> {
        let rows = self
            .query(&self.sql.lease_holder, &[&name, &partition(partition_)?])
            .await?;
        rows.first()
            .map(|row| {
                let holder: String = row.try_get("holder").map_err(backend)?;
                Ok(Lease::new(
                    name,
                    partition_,
                    holder,
                    unsigned(row, "fence")?,
                ))
            })
            .transpose()
    }

    async fn join(&self, name: &str, member: &str, ttl: Duration) -> Result<(), CoordinationError> {
        self.execute(&self.sql.member_join, &[&name, &member, &millis(ttl)])
            .await?;
        Ok(())
    }

    async fn members(&self, name: &str) -> Result<Vec<String>, CoordinationError> {
        self.query(&self.sql.members, &[&name])
            .await?
            .iter()
            .map(|row| row.try_get("member").map_err(backend))
            .collect()
    }

    async fn leave(&self, name: &str, member: &str) -> Result<(), CoordinationError> {
        self.execute(&self.sql.member_leave, &[&name, &member])
            .await?;
        Ok(())
    }
}

impl CheckpointStore for PgCoordination {
    async fn load(&self, name: &str, partition_: u32) -> Result<u64, CoordinationError> {
        let rows = self
            .query(&self.sql.checkpoint_load, &[&name, &partition(partition_)?])
            .await?;
        rows.first().map_or(Ok(0), |row| unsigned(row, "position"))
    }

    async fn claim(&self, lease: &Lease) -> Result<u64, CoordinationError> {
        let p = partition(lease.partition)?;
        let rows = self
            .query(
                &self.sql.checkpoint_claim,
                &[&lease.name, &p, &signed(lease.fence, "fence")?],
            )
            .await?;
        match rows.first() {
            Some(row) => unsigned(row, "position"),
            None => Err(Self::fenced(lease, self.fence_of(&lease.name, p).await?)),
        }
    }

    async fn save(&self, lease: &Lease, position: u64) -> Result<(), CoordinationError> {
        let p = partition(lease.partition)?;
        let saved = self
            .execute(
                &self.sql.checkpoint_save,
                &[
                    &lease.name,
                    &p,
                    &signed(lease.fence, "fence")?,
                    &signed(position, "position")?,
                ],
            )
            .await?;
        if saved == 1 {
            Ok(())
        } else {
            Err(Self::fenced(lease, self.fence_of(&lease.name, p).await?))
        }
    }
}

fn parked_event(row: &Row) -> Result<ParkedEvent, CoordinationError> {
    let stream: String = row.try_get("stream_id").map_err(backend)?;
    let stream_id = StreamId::parse(&stream)
        .map_err(|e| corrupt(format!("parked event with stream `{stream}`: {e}")))?;
    let reason: String = row.try_get("reason").map_err(backend)?;
    let partition: i32 = row.try_get("partition").map_err(backend)?;
    let mut parked = ParkedEvent::new(
        row.try_get::<_, String>("name").map_err(backend)?,
        u32::try_from(partition).map_err(|_| corrupt(format!("negative partition {partition}")))?,
        unsigned(row, "position")?,
        row.try_get("event_id").map_err(backend)?,
        stream_id,
        row.try_get::<_, String>("event_type").map_err(backend)?,
        serde_json::from_str(&reason).map_err(json("a park reason"))?,
    );
    parked.parked_at = row.try_get("parked_at").map_err(backend)?;
    parked.replay_requested = row.try_get("replay_requested").map_err(backend)?;
    Ok(parked)
}

impl DeadLetterStore for PgCoordination {
    async fn park(&self, event: &ParkedEvent) -> Result<(), CoordinationError> {
        let reason = serde_json::to_string(&event.reason).map_err(json("a park reason"))?;
        self.execute(
            &self.sql.dead_letter_park,
            &[
                &event.name,
                &signed(event.position, "position")?,
                &partition(event.partition)?,
                &event.event_id,
                &event.stream_id.as_str(),
                &event.event_type,
                &reason,
                &event.parked_at,
                &event.replay_requested,
            ],
        )
        .await?;
        Ok(())
    }

    async fn list(&self, name: &str) -> Result<Vec<ParkedEvent>, CoordinationError> {
        let none: Option<i32> = None;
        self.query(&self.sql.dead_letter_list, &[&name, &none])
            .await?
            .iter()
            .map(parked_event)
            .collect()
    }

    async fn list_partition(
        &self,
        name: &str,
        partition_: u32,
    ) -> Result<Vec<ParkedEvent>, CoordinationError> {
        let p = Some(partition(partition_)?);
        self.query(&self.sql.dead_letter_list, &[&name, &p])
            .await?
            .iter()
            .map(parked_event)
            .collect()
    }

    async fn request_replay(
        &self,
        name: &str,
        stream: Option<&StreamId>,
    ) -> Result<usize, CoordinationError> {
        let stream = stream.map(StreamId::as_str);
        let marked = self
            .execute(&self.sql.dead_letter_request_replay, &[&name, &stream])
            .await?;
        Ok(usize::try_from(marked).unwrap_or(usize::MAX))
    }

    async fn remove(&self, name: &str, position: u64) -> Result<(), CoordinationError> {
        self.execute(
            &self.sql.dead_letter_remove,
            &[&name, &signed(position, "position")?],
        )
        .await?;
        Ok(())
    }

    async fn clear(&self, name: &str) -> Result<(), CoordinationError> {
        self.execute(&self.sql.dead_letter_clear, &[&name]).await?;
        Ok(())
    }
}

fn instance(row: &Row) -> Result<ProcessInstance, CoordinationError> {
    let text = |column: &str| -> Result<String, CoordinationError> {
        row.try_get(column).map_err(backend)
    };
    let state = Payload::from_json(text("state")?).map_err(json("a process state"))?;
    let mut instance = ProcessInstance::new(text("key")?, state);
    instance.revision = unsigned(row, "revision")?;
    let active: bool = row.try_get("active").map_err(backend)?;
    instance.status = if active {
        InstanceStatus::Active
    } else {
        InstanceStatus::Completed
    };
    instance.last_position = unsigned(row, "last_position")?;
    instance.correlation_id = row.try_get("correlation_id").map_err(backend)?;
    instance.pending = serde_json::from_str(&text("pending")?).map_err(json("an outbox"))?;
    instance.deadlines = serde_json::from_str(&text("deadlines")?).map_err(json("deadlines"))?;
    Ok(instance)
}

impl ProcessStore for PgCoordination {
    async fn load(
        &self,
        name: &str,
        key: &str,
    ) -> Result<Option<ProcessInstance>, CoordinationError> {
        self.query(&self.sql.process_load, &[&name, &key])
            .await?
            .first()
            .map(instance)
            .transpose()
    }

    async fn save(&self, name: &str, instance: &ProcessInstance) -> Result<u64, CoordinationError> {
        let active = instance.status == InstanceStatus::Active;
        let last_position = signed(instance.last_position, "position")?;
        let pending = serde_json::to_string(&instance.pending).map_err(json("an outbox"))?;
        let deadlines = serde_json::to_string(&instance.deadlines).map_err(json("deadlines"))?;
        let next_deadline: Option<DateTime<Utc>> =
            instance.deadlines.iter().map(|d| d.due_at).min();
        let state = instance.state.as_str();
        let written = if instance.revision == 0 {
            self.execute(
                &self.sql.process_insert,
                &[
                    &name,
                    &instance.key,
                    &active,
                    &last_position,
                    &instance.correlation_id,
                    &state,
                    &pending,
                    &deadlines,
                    &next_deadline,
                ],
            )
            .await?
        } else {
            self.execute(
                &self.sql.process_update,
                &[
                    &name,
                    &instance.key,
                    &signed(instance.revision, "revision")?,
                    &active,
                    &last_position,
                    &instance.correlation_id,
                    &state,
                    &pending,
                    &deadlines,
                    &next_deadline,
                ],
            )
            .await?
        };
        if written == 1 {
            return Ok(instance.revision + 1);
        }
        let rows = self
            .query(&self.sql.process_revision, &[&name, &instance.key])
            .await?;
        let actual = rows
            .first()
            .map_or(Ok(0), |row| unsigned(row, "revision"))?;
        Err(CoordinationError::InstanceConflict {
            name: name.to_owned(),
            key: instance.key.clone(),
            expected: instance.revision,
            actual,
        })
    }

    async fn due(
        &self,
        name: &str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(String, Deadline)>, CoordinationError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.query(&self.sql.process_due, &[&name, &now, &limit])
            .await?
            .iter()
            .map(|row| {
                let key: String = row.try_get("key").map_err(backend)?;
                let deadline: String = row.try_get("deadline").map_err(backend)?;
                let deadline: Deadline =
                    serde_json::from_str(&deadline).map_err(json("a deadline"))?;
                Ok((key, deadline))
            })
            .collect()
    }

    async fn with_pending(&self, name: &str) -> Result<Vec<String>, CoordinationError> {
        self.query(&self.sql.process_with_pending, &[&name])
            .await?
            .iter()
            .map(|row| row.try_get("key").map_err(backend))
            .collect()
    }
}
