//! The data keys of crypto-shredding in a table of the store's schema (`data_keys`, migration
//! 6), wrapped by a master key.

use std::collections::HashMap;
use std::sync::Arc;

use deadpool_postgres::{Object, Pool};
use factum::personal::{DataKey, Forgotten, KeyState, KeyStore, KeyStoreError, MasterKey};
use factum::tenant::{TenantError, TenantId};
use quick_cache::sync::Cache;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::store::PgStore;

/// How many unwrapped data keys a [`PgKeyStore`] keeps in memory.
const UNWRAPPED_KEYS: usize = 100_000;

/// A [`KeyStore`] in the table `data_keys` of a [`PgStore`]'s schema (created by
/// [`PgStore::migrate`]).
///
/// Each subject's data key is stored wrapped by the [`MasterKey`] (encrypted and bound to the
/// subject), so that neither the table nor a backup of it, nor the old row versions an
/// `UPDATE` leaves until `VACUUM`, yields a key without the master key. Forgetting a subject
/// sets its key to null and keeps the row as a tombstone.
///
/// Every lookup reads the table; what it skips is unwrapping again a key it unwrapped before
/// from the same bytes (kept in memory for up to 100,000 subjects, and dropped as soon as a
/// lookup finds the subject forgotten).
///
/// On a multi-tenant store the table is under the events' row-level security, a key row
/// belonging to the tenant bound to the transaction that wrote it. A key store built on a
/// tenant's handle ([`EventStore::tenant`](factum::EventStore::tenant)), or bound with
/// [`KeyStore::tenant`] (as [`Shredding`](factum::personal::Shredding) does), binds that
/// tenant in each of its statements, as the store does; another tenant's session, or one
/// without a tenant, reads none of its rows. Bound to no tenant, it refuses every call with
/// [`TenantError::Required`].
///
/// ```no_run
/// # async fn demo(store: factum_postgres::PgStore) -> Result<(), Box<dyn std::error::Error>> {
/// use factum::personal::{MasterKey, PersonalSchema, Shredding};
/// use factum_postgres::PgKeyStore;
///
/// let master = MasterKey::from_base64(&std::env::var("FACTUM_MASTER_KEY")?)?;
/// let keys = PgKeyStore::new(&store, master);
/// let shredding = Shredding::new(store, keys, PersonalSchema::new());
/// # let _ = shredding;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PgKeyStore {
    inner: Arc<Inner>,
    /// The tenant its statements are bound to, in a multi-tenant store.
    tenant: Option<TenantId>,
}

struct Inner {
    pool: Pool,
    master: MasterKey,
    multi_tenant: bool,
    /// Unwrapped keys by subject, with the wrapped bytes they came from: a key is reused only
    /// while the table returns the same wrapped bytes, and dropped when it returns a
    /// tombstone, so the per-batch lookup still decides.
    unwrapped: Cache<String, (Arc<[u8]>, DataKey)>,
    select: String,
    select_many: String,
    insert: String,
    forget: String,
}

impl std::fmt::Debug for PgKeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgKeyStore").finish_non_exhaustive()
    }
}

fn backend(error: impl std::error::Error + Send + Sync + 'static) -> KeyStoreError {
    KeyStoreError::Backend(Box::new(error))
}

impl PgKeyStore {
    /// The keys of `store`'s schema, on its connection pool, wrapped by `master`; on a
    /// tenant's handle of a multi-tenant store, that tenant's keys.
    pub fn new(store: &PgStore, master: MasterKey) -> Self {
        let table = format!("{}.data_keys", store.config().schema.quoted());
        Self {
            tenant: factum::EventStore::bound_tenant(store).cloned(),
            inner: Arc::new(Inner {
                pool: store.pool().clone(),
                master,
                multi_tenant: store.config().multi_tenant,
                unwrapped: Cache::new(UNWRAPPED_KEYS),
                select: format!("SELECT wrapped_key FROM {table} WHERE subject = $1"),
                // A join with the array rather than `subject = ANY($1)`, which a generic
                // plan evaluates as one comparison per row and subject.
                select_many: format!(
                    "SELECT k.subject, k.wrapped_key \
                     FROM unnest($1::text[]) AS s(subject) JOIN {table} k USING (subject)"
                ),
                insert: format!(
                    "INSERT INTO {table} (subject, wrapped_key) VALUES ($1, $2) \
                     ON CONFLICT ON CONSTRAINT data_keys_pkey DO NOTHING RETURNING 1"
                ),
                forget: format!(
                    "UPDATE {table} SET wrapped_key = NULL, forgotten_at = now() \
                     WHERE subject = $1 AND wrapped_key IS NOT NULL RETURNING 1"
                ),
            }),
        }
    }

