//! Crypto-shredding on both stores: personal fields are stored encrypted; after a subject is
//! forgotten its events still decode with the fields erased, its aggregate loads, a
//! projection rebuilds, other subjects are unaffected, and no plain text of it is stored.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use factum::personal::{
    Forgotten, KeyStore, KeyStoreError, MemoryKeyStore, Personal, PersonalData, PersonalError,
    PersonalField, PersonalSchema, Shredding,
};
use factum::prelude::*;
use factum::projection::{ProjectionOptions, ProjectionRunner};
use factum::store::{ReadAll, StreamRead};
use factum::{Error, MemoryStore, Metadata, Repository, StoreError, StreamId};
use factum_postgres::testing::{TestDatabase, fresh_store};
use factum_postgres::{PgConnectOptions, PgKeyStore, PgStore};
use serde::{Deserialize, Serialize};

// ANCHOR: personal_event
#[event]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CustomerRegistered {
    pub customer_id: String,
    #[personal(subject = customer_id)]
    pub name: Personal<String>,
    #[personal(subject = customer_id)]
    pub address: Personal<String>,
    /// Not personal: stays readable after the customer is forgotten.
    pub tier: String,
}
// ANCHOR_END: personal_event

/// Declared by hand, as `#[personal]` generates it.
#[event]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CustomerMoved {
    pub customer_id: String,
    pub address: Personal<String>,
}

impl PersonalData for CustomerMoved {
    const PERSONAL: &'static [PersonalField] = &[PersonalField::new("address", "customer_id")];
}

#[command]
#[derive(Clone, Debug)]
pub struct RegisterV1 {
    #[id]
    pub customer_id: String,
    pub name: String,
    pub address: String,
    pub tier: String,
}

#[command]
#[derive(Clone, Debug)]
pub struct MoveV1 {
    #[id]
    pub customer_id: String,
    pub address: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CustomerError {}

/// A customer; snapshotted after every event, which a shredding store declines to keep.
#[aggregate(category = "customer", snapshot_every = 1, state_version = 1)]
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Customer {
    name: Option<Personal<String>>,
    address: Option<Personal<String>>,
    tier: String,
    moves: u32,
}

#[aggregate]
impl Customer {
    #[handle]
    fn register(&self, c: RegisterV1) -> Result<CustomerRegistered, CustomerError> {
        Ok(CustomerRegistered {
            customer_id: c.customer_id,
            name: c.name.into(),
            address: c.address.into(),
            tier: c.tier,
        })
    }

    #[handle]
    fn relocate(&self, c: MoveV1) -> Result<CustomerMoved, CustomerError> {
        Ok(CustomerMoved {
            customer_id: c.customer_id,
            address: c.address.into(),
        })
    }

    #[apply]
    fn registered(&mut self, e: &CustomerRegistered) {
        self.name = Some(e.name.clone());
        self.address = Some(e.address.clone());
        self.tier.clone_from(&e.tier);
    }

    #[apply]
    fn moved(&mut self, e: &CustomerMoved) {
        self.address = Some(e.address.clone());
        self.moves += 1;
    }
}

/// A customer's name and current address.
type Row = (Personal<String>, Personal<String>);

/// A read model: each customer's name and current address.
#[derive(Debug, Default)]
pub struct Directory {
    rows: Mutex<BTreeMap<String, Row>>,
}

#[projection(name = "directory")]
impl Directory {
    async fn registered(&self, e: &CustomerRegistered) {
        self.rows
            .lock()
            .unwrap()
            .insert(e.customer_id.clone(), (e.name.clone(), e.address.clone()));
    }

    async fn moved(&self, e: &CustomerMoved) {
        if let Some(row) = self.rows.lock().unwrap().get_mut(&e.customer_id) {
            row.1 = e.address.clone();
        }
    }

