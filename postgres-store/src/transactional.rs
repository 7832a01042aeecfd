//! Transactional projections: read models in the store's database, updated in the same
//! transaction that moves the checkpoint, so a crash at any point neither loses nor repeats
//! an event (effectively-once, where plain projections are at-least-once).

use std::future::Future;
use std::sync::Arc;

use crate::config::SchemaName;
use crate::sql::render;
use crate::{PgStore, PgTransaction};
use deadpool_postgres::Pool;
use factum::coordination::{CoordinationError, Lease};
use factum::projection::{HandleContext, ResetContext};
use factum::{BoxError, Projection, RecordedEvent};

/// A projection whose read model lives in the store's database. Its handler gets the
/// transaction that will also save the checkpoint, a [`PgTransaction`]: its `search_path` is
/// the store's schema (then `public`), so the handler's SQL names its tables plainly, and its
/// `execute`/`query` methods prepare each distinct SQL text once per transaction.
///
/// Run it wrapped in [`Transactional`], in a `factum::projection::ProjectionRunner` whose checkpoints
/// are the same database's ([`PgCoordination`](crate::PgCoordination)).
pub trait PgProjection: Send + Sync + 'static {
    /// The projection's name (the key of its checkpoints and leases).
    fn name(&self) -> &str;

    /// The stored event types it handles (all when empty).
    fn event_types(&self) -> Vec<String> {
        Vec::new()
    }

    /// Only events of streams in these categories (all when empty).
    fn categories(&self) -> Vec<String> {
        Vec::new()
    }

    /// Updates the read model for `event` inside `tx`. An error rolls the transaction back
    /// and is retried per the projection's failure policy.
    fn handle(
        &self,
        tx: &PgTransaction<'_>,
        event: &RecordedEvent,
    ) -> impl Future<Output = Result<(), BoxError>> + Send;

    /// Updates the read model for several events, in position order, inside `tx`: the events
    /// of one batch, which [`Transactional`] handles in one transaction (or a single event
    /// when it handles them one by one). By default, calls [`handle`](Self::handle) for each
    /// event; the statements `handle` runs through `tx` are prepared once for the whole batch
    /// already. Override it to write a batch in fewer statements. An error rolls the whole
    /// transaction back.
    fn handle_batch(
        &self,
        tx: &PgTransaction<'_>,
        events: &[&RecordedEvent],
    ) -> impl Future<Output = Result<(), BoxError>> + Send {
        async move {
            for event in events {
                self.handle(tx, event).await?;
            }
            Ok(())
        }
    }

    /// Empties the read model inside `tx`, before a rebuild. In a runner, `tx` also removes
    /// the projection's parked events and sets its checkpoints to 0, so an error here (or a
    /// crash before the commit) leaves the old read model, dead letters and checkpoints.
    fn reset(&self, tx: &PgTransaction<'_>) -> impl Future<Output = Result<(), BoxError>> + Send {
        let _ = tx;
        async { Ok(()) }
    }
}

/// Runs a [`PgProjection`] as a `factum::Projection`: the events of a batch in one
/// transaction that also saves the checkpoint at the last event's position, with the lease's
/// fence.
///
/// When that transaction fails (a handler error, a lost connection), it is rolled back and
/// the runner handles the batch's events one by one, each in a transaction of its own with
/// its checkpoint, so the failure policy retries and parks single events. Either way a crash
/// at any point neither loses nor repeats an event. One transaction per batch costs one
/// commit (one `fsync`) per batch instead of one per event;
/// [`per_event_transactions`](Self::per_event_transactions) turns it off (for example for
/// handlers that lock rows other writers wait for).
#[derive(Debug)]
pub struct Transactional<P> {
    projection: P,
    pool: Pool,
    schema: SchemaName,
    sql: Arc<Sql>,
    batched: bool,
    /// The tenant of the store's handle, bound in each transaction.
    tenant: Option<factum::tenant::TenantId>,
}

#[derive(Debug)]
struct Sql {
    save: String,
    fence: String,
    clear_dead_letters: String,
}

impl<P: PgProjection> Transactional<P> {
    /// Wraps `projection`, on `store`'s pool and schema (whose checkpoints table
    /// [`PgCoordination`](crate::PgCoordination) uses).
    ///
    /// On a tenant's handle of a multi-tenant store
    /// ([`EventStore::tenant`](factum::EventStore::tenant)), each of its transactions binds
    /// that tenant first, so the handler's writes to read-model tables given
    /// [`tenant_policy`](crate::tenant_policy) land under the tenant of the events it handles
    /// (the handle's: the runner reads no other tenant's). Name such a projection per tenant:
    /// its name keys its checkpoints.
    pub fn new(store: &PgStore, projection: P) -> Self {
        let schema = &store.config().schema;
        Self {
            projection,
            pool: store.pool().clone(),
            schema: schema.clone(),
            sql: Arc::new(Sql {
                save: render(include_str!("coordination/checkpoint_save.sql"), schema),
                fence: render(include_str!("coordination/checkpoint_load.sql"), schema),
                clear_dead_letters: render(
                    include_str!("coordination/dead_letter_clear.sql"),
                    schema,
                ),
            }),
            batched: true,
            tenant: factum::EventStore::bound_tenant(store).cloned(),
        }
    }

    /// Commits after every event instead of once per batch.
    #[must_use]
    pub fn per_event_transactions(mut self) -> Self {
        self.batched = false;
        self
    }

