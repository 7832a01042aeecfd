//! Tenants: the example run for several tenants at once, on a multi-tenant store.
//!
//! Each tenant gets an [`App`] of its own, built on the store's handle bound to that tenant
//! ([`EventStore::tenant`]): its commands, loads and history see only the tenant's streams,
//! its read models hold only the tenant's rows, and its projections and fulfillment process
//! run per tenant, under names of the tenant's (`order_list@acme`), as
//! `docs/adr/14-tenants.md` decided. [`Tenants`] starts the apps of a configured list of
//! tenants at start-up, so their read models catch up after a restart, and the app of any
//! other tenant on its first request, once. `docs/adr/16-example-tenants.md` records why.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use factum::coordination::{Coordination, ParkedEvent};
use factum::personal::{MasterKey, MemoryKeyStore, Shredding};
use factum::process::Route;
use factum::projection::{HandleContext, ResetContext};
use factum::tenant::TenantId;
use factum::{
    BoxError, Effects, EventStore, MemoryCoordination, MemoryStore, ProcessManager, Projection,
    RecordedEvent, Rejection,
};
use factum_postgres::{PgKeyStore, PgProjection, PgStore, PgTransaction};

use crate::app::{App, AppError, AppOptions, HealthReport, MemoryApp, PgApp};
use crate::pg_read_model::PgReadModels;

/// The name of a projection or process manager `base` in the app of `tenant`:
/// `base@tenant`, or `base` itself without a tenant. The name keys checkpoints, leases,
/// dead letters and process instances, which tenants' workers must not share.
pub fn worker_name(base: &str, tenant: Option<&TenantId>) -> String {
    match tenant {
        Some(tenant) => format!("{base}@{tenant}"),
        None => base.to_owned(),
    }
}

// ANCHOR: named
/// A projection or process manager under another name: the same worker, run for one
/// tenant as `name@tenant` (see [`worker_name`]).
#[derive(Clone, Debug)]
pub struct Named<T> {
    inner: T,
    name: String,
}

impl<T> Named<T> {
    /// `inner`, named `name`.
    pub fn new(inner: T, name: String) -> Self {
        Self { inner, name }
    }
}
// ANCHOR_END: named

impl<P: Projection> Projection for Named<P> {
    fn name(&self) -> &str {
        &self.name
    }
    fn event_types(&self) -> Vec<String> {
        self.inner.event_types()
    }
    fn categories(&self) -> Vec<String> {
        self.inner.categories()
    }
    async fn handle(&self, event: &RecordedEvent) -> Result<(), BoxError> {
        self.inner.handle(event).await
    }
    async fn handle_in(
        &self,
        event: &RecordedEvent,
        context: &HandleContext,
    ) -> Result<(), BoxError> {
        self.inner.handle_in(event, context).await
    }
    async fn handle_batch_in(
        &self,
        events: &[&RecordedEvent],
        context: &HandleContext,
    ) -> Result<bool, BoxError> {
        self.inner.handle_batch_in(events, context).await
    }
    async fn reset(&self) -> Result<(), BoxError> {
        self.inner.reset().await
    }
    async fn reset_in(&self, context: &ResetContext) -> Result<bool, BoxError> {
        self.inner.reset_in(context).await
    }
}

impl<P: PgProjection> PgProjection for Named<P> {
    fn name(&self) -> &str {
        &self.name
    }
    fn event_types(&self) -> Vec<String> {
        self.inner.event_types()
    }
    fn categories(&self) -> Vec<String> {
        self.inner.categories()
    }
    async fn handle(&self, tx: &PgTransaction<'_>, event: &RecordedEvent) -> Result<(), BoxError> {
        self.inner.handle(tx, event).await
    }
    async fn handle_batch(
        &self,
        tx: &PgTransaction<'_>,
        events: &[&RecordedEvent],
    ) -> Result<(), BoxError> {
        self.inner.handle_batch(tx, events).await
    }
    async fn reset(&self, tx: &PgTransaction<'_>) -> Result<(), BoxError> {
        self.inner.reset(tx).await
    }
}