    #[reset]
    async fn clear(&self) {
        self.rows.lock().unwrap().clear();
    }
}

impl Directory {
    fn row(&self, id: &str) -> Row {
        self.rows.lock().unwrap()[id].clone()
    }
}

// ANCHOR: personal_schema
fn schema() -> PersonalSchema {
    PersonalSchema::new()
        .register::<CustomerRegistered>()
        .unwrap()
        .register::<CustomerMoved>()
        .unwrap()
}
// ANCHOR_END: personal_schema

/// The plain texts of one customer, unique to this run.
struct Person {
    id: String,
    name: String,
    address: String,
    moved_to: String,
    tier: String,
}

impl Person {
    fn new(label: &str) -> Self {
        let tag = uuid::Uuid::new_v4().simple().to_string();
        Self {
            id: format!("c-{label}-{tag}"),
            name: format!("{label} name {tag}"),
            address: format!("{label} street {tag}"),
            moved_to: format!("{label} avenue {tag}"),
            tier: format!("{label} tier {tag}"),
        }
    }

    fn plain_texts(&self) -> [&str; 3] {
        [&self.name, &self.address, &self.moved_to]
    }
}

#[test]
fn personal_attributes_declare_the_fields_and_their_subject() {
    assert_eq!(
        CustomerRegistered::PERSONAL,
        [
            PersonalField::new("name", "customer_id"),
            PersonalField::new("address", "customer_id"),
        ]
    );
}

const PATIENCE: Duration = Duration::from_secs(60);

/// Runs the scenario on `store` and returns the two customers, Ada forgotten and Bob not.
/// `leaked` tells which of the given strings the backing storage holds in plain text.
async fn forget_scenario<S, K, F, Fut>(store: Shredding<S, K>, leaked: F)
where
    S: EventStore,
    K: KeyStore,
    F: Fn(Vec<String>) -> Fut,
    Fut: Future<Output = Vec<String>>,
{
    let ada = Person::new("ada");
    let bob = Person::new("bob");
    let customers = Repository::<Customer, _>::new(store.clone());
    for p in [&ada, &bob] {
        let register = RegisterV1 {
            customer_id: p.id.clone(),
            name: p.name.clone(),
            address: p.address.clone(),
            tier: p.tier.clone(),
        };
        customers.execute(register, Metadata::new()).await.unwrap();
        let relocate = MoveV1 {
            customer_id: p.id.clone(),
            address: p.moved_to.clone(),
        };
        customers.execute(relocate, Metadata::new()).await.unwrap();
    }

    // Encrypted at rest; the scan sees what is not personal, so it would see a leak.
    let mut all: Vec<String> = ada.plain_texts().iter().map(|s| s.to_string()).collect();
    all.extend(bob.plain_texts().iter().map(|s| s.to_string()));
    all.push(ada.tier.clone());
    assert_eq!(leaked(all.clone()).await, std::slice::from_ref(&ada.tier));

    let directory = Arc::new(Directory::default());
    let running = ProjectionRunner::new(store.clone())
        .register(
            Arc::clone(&directory),
            ProjectionOptions::new().poll_interval(Duration::from_millis(10)),
        )
        .start();
    let head = store.head_position().await.unwrap();
    tokio::time::timeout(PATIENCE, running.wait_for("directory", head))
        .await
        .expect("caught up in time")
        .unwrap();
    assert_eq!(
        directory.row(&ada.id),
        (
            Personal::Known(ada.name.clone()),
            Personal::Known(ada.moved_to.clone())
        )
    );

    assert_eq!(store.forget(&ada.id).await.unwrap(), Forgotten::Destroyed);
    assert_eq!(store.forget(&ada.id).await.unwrap(), Forgotten::Already);
    assert!(matches!(
        store.forget("c-never-seen").await,
        Err(KeyStoreError::UnknownSubject { subject }) if subject == "c-never-seen"
    ));

    // Ada's aggregate loads with her fields erased; what is not personal is kept.
    let loaded = customers.load(&ada.id).await.unwrap();
    assert_eq!(loaded.version, 2);
    assert_eq!(loaded.state.name, Some(Personal::Erased));
    assert_eq!(loaded.state.address, Some(Personal::Erased));
    assert_eq!(loaded.state.tier, ada.tier);
    assert_eq!(loaded.state.moves, 1);
    let bob_state = customers.load(&bob.id).await.unwrap().state;
    assert_eq!(bob_state.name, Some(Personal::Known(bob.name.clone())));
    assert_eq!(
        bob_state.address,
        Some(Personal::Known(bob.moved_to.clone()))
    );

    // Her events decode, the marked fields erased.
    let stream = StreamId::new("customer", &ada.id).unwrap();
    let events = store
        .read_stream(&stream, &StreamRead::all())
        .await
        .unwrap();
    let registered: CustomerRegistered = events[0].payload.decode().unwrap();
    assert_eq!(registered.name, Personal::Erased);
    assert_eq!(registered.address, Personal::Erased);
    assert_eq!(registered.tier, ada.tier);
    let by_id = store
        .event_by_id(events[1].event_id)
        .await
        .unwrap()
        .unwrap();
    let moved: CustomerMoved = by_id.payload.decode().unwrap();
    assert_eq!(moved.address, Personal::Erased);

    // The projection rebuilds: Ada erased, Bob intact.
    running.rebuild("directory", |_| {}).await.unwrap();
    tokio::time::timeout(PATIENCE, running.wait_for("directory", head))
        .await
        .expect("rebuilt in time")
        .unwrap();
    running.shutdown().await.unwrap();
    assert_eq!(directory.row(&ada.id), (Personal::Erased, Personal::Erased));
    assert_eq!(
        directory.row(&bob.id),
        (
            Personal::Known(bob.name.clone()),
            Personal::Known(bob.moved_to.clone())
        )
    );

    // New personal data of a forgotten subject is refused, and nothing is stored.
    let relocate = MoveV1 {
        customer_id: ada.id.clone(),
        address: "a new place".into(),
    };
    let refused = customers.execute(relocate, Metadata::new()).await;
    assert!(
        matches!(
            &refused,
            Err(Error::Store(StoreError::Personal(e)))
                if matches!(**e, PersonalError::SubjectForgotten { ref subject, .. } if *subject == ada.id)
        ),
        "{refused:?}"
    );
    assert_eq!(store.stream_version(&stream).await.unwrap(), 2);

    // Still nothing in plain text, the forgotten key included.
    all.push("a new place".into());
    assert_eq!(leaked(all).await, std::slice::from_ref(&ada.tier));
}

#[tokio::test]
async fn forgetting_erases_a_subject_on_the_memory_store() {
    let inner = MemoryStore::new();
    let keys = MemoryKeyStore::new();
    let store = Shredding::new(inner.clone(), keys.clone(), schema());
    forget_scenario(store, |needles| {
        let inner = inner.clone();
        async move {
            let stored = format!(
                "{:?}",
                inner
                    .read_all(&ReadAll::after(0).limit(10_000))
                    .await
                    .unwrap()
            );
            needles.into_iter().filter(|n| stored.contains(n)).collect()
        }
    })
    .await;
    assert!(keys.lookups() > 0);
}

#[tokio::test]
async fn forgetting_erases_a_subject_on_postgres() {
    let inner: PgStore = fresh_store().await.unwrap();
    let keys = PgKeyStore::new(&inner, factum::personal::MasterKey::generate());
    let store = Shredding::new(inner.clone(), keys, schema());
    let url = TestDatabase::get().await.unwrap();
    let client = Arc::new(
        PgConnectOptions::parse(&url)
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    let schema_name = inner.config().schema.to_string();
    forget_scenario(store, |needles| {
        let client = Arc::clone(&client);
        let schema_name = schema_name.clone();
        async move { leaked_in_tables(&client, &schema_name, needles).await }
    })
    .await;
}

/// Which of `needles` the text of some row of some table of `schema` contains.
async fn leaked_in_tables(
    client: &factum_postgres::tokio_postgres::Client,
    schema: &str,
    needles: Vec<String>,
) -> Vec<String> {
    let tables: Vec<String> = client
        .query(
            "SELECT format('%I.%I', table_schema, table_name) FROM information_schema.tables \
             WHERE table_schema = $1 AND table_type = 'BASE TABLE'",
            &[&schema],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(tables.len() >= 5, "{tables:?}");
    let mut found = Vec::new();
    for needle in needles {
        for table in &tables {
            let hits: i64 = client
                .query_one(
                    &format!("SELECT count(*) FROM {table} t WHERE strpos(t::text, $1) > 0"),
                    &[&needle],
                )
                .await
                .unwrap()
                .get(0);
            if hits > 0 {
                found.push(needle);
                break;
            }
        }
    }
    found
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]

    /// Whatever the values, repeated or not, every encryption takes a fresh nonce, and every
    /// value reads back as written.
    #[test]
    fn nonces_are_never_reused(names in proptest::collection::vec("\\PC{0,12}", 1..12)) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            let inner = MemoryStore::new();
            let store = Shredding::new(inner.clone(), MemoryKeyStore::new(), schema());
            let stream = StreamId::new("customer", "c-1").unwrap();
            let events: Vec<_> = names
                .iter()
                .map(|name| {
                    let event = CustomerRegistered {
                        customer_id: "c-1".into(),
                        name: name.clone().into(),
                        address: name.clone().into(),
                        tier: String::new(),
                    };
                    factum::store::NewEvent::from_event(&event, Metadata::new()).unwrap()
                })
                .collect();
            store
                .append(&stream, factum::ExpectedVersion::Any, &events)
                .await
                .unwrap();
            let mut nonces = std::collections::HashSet::new();
            for stored in inner.read_stream(&stream, &StreamRead::all()).await.unwrap() {
                let value = stored.payload.to_value().unwrap();
                for field in ["name", "address"] {
                    let text = value[field][factum::personal::ENCRYPTED_KEY].as_str().unwrap();
                    let bytes = base64_decode(text);
                    assert!(nonces.insert(bytes[..24].to_vec()), "nonce reused");
                }
            }
            assert_eq!(nonces.len(), 2 * names.len());
            let read = store.read_stream(&stream, &StreamRead::all()).await.unwrap();
            for (event, name) in read.iter().zip(&names) {
                let back: CustomerRegistered = event.payload.decode().unwrap();
                assert_eq!(back.name, Personal::Known(name.clone()));
                assert_eq!(back.address, Personal::Known(name.clone()));
            }
        });
    }
}