    /// The wrapped projection.
    pub fn inner(&self) -> &P {
        &self.projection
    }

    /// Begins a transaction on `client` in the store's schema.
    async fn begin<'c>(
        &self,
        client: &'c mut deadpool_postgres::Client,
    ) -> Result<PgTransaction<'c>, BoxError> {
        let tx = PgTransaction::begin(client, &self.schema)
            .await
            .map_err(boxed)?;
        if let Some(tenant) = &self.tenant {
            tx.bind_tenant(tenant).await.map_err(boxed)?;
        }
        Ok(tx)
    }

    /// Handles `events` and saves the checkpoint at the last one's position with `lease`'s
    /// fence, in one transaction.
    async fn in_transaction(
        &self,
        events: &[&RecordedEvent],
        lease: &Lease,
    ) -> Result<(), BoxError> {
        let Some(last) = events.last() else {
            return Ok(());
        };
        let mut client = self.pool.get().await.map_err(boxed)?;
        let tx = self.begin(&mut client).await?;
        self.projection.handle_batch(&tx, events).await?;
        self.save_checkpoint(&tx, lease, last.position).await?;
        tx.commit().await.map_err(boxed)
    }

    /// Saves the checkpoint of `lease`'s partition at `position` inside `tx`, with the
    /// lease's fence; [`CoordinationError::Fenced`] when the lease was taken over (then the
    /// caller drops `tx`, which rolls it back).
    async fn save_checkpoint(
        &self,
        tx: &PgTransaction<'_>,
        lease: &Lease,
        position: u64,
    ) -> Result<(), BoxError> {
        let partition = i32::try_from(lease.partition)
            .map_err(|_| out_of_range("partition", lease.partition.into()))?;
        let fence = i64::try_from(lease.fence).map_err(|_| out_of_range("fence", lease.fence))?;
        let position = i64::try_from(position).map_err(|_| out_of_range("position", position))?;
        // The runtime's statements name their schema: cached for the connection's lifetime.
        let tx = tx.pooled();
        let save = tx.prepare_cached(&self.sql.save).await.map_err(boxed)?;
        let saved = tx
            .execute(&save, &[&lease.name, &partition, &fence, &position])
            .await
            .map_err(boxed)?;
        if saved != 1 {
            let current = tx
                .query_opt(&self.sql.fence, &[&lease.name, &partition])
                .await
                .map_err(boxed)?
                .map(|row| row.try_get::<_, i64>("fence"))
                .transpose()
                .map_err(boxed)?
                .map_or(0, |f| u64::try_from(f).unwrap_or(0));
            return Err(Box::new(CoordinationError::Fenced {
                name: lease.name.clone(),
                partition: lease.partition,
                fence: lease.fence,
                current,
            }));
        }
        Ok(())
    }
}

fn boxed<E: std::error::Error + Send + Sync + 'static>(error: E) -> BoxError {
    Box::new(error)
}

fn out_of_range(what: &str, value: u64) -> BoxError {
    format!("{what} {value} does not fit the checkpoints table").into()
}

impl<P: PgProjection> Projection for Transactional<P> {
    fn name(&self) -> &str {
        self.projection.name()
    }

    fn event_types(&self) -> Vec<String> {
        self.projection.event_types()
    }

    fn categories(&self) -> Vec<String> {
        self.projection.categories()
    }

    /// Outside a runner (no lease): the handler in a transaction of its own, without a
    /// checkpoint.
    async fn handle(&self, event: &RecordedEvent) -> Result<(), BoxError> {
        let mut client = self.pool.get().await.map_err(boxed)?;
        let tx = self.begin(&mut client).await?;
        self.projection.handle(&tx, event).await?;
        tx.commit().await.map_err(boxed)
    }

    async fn handle_in(
        &self,
        event: &RecordedEvent,
        context: &HandleContext,
    ) -> Result<(), BoxError> {
        self.in_transaction(&[event], &context.lease).await
    }

    async fn handle_batch_in(
        &self,
        events: &[&RecordedEvent],
        context: &HandleContext,
    ) -> Result<bool, BoxError> {
        if !self.batched {
            return Ok(false);
        }
        self.in_transaction(events, &context.lease).await?;
        Ok(true)
    }

    /// Outside a runner: empties the read model in a transaction of its own.
    async fn reset(&self) -> Result<(), BoxError> {
        let mut client = self.pool.get().await.map_err(boxed)?;
        let tx = self.begin(&mut client).await?;
        self.projection.reset(&tx).await?;
        tx.commit().await.map_err(boxed)
    }

    /// In one transaction: empties the read model ([`PgProjection::reset`]), removes the
    /// projection's parked events and sets every partition's checkpoint to 0 with its lease's
    /// fence. A failure at any point rolls all of it back.
    async fn reset_in(&self, context: &ResetContext) -> Result<bool, BoxError> {
        let name = self.projection.name();
        let mut client = self.pool.get().await.map_err(boxed)?;
        let tx = self.begin(&mut client).await?;
        self.projection.reset(&tx).await?;
        let clear = tx
            .pooled()
            .prepare_cached(&self.sql.clear_dead_letters)
            .await
            .map_err(boxed)?;
        tx.transaction()
            .execute(&clear, &[&name])
            .await
            .map_err(boxed)?;
        for lease in &context.leases {
            self.save_checkpoint(&tx, lease, 0).await?;
        }
        tx.commit().await.map_err(boxed)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests;