    /// The tenant of this handle's statements: none for a single-tenant store, or the
    /// refusal of `operation` by a multi-tenant key store bound to none.
    fn scope(&self, operation: &'static str) -> Result<Option<&TenantId>, KeyStoreError> {
        match (&self.tenant, self.inner.multi_tenant) {
            (_, false) => Ok(None),
            (Some(tenant), true) => Ok(Some(tenant)),
            (None, true) => Err(TenantError::Required { operation }.into()),
        }
    }

    /// Runs `sql` with `params` in one round trip, bound to `tenant`.
    async fn query(
        client: &Object,
        tenant: Option<&TenantId>,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, KeyStoreError> {
        // Prepared before the binding's pipeline (see `tenancy::bound`).
        let statement = client.prepare_cached(sql).await.map_err(backend)?;
        crate::tenancy::bound(client, tenant, client.query(&statement, params))
            .await
            .map_err(backend)?
            .map_err(backend)
    }

    fn state(&self, subject: &str, wrapped: Option<Vec<u8>>) -> Result<KeyState, KeyStoreError> {
        let Some(wrapped) = wrapped else {
            self.inner.unwrapped.remove(subject);
            return Ok(KeyState::Forgotten);
        };
        if let Some((cached, key)) = self.inner.unwrapped.get(subject) {
            if *cached == *wrapped {
                return Ok(KeyState::Active(key));
            }
        }
        let key = self.inner.master.unwrap(subject, &wrapped)?;
        self.inner
            .unwrapped
            .insert(subject.to_owned(), (wrapped.into(), key.clone()));
        Ok(KeyState::Active(key))
    }
}

impl KeyStore for PgKeyStore {
    async fn key(&self, subject: &str) -> Result<KeyState, KeyStoreError> {
        if subject.is_empty() {
            return Err(KeyStoreError::EmptySubject);
        }
        let tenant = self.scope("a data key")?;
        let client = self.inner.pool.get().await.map_err(backend)?;
        // Read, else insert a fresh key; a concurrent first writer wins the insert and the
        // second read (a new snapshot) sees its key.
        for _ in 0..2 {
            let rows = Self::query(&client, tenant, &self.inner.select, &[&subject]).await?;
            if let Some(row) = rows.first() {
                let wrapped: Option<Vec<u8>> = row.try_get(0).map_err(backend)?;
                return self.state(subject, wrapped);
            }
            let key = DataKey::generate();
            let wrapped = self.inner.master.wrap(subject, &key);
            let inserted =
                Self::query(&client, tenant, &self.inner.insert, &[&subject, &wrapped]).await?;
            if inserted.len() == 1 {
                return Ok(KeyState::Active(key));
            }
        }
        Err(KeyStoreError::Backend(
            format!("the key row of subject `{subject}` was neither read nor inserted").into(),
        ))
    }

    async fn lookup(
        &self,
        subjects: &[String],
    ) -> Result<HashMap<String, KeyState>, KeyStoreError> {
        let tenant = self.scope("a data key lookup")?;
        let client = self.inner.pool.get().await.map_err(backend)?;
        let rows = Self::query(&client, tenant, &self.inner.select_many, &[&subjects]).await?;
        let mut found = HashMap::with_capacity(rows.len());
        for row in rows {
            let subject: String = row.try_get(0).map_err(backend)?;
            let wrapped: Option<Vec<u8>> = row.try_get(1).map_err(backend)?;
            let state = self.state(&subject, wrapped)?;
            found.insert(subject, state);
        }
        Ok(found)
    }

    async fn forget(&self, subject: &str) -> Result<Forgotten, KeyStoreError> {
        let tenant = self.scope("forgetting a subject")?;
        self.inner.unwrapped.remove(subject);
        let client = self.inner.pool.get().await.map_err(backend)?;
        let destroyed = Self::query(&client, tenant, &self.inner.forget, &[&subject]).await?;
        if destroyed.len() == 1 {
            return Ok(Forgotten::Destroyed);
        }
        let known = Self::query(&client, tenant, &self.inner.select, &[&subject]).await?;
        match known.first() {
            Some(_) => Ok(Forgotten::Already),
            None => Err(KeyStoreError::UnknownSubject {
                subject: subject.to_owned(),
            }),
        }
    }

    fn tenant(&self, tenant: &TenantId) -> Result<Self, KeyStoreError> {
        if !self.inner.multi_tenant {
            return Err(TenantError::NotMultiTenant.into());
        }
        Ok(Self {
            inner: Arc::clone(&self.inner),
            tenant: Some(tenant.clone()),
        })
    }
}