/// Standard base64 text as bytes.
fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

/// A shredding store over a multi-tenant store hands out tenant handles that encrypt and
/// decrypt as the unbound store does, and see only their tenant's streams.
#[tokio::test]
async fn tenant_handles_of_a_shredding_store_keep_tenants_apart() {
    use factum::tenant::TenantId;

    let store = Shredding::new(MemoryStore::multi_tenant(), MemoryKeyStore::new(), schema());
    let (acme, globex) = (
        TenantId::new("acme").unwrap(),
        TenantId::new("globex").unwrap(),
    );
    let for_acme = store.tenant(&acme).expect("a tenant handle");
    assert_eq!(for_acme.bound_tenant(), Some(&acme));
    let for_globex = store.tenant(&globex).expect("a tenant handle");

    let register = RegisterV1 {
        customer_id: "c-1".into(),
        name: "Ada Lovelace".into(),
        address: "12 St James's Square".into(),
        tier: "gold".into(),
    };
    Repository::<Customer, _>::new(for_acme.clone())
        .execute(register, Metadata::new())
        .await
        .expect("registered under acme");

    let s = StreamId::new("customer", "c-1").unwrap();
    let read = for_acme.read_stream(&s, &StreamRead::all()).await.unwrap();
    assert_eq!(read.len(), 1);
    let event: CustomerRegistered = read[0].payload.decode().expect("decrypted");
    assert_eq!(event.name, Personal::Known("Ada Lovelace".to_owned()));
    assert!(
        for_globex
            .read_stream(&s, &StreamRead::all())
            .await
            .unwrap()
            .is_empty(),
        "another tenant sees nothing of acme's stream"
    );

    // The same customer id in another tenant is another subject with its own key: an append
    // through the unbound store, under the tenant its metadata names, uses globex's key.
    let register = RegisterV1 {
        customer_id: "c-1".into(),
        name: "Grace Hopper".into(),
        address: "Arlington".into(),
        tier: "silver".into(),
    };
    Repository::<Customer, _>::new(for_globex.clone())
        .execute(register, Metadata::new())
        .await
        .expect("registered under globex");
    let moved = CustomerMoved {
        customer_id: "c-1".into(),
        address: Personal::Known("Washington".into()),
    };
    let event = factum::store::NewEvent {
        event_id: uuid::Uuid::now_v7(),
        event_type: "CustomerMoved".into(),
        schema_version: 1,
        payload: factum::store::Payload::encode(&moved).unwrap(),
        metadata: Metadata::new().tenant("globex"),
    };
    store
        .append(&s, factum::ExpectedVersion::Exact(1), &[event])
        .await
        .expect("appended through the unbound store under globex");
    assert_eq!(
        store
            .keys()
            .lookup(&["c-1".to_owned()])
            .await
            .unwrap()
            .len(),
        0,
        "no key is shared by the tenants' subjects"
    );

    // Forgetting acme's c-1 erases acme's customer only.
    store
        .tenant(&acme)
        .unwrap()
        .forget("c-1")
        .await
        .expect("forgotten");
    let read = for_acme.read_stream(&s, &StreamRead::all()).await.unwrap();
    let event: CustomerRegistered = read[0].payload.decode().unwrap();
    assert_eq!(event.name, Personal::Erased);
    let read = for_globex
        .read_stream(&s, &StreamRead::all())
        .await
        .unwrap();
    let event: CustomerRegistered = read[0].payload.decode().unwrap();
    assert_eq!(event.name, Personal::Known("Grace Hopper".to_owned()));
    let event: CustomerMoved = read[1].payload.decode().unwrap();
    assert_eq!(event.address, Personal::Known("Washington".to_owned()));
}

