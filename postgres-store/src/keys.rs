//! The data keys of crypto-shredding in a table of the store's schema (`data_keys`, migration
//! 6), wrapped by a master key.

use std::collections::HashMap;
use std::sync::Arc;

use deadpool_postgres::Pool;
use factum::personal::{DataKey, Forgotten, KeyState, KeyStore, KeyStoreError, MasterKey};
use quick_cache::sync::Cache;

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
}

struct Inner {
    pool: Pool,
    master: MasterKey,
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
    /// The keys of `store`'s schema, on its connection pool, wrapped by `master`.
    pub fn new(store: &PgStore, master: MasterKey) -> Self {
        let table = format!("{}.data_keys", store.config().schema.quoted());
        Self {
            inner: Arc::new(Inner {
                pool: store.pool().clone(),
                master,
                unwrapped: Cache::new(UNWRAPPED_KEYS),
                select: format!("SELECT wrapped_key FROM {table} WHERE subject = $1"),
                select_many: format!(
                    "SELECT subject, wrapped_key FROM {table} WHERE subject = ANY($1)"
                ),
                insert: format!(
                    "INSERT INTO {table} (subject, wrapped_key) VALUES ($1, $2) \
                     ON CONFLICT (subject) DO NOTHING"
                ),
                forget: format!(
                    "UPDATE {table} SET wrapped_key = NULL, forgotten_at = now() \
                     WHERE subject = $1 AND wrapped_key IS NOT NULL"
                ),
            }),
        }
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
        let client = self.inner.pool.get().await.map_err(backend)?;
        // Read, else insert a fresh key; a concurrent first writer wins the insert and the
        // second read (a new snapshot) sees its key.
        for _ in 0..2 {
            if let Some(row) = client
                .query_opt(&self.inner.select, &[&subject])
                .await
                .map_err(backend)?
            {
                let wrapped: Option<Vec<u8>> = row.try_get(0).map_err(backend)?;
                return self.state(subject, wrapped);
            }
            let key = DataKey::generate();
            let wrapped = self.inner.master.wrap(subject, &key);
            let inserted = client
                .execute(&self.inner.insert, &[&subject, &wrapped])
                .await
                .map_err(backend)?;
            if inserted == 1 {
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
        let client = self.inner.pool.get().await.map_err(backend)?;
        let rows = client
            .query(&self.inner.select_many, &[&subjects])
            .await
            .map_err(backend)?;
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
        self.inner.unwrapped.remove(subject);
        let client = self.inner.pool.get().await.map_err(backend)?;
        let destroyed = client
            .execute(&self.inner.forget, &[&subject])
            .await
            .map_err(backend)?;
        if destroyed == 1 {
            return Ok(Forgotten::Destroyed);
        }
        let known = client
            .query_opt(&self.inner.select, &[&subject])
            .await
            .map_err(backend)?;
        match known {
            Some(_) => Ok(Forgotten::Already),
            None => Err(KeyStoreError::UnknownSubject {
                subject: subject.to_owned(),
            }),
        }
    }
}