impl<M: ProcessManager> ProcessManager for Named<M> {
    type State = M::State;
    type Command = M::Command;

    fn name(&self) -> &str {
        &self.name
    }
    fn event_types(&self) -> Vec<String> {
        self.inner.event_types()
    }
    fn route(&self, event: &RecordedEvent) -> Result<Route, BoxError> {
        self.inner.route(event)
    }
    fn handle(
        &self,
        state: &mut Self::State,
        event: &RecordedEvent,
    ) -> Result<Effects<Self::Command>, BoxError> {
        self.inner.handle(state, event)
    }
    fn on_rejected(
        &self,
        state: &mut Self::State,
        command: &Self::Command,
        error: &Rejection,
    ) -> Result<Effects<Self::Command>, BoxError> {
        self.inner.on_rejected(state, command, error)
    }
    fn on_timeout(
        &self,
        key: &str,
        state: &mut Self::State,
        name: &str,
    ) -> Result<Effects<Self::Command>, BoxError> {
        self.inner.on_timeout(key, state, name)
    }
}

/// Starts the app of one tenant on the tenant's handle of the store.
type Start<S, C> = fn(S, &AppOptions) -> App<S, C>;

// ANCHOR: tenants
/// The apps of the tenants of a multi-tenant store, one per tenant, started on demand.
///
/// [`app`](Self::app) returns a tenant's app, starting it on the store's handle bound to the
/// tenant the first time: two requests of a new tenant arriving together start it once.
/// Health and dead letters cover every started tenant.
pub struct Tenants<S, C> {
    store: S,
    options: AppOptions,
    start: Start<S, C>,
    running: Mutex<BTreeMap<TenantId, Arc<App<S, C>>>>,
}
// ANCHOR_END: tenants

/// Every tenant's app in memory, on one multi-tenant `MemoryStore`.
pub type MemoryTenants = Tenants<Shredding<MemoryStore, MemoryKeyStore>, MemoryCoordination>;

/// Every tenant's app on one multi-tenant `PgStore`.
pub type PgTenants = Tenants<Shredding<PgStore, PgKeyStore>, factum_postgres::PgCoordination>;

impl MemoryTenants {
    /// The tenants of a new multi-tenant in-memory store (keys in memory), the apps of
    /// `tenants` started now. Must be called within a tokio runtime.
    pub fn in_memory(options: &AppOptions, tenants: &[TenantId]) -> Result<Self, AppError> {
        let store = Shredding::new(
            MemoryStore::multi_tenant(),
            MemoryKeyStore::new(),
            crate::app::personal_schema(),
        );
        let this = Self::new(store, options, MemoryApp::start_in_memory);
        this.start_all(tenants)?;
        Ok(this)
    }
}

impl PgTenants {
    /// The tenants of `store`, a migrated multi-tenant `PgStore`
    /// ([`PgConfig::multi_tenant`](factum_postgres::PgConfig::multi_tenant)): creates the
    /// read model tables in their multi-tenant layout when missing, then starts the apps of
    /// `tenants`. Personal fields are encrypted with data keys kept per tenant and subject
    /// in the store's schema, wrapped by `master`. Must be called within a tokio runtime.
    pub async fn on_postgres(
        store: PgStore,
        master: MasterKey,
        options: &AppOptions,
        tenants: &[TenantId],
    ) -> Result<Self, AppError> {
        if !store.config().multi_tenant {
            return Err(AppError::BadRequest(
                "the store is not multi-tenant: connect it with PgConfig::multi_tenant(true)"
                    .into(),
            ));
        }
        PgReadModels::new(&store)
            .create_tables()
            .await
            .map_err(|e| AppError::Internal(format!("creating the read model tables: {e}")))?;
        let keys = PgKeyStore::new(&store, master);
        let store = Shredding::new(store, keys, crate::app::personal_schema());
        let this = Self::new(store, options, PgApp::start_on_postgres);
        this.start_all(tenants)?;
        Ok(this)
    }
}