// --- Events that will never decode -----------------------------------------------------------

/// A key store that loses keys behind the shredding store's back, as a bad restore of its
/// table would: a lost subject's key is no longer found, though it was never forgotten.
#[derive(Clone)]
struct Losing<K> {
    inner: K,
    lost: Arc<Mutex<std::collections::BTreeSet<String>>>,
}

impl<K: KeyStore> Losing<K> {
    fn new(inner: K) -> Self {
        Self {
            inner,
            lost: Arc::default(),
        }
    }

    fn lose(&self, subject: &str) {
        self.lost.lock().unwrap().insert(subject.to_owned());
    }

    fn restore(&self) {
        self.lost.lock().unwrap().clear();
    }
}

impl<K: KeyStore> KeyStore for Losing<K> {
    fn key(
        &self,
        subject: &str,
    ) -> impl Future<Output = Result<factum::personal::KeyState, KeyStoreError>> + Send {
        self.inner.key(subject)
    }

    async fn lookup(
        &self,
        subjects: &[String],
    ) -> Result<std::collections::HashMap<String, factum::personal::KeyState>, KeyStoreError> {
        let mut found = self.inner.lookup(subjects).await?;
        let lost = self.lost.lock().unwrap().clone();
        found.retain(|subject, _| !lost.contains(subject));
        Ok(found)
    }

    fn forget(
        &self,
        subject: &str,
    ) -> impl Future<Output = Result<Forgotten, KeyStoreError>> + Send {
        self.inner.forget(subject)
    }
}

/// Records the positions of the customer events it handles, decoded.
struct Customers {
    name: String,
    positions: Mutex<Vec<u64>>,
}

impl Customers {
    fn new(name: &str) -> Arc<Self> {
        Arc::new(Self {
            name: name.to_owned(),
            positions: Mutex::default(),
        })
    }

    fn positions(&self) -> Vec<u64> {
        self.positions.lock().unwrap().clone()
    }
}

impl factum::projection::Projection for Customers {
    fn name(&self) -> &str {
        &self.name
    }

    fn event_types(&self) -> Vec<String> {
        vec!["CustomerRegistered".into(), "CustomerMoved".into()]
    }

    async fn handle(&self, event: &factum::RecordedEvent) -> Result<(), factum::BoxError> {
        let _: serde_json::Value = event.payload.decode()?;
        let mut positions = self.positions.lock().unwrap();
        if !positions.contains(&event.position) {
            positions.push(event.position);
        }
        Ok(())
    }
}

/// Waits for `name` to reach the head, within [`PATIENCE`].
async fn settled<S: EventStore>(
    running: &factum::projection::RunningProjections<S>,
    name: &str,
    head: u64,
) -> Result<(), factum::projection::ProjectionError> {
    tokio::time::timeout(PATIENCE, running.wait_for(name, head))
        .await
        .expect("the projection settles or stops, never spins")
}