impl<S: EventStore, C: Coordination> Tenants<S, C> {
    fn new(store: S, options: &AppOptions, start: Start<S, C>) -> Self {
        Self {
            store,
            options: options.clone(),
            start,
            running: Mutex::new(BTreeMap::new()),
        }
    }

    fn running(&self) -> std::sync::MutexGuard<'_, BTreeMap<TenantId, Arc<App<S, C>>>> {
        // The map stays consistent whatever panicked while it was locked.
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn start_all(&self, tenants: &[TenantId]) -> Result<(), AppError> {
        for tenant in tenants {
            self.app(tenant)?;
        }
        Ok(())
    }

    /// The unbound multi-tenant store.
    pub fn store(&self) -> &S {
        &self.store
    }

    // ANCHOR: app_of
    /// The app of `tenant`, started on the store's handle bound to it when this is the
    /// tenant's first call. Starting only spawns the workers, under the lock, so concurrent
    /// first calls start one app.
    pub fn app(&self, tenant: &TenantId) -> Result<Arc<App<S, C>>, AppError> {
        let mut running = self.running();
        if let Some(app) = running.get(tenant) {
            return Ok(Arc::clone(app));
        }
        let handle = self
            .store
            .tenant(tenant)
            .map_err(|e| AppError::BadRequest(format!("tenant `{tenant}`: {e}")))?;
        let app = Arc::new((self.start)(handle, &self.options));
        tracing::info!(%tenant, "started the tenant's workers");
        running.insert(tenant.clone(), Arc::clone(&app));
        Ok(app)
    }
    // ANCHOR_END: app_of

    /// The tenants whose apps run, in order.
    pub fn started(&self) -> Vec<TenantId> {
        self.running().keys().cloned().collect()
    }

    fn apps(&self) -> Vec<Arc<App<S, C>>> {
        self.running().values().cloned().collect()
    }

    /// The workers of every started tenant (named `name@tenant`), and what is wrong with
    /// any of them.
    pub fn health_report(&self, stalled_after: Duration) -> HealthReport {
        let mut report = HealthReport {
            healthy: true,
            workers: Vec::new(),
            problems: Vec::new(),
        };
        for app in self.apps() {
            let one = app.health_report(stalled_after);
            report.healthy &= one.healthy;
            report.workers.extend(one.workers);
            report.problems.extend(one.problems);
        }
        report
    }

    /// The events every started tenant's read models parked (their projections named
    /// `name@tenant`).
    pub async fn dead_letters(&self) -> Result<Vec<ParkedEvent>, AppError> {
        let mut parked = Vec::new();
        for app in self.apps() {
            parked.extend(app.dead_letters().await?);
        }
        Ok(parked)
    }

    /// Asks for every started tenant's parked events to be handled again.
    pub async fn replay_dead_letters(&self) -> Result<usize, AppError> {
        let mut marked = 0;
        for app in self.apps() {
            marked += app.replay_dead_letters().await?;
        }
        Ok(marked)
    }

    /// Waits until every started tenant's workers have handled every event of the tenant.
    pub async fn settle(&self) -> Result<(), AppError> {
        for app in self.apps() {
            app.settle().await?;
        }
        Ok(())
    }

    /// Stops every tenant's workers gracefully; those of an app still in use elsewhere are
    /// aborted when its last user drops it.
    pub async fn shutdown(self) -> Result<(), AppError> {
        let running = std::mem::take(&mut *self.running());
        for (_, app) in running {
            if let Ok(app) = Arc::try_unwrap(app) {
                app.shutdown().await?;
            }
        }
        Ok(())
    }
}

impl<S, C> std::fmt::Debug for Tenants<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let started: Vec<TenantId> = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        f.debug_struct("Tenants")
            .field("started", &started)
            .finish_non_exhaustive()
    }
}