/// An event whose key is lost (never forgotten) does not make a runner read it forever: a
/// projection whose policy parks parks it with the typed error naming the event and goes
/// on, and replays it once the key is back; one whose policy stops stops on it, and says
/// why; a process manager stops on it. Run on both stores.
async fn undecodable_scenario<S: EventStore, K: KeyStore>(inner: S, keys: K) {
    use factum::coordination::ParkReason;
    use factum::projection::{FailurePolicy, ProjectionError};

    let keys = Losing::new(keys);
    let store = Shredding::new(inner, keys.clone(), schema());
    let customers = Repository::<Customer, _>::new(store.clone());
    let (ada, bob) = (Person::new("ada"), Person::new("bob"));
    for person in [&ada, &bob] {
        let register = RegisterV1 {
            customer_id: person.id.clone(),
            name: person.name.clone(),
            address: person.address.clone(),
            tier: person.tier.clone(),
        };
        customers.execute(register, Metadata::new()).await.unwrap();
    }
    let mut positions = BTreeMap::new();
    for person in [&ada, &bob] {
        let moved = MoveV1 {
            customer_id: person.id.clone(),
            address: person.moved_to.clone(),
        };
        customers.execute(moved, Metadata::new()).await.unwrap();
        let stream = StreamId::new("customer", &person.id).unwrap();
        let read = store.inner().read_stream(&stream, &StreamRead::all()).await;
        let read: Vec<u64> = read.unwrap().iter().map(|e| e.position).collect();
        positions.insert(person.id.clone(), read);
    }
    let head = store.head_position().await.unwrap();
    keys.lose(&ada.id);

    let options = || ProjectionOptions::new().poll_interval(Duration::from_millis(20));
    let parking = Customers::new("customers");
    let running = ProjectionRunner::new(store.clone())
        .register(Arc::clone(&parking), options())
        .start();
    settled(&running, "customers", head)
        .await
        .expect("the projection parks what it cannot decode and reaches the head");
    assert_eq!(
        parking.positions(),
        positions[&bob.id],
        "bob's events, handled"
    );
    let parked = running.parked("customers").await.unwrap();
    assert_eq!(
        parked.iter().map(|p| p.position).collect::<Vec<_>>(),
        positions[&ada.id],
        "ada's events, parked"
    );
    for entry in &parked {
        match &entry.reason {
            ParkReason::Failed { error, attempts } => {
                assert_eq!(*attempts, 1, "not retried: it will never decode");
                assert!(error.contains("no key for subject"), "{error}");
                assert!(error.contains(&format!("customer-{}", ada.id)), "{error}");
                assert!(
                    error.contains(&format!("position {}", entry.position)),
                    "{error}"
                );
            }
            other => panic!("expected a failure as the reason, got {other:?}"),
        }
    }
    let health = running.health(Duration::from_secs(3600));
    assert!(
        health.problems.iter().all(|p| !matches!(
            p,
            factum::projection::HealthProblem::Failing { .. }
                | factum::projection::HealthProblem::Stopped { .. }
        )),
        "{health:?}"
    );
    // A replay while the key is still lost reads the first again, finds it still
    // undecodable and keeps it parked, the other waiting behind it, and ends.
    running.replay_parked("customers", None).await.unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let parked = loop {
        let parked = running.parked("customers").await.unwrap();
        if parked.iter().all(|p| !p.replay_requested) {
            break parked;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the replay never ended"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        matches!(&parked[0].reason, ParkReason::Failed { attempts: 2, error } if error.contains("no key for subject")),
        "{parked:?}"
    );
    assert_eq!(
        parked[1].reason,
        ParkReason::Waiting {
            behind: parked[0].position
        }
    );
    // With the key back, a replay handles them.
    keys.restore();
    running.replay_parked("customers", None).await.unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !running.parked("customers").await.unwrap().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the replay never ended"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut all: Vec<u64> = positions.values().flatten().copied().collect();
    all.sort_unstable();
    let mut handled = parking.positions();
    handled.sort_unstable();
    assert_eq!(handled, all);
    running.shutdown().await.unwrap();

    // A policy that stops: the partition stops, naming the event.
    keys.lose(&ada.id);
    let stopping = Customers::new("customers-strict");
    let running = ProjectionRunner::new(store.clone())
        .register(
            Arc::clone(&stopping),
            options().failure(FailurePolicy::stop_after(3)),
        )
        .start();
    match settled(&running, "customers-strict", head).await {
        Err(ProjectionError::NotRunning { .. }) => {}
        other => panic!("expected the partition to stop, got {other:?}"),
    }
    let status = running.status();
    let error = status[0].error.as_deref().unwrap_or_default();
    assert!(error.contains("no key for subject"), "{error}");
    assert!(
        stopping.positions().is_empty(),
        "stopped at ada's first event"
    );
    running.shutdown().await.ok();

    // A process manager stops on it too.
    let running = factum::process::ProcessManagerRunner::new(store.clone())
        .register_with(
            Welcome,
            factum::process::dispatch_fn(|_: &String, _: &Metadata| async { Ok(()) }),
            factum::process::ProcessOptions::new().poll_interval(Duration::from_millis(20)),
        )
        .start();
    let waited = tokio::time::timeout(PATIENCE, running.wait_for("welcome", head))
        .await
        .expect("the process manager stops, never spins");
    let error = waited.expect_err("the process manager stops").to_string();
    assert!(!error.is_empty());
    let status = running.status();
    let error = status[0].error.as_deref().unwrap_or_default();
    assert!(error.contains("no key for subject"), "{error}");
    running.shutdown().await.ok();
}

/// Starts a flow per registered customer; sends nothing.
struct Welcome;

impl factum::process::ProcessManager for Welcome {
    type State = ();
    type Command = String;

    fn name(&self) -> &str {
        "welcome"
    }

    fn event_types(&self) -> Vec<String> {
        vec!["CustomerRegistered".into()]
    }

    fn route(
        &self,
        event: &factum::RecordedEvent,
    ) -> Result<factum::process::Route, factum::BoxError> {
        Ok(factum::process::Route::Start(event.stream_id.to_string()))
    }

    fn handle(
        &self,
        _state: &mut (),
        _event: &factum::RecordedEvent,
    ) -> Result<factum::process::Effects<String>, factum::BoxError> {
        Ok(factum::process::Effects::none())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_events_are_parked_or_stop_runners_on_the_memory_store() {
    undecodable_scenario(MemoryStore::new(), MemoryKeyStore::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_events_are_parked_or_stop_runners_on_postgres() {
    let store: PgStore = fresh_store().await.unwrap();
    let keys = PgKeyStore::new(&store, factum::personal::MasterKey::generate());
    undecodable_scenario(store, keys).await;
}
