//! Personal fields on PostgreSQL: the key table (`PgKeyStore`), typed errors for altered
//! ciphertexts and lost keys naming the event, one key lookup per read batch, and retries.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::*;
use factum::personal::{
    ENCRYPTED_KEY, Forgotten, KeyState, KeyStore, KeyStoreError, MasterKey, Personal,
    PersonalError, PersonalField, PersonalSchema, Shredding,
};
use factum::store::{NewEvent, Payload, ReadAll, StreamRead};
use factum::{EventStore, ExpectedVersion, Metadata, StoreError, StreamId};
use factum_postgres::{PgKeyStore, PgStore};
use serde::Deserialize;
use uuid::Uuid;

const TYPE: &str = "CustomerRegistered";

fn personal_schema() -> PersonalSchema {
    PersonalSchema::new()
        .register_fields(TYPE, 1, &[PersonalField::new("name", "customer_id")])
        .unwrap()
}

#[derive(Debug, Deserialize)]
struct Registered {
    customer_id: String,
    name: Personal<String>,
}

fn registered(customer: &str, name: &str) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: TYPE.into(),
        schema_version: 1,
        payload: Payload::encode(&serde_json::json!({"customer_id": customer, "name": name}))
            .unwrap(),
        metadata: Metadata::new(),
    }
}

fn customer(id: &str) -> StreamId {
    StreamId::new("customer", id).unwrap()
}

/// A key store counting its batch lookups.
#[derive(Clone)]
struct Counting {
    inner: PgKeyStore,
    lookups: Arc<AtomicU64>,
}

impl KeyStore for Counting {
    fn key(&self, subject: &str) -> impl Future<Output = Result<KeyState, KeyStoreError>> + Send {
        self.inner.key(subject)
    }

    fn lookup(
        &self,
        subjects: &[String],
    ) -> impl Future<Output = Result<HashMap<String, KeyState>, KeyStoreError>> + Send {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        self.inner.lookup(subjects)
    }

    fn forget(
        &self,
        subject: &str,
    ) -> impl Future<Output = Result<Forgotten, KeyStoreError>> + Send {
        self.inner.forget(subject)
    }
}

async fn shredding(inner: &PgStore) -> Shredding<PgStore, Counting> {
    let keys = Counting {
        inner: PgKeyStore::new(inner, MasterKey::generate()),
        lookups: Arc::default(),
    };
    Shredding::new(inner.clone(), keys, personal_schema())
}

/// Replaces the payload of a stored event, as a superuser past the append-only trigger.
async fn overwrite_payload(store: &PgStore, event_id: Uuid, payload: &serde_json::Value) {
    let mut client = raw_client().await;
    let table = format!("{}.events", schema(store));
    let tx = client.transaction().await.unwrap();
    tx.batch_execute(&format!(
        "ALTER TABLE {table} DISABLE TRIGGER events_append_only"
    ))
    .await
    .unwrap();
    let changed = tx
        .execute(
            &format!("UPDATE {table} SET payload = $1 WHERE event_id = $2"),
            &[payload, &event_id],
        )
        .await
        .unwrap();
    assert_eq!(changed, 1);
    tx.batch_execute(&format!(
        "ALTER TABLE {table} ENABLE ALWAYS TRIGGER events_append_only"
    ))
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

/// The stored (encrypted) payload of an event.
async fn stored_payload(store: &PgStore, event_id: Uuid) -> serde_json::Value {
    store
        .event_by_id(event_id)
        .await
        .unwrap()
        .unwrap()
        .payload
        .to_value()
        .unwrap()
}

/// Every read path of `store` fails on the event at `position` of `stream` with an error
/// `check` accepts.
async fn every_read_fails<S: EventStore>(
    store: &S,
    stream: &StreamId,
    event_id: Uuid,
    check: impl Fn(&PersonalError) -> bool,
) {
    let personal = |result: Result<(), StoreError>| match result {
        Err(StoreError::Personal(e)) => assert!(check(&e), "{e}"),
        other => panic!("expected a personal-data error, got {other:?}"),
    };
    personal(
        store
            .read_stream(stream, &StreamRead::all())
            .await
            .map(drop),
    );
    personal(store.read_all(&ReadAll::after(0)).await.map(drop));
    personal(store.event_by_id(event_id).await.map(drop));
    personal(store.load_aggregate(stream, 1, None).await.map(drop));
}

#[tokio::test]
async fn altered_or_moved_ciphertexts_are_typed_errors_naming_the_event() {
    let inner = store().await;
    let store = shredding(&inner).await;
    let s = customer("c-1");
    let event = registered("c-1", "Ada");
    let id = event.event_id;
    let appended = store
        .append(&s, ExpectedVersion::NoStream, &[event])
        .await
        .unwrap();
    let position = appended.first_position;

    // One byte of the ciphertext flipped.
    let original = stored_payload(&inner, id).await;
    let text = original["name"][ENCRYPTED_KEY].as_str().unwrap();
    let mut bytes = BASE64.decode(text).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    let mut flipped = original.clone();
    flipped["name"][ENCRYPTED_KEY] = BASE64.encode(&bytes).into();
    overwrite_payload(&inner, id, &flipped).await;
    let tampered = |e: &PersonalError| {
        matches!(e, PersonalError::Tampered { event_type, stream, position: p, field, .. }
            if event_type == TYPE && *stream == s && *p == position && field == "name")
    };
    every_read_fails(&store, &s, id, tampered).await;
    let message = store
        .read_all(&ReadAll::after(0))
        .await
        .unwrap_err()
        .to_string();
    assert!(message.contains(TYPE) && message.contains(&format!("position {position}")));
    assert!(message.contains("customer-c-1"), "{message}");

    // An intact ciphertext moved to another subject's event fails as well.
    let other = customer("c-2");
    let second = registered("c-2", "Bob");
    let second_id = second.event_id;
    store
        .append(&other, ExpectedVersion::NoStream, &[second])
        .await
        .unwrap();
    overwrite_payload(&inner, id, &original).await;
    let mut moved = stored_payload(&inner, second_id).await;
    moved["name"] = original["name"].clone();
    overwrite_payload(&inner, second_id, &moved).await;
    assert!(matches!(
        store.read_stream(&other, &StreamRead::all()).await,
        Err(StoreError::Personal(e)) if matches!(*e, PersonalError::Tampered { .. })
    ));
    // The first event, restored, reads again.
    let back = store.read_stream(&s, &StreamRead::all()).await.unwrap();
    let back: Registered = back[0].payload.decode().unwrap();
    assert_eq!(back.name, Personal::Known("Ada".into()));

    // Plain text where a ciphertext belongs is refused, not passed on.
    let mut plain = original.clone();
    plain["name"] = "Ada".into();
    overwrite_payload(&inner, id, &plain).await;
    every_read_fails(&store, &s, id, |e| {
        matches!(e, PersonalError::Malformed { position: p, field, .. } if *p == position && field == "name")
    })
    .await;
}

#[tokio::test]
async fn a_lost_key_is_an_error_and_a_forgotten_one_erases() {
    let inner = store().await;
    let store = shredding(&inner).await;
    let (s1, s2) = (customer("c-1"), customer("c-2"));
    let first = registered("c-1", "Ada");
    let id = first.event_id;
    let position = store
        .append(&s1, ExpectedVersion::NoStream, &[first])
        .await
        .unwrap()
        .first_position;
    store
        .append(&s2, ExpectedVersion::NoStream, &[registered("c-2", "Bob")])
        .await
        .unwrap();

    // Forgetting says what it did, and refuses a subject it never knew.
    assert_eq!(store.forget("c-2").await.unwrap(), Forgotten::Destroyed);
    assert_eq!(store.forget("c-2").await.unwrap(), Forgotten::Already);
    assert!(matches!(
        store.forget("c-3").await,
        Err(KeyStoreError::UnknownSubject { subject }) if subject == "c-3"
    ));
    let erased: Registered = store.read_stream(&s2, &StreamRead::all()).await.unwrap()[0]
        .payload
        .decode()
        .unwrap();
    assert_eq!(erased.customer_id, "c-2");
    assert_eq!(erased.name, Personal::Erased);
    let wrapped: Option<Vec<u8>> = raw_client()
        .await
        .query_one(
            &format!(
                "SELECT wrapped_key FROM {}.data_keys WHERE subject = 'c-2'",
                schema(&inner)
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(wrapped, None);

    // A key row deleted behind the store's back is not taken for a forgotten subject.
    raw_client()
        .await
        .execute(
            &format!(
                "DELETE FROM {}.data_keys WHERE subject = 'c-1'",
                schema(&inner)
            ),
            &[],
        )
        .await
        .unwrap();
    every_read_fails(&store, &s1, id, |e| {
        matches!(e, PersonalError::MissingKey { event_type, stream, position: p, subject, .. }
            if event_type == TYPE && *stream == s1 && *p == position && subject == "c-1")
    })
    .await;

    // A key store with another master key cannot unwrap the keys.
    let wrong = Shredding::new(
        inner.clone(),
        PgKeyStore::new(&inner, MasterKey::generate()),
        personal_schema(),
    );
    wrong
        .append(
            &customer("c-4"),
            ExpectedVersion::NoStream,
            &[registered("c-4", "Cy")],
        )
        .await
        .unwrap();
    let wrong_master = Shredding::new(
        inner.clone(),
        PgKeyStore::new(&inner, MasterKey::generate()),
        personal_schema(),
    );
    assert!(matches!(
        wrong_master.read_stream(&customer("c-4"), &StreamRead::all()).await,
        Err(StoreError::Personal(e))
            if matches!(&*e, PersonalError::KeyStore(KeyStoreError::Unwrap { subject }) if subject == "c-4")
    ));
}

#[tokio::test]
async fn one_key_lookup_per_read_batch_and_retries_are_idempotent() {
    let inner = store().await;
    let store = shredding(&inner).await;
    let mut ids = Vec::new();
    for i in 0..40 {
        let event = registered(&format!("c-{i}"), &format!("name {i}"));
        ids.push(event.event_id);
        store
            .append(
                &customer(&format!("c-{i}")),
                ExpectedVersion::NoStream,
                &[event],
            )
            .await
            .unwrap();
    }
    let before = store.keys().lookups.load(Ordering::Relaxed);
    let batch = store.read_all(&ReadAll::after(0).limit(100)).await.unwrap();
    assert_eq!(batch.len(), 40);
    assert_eq!(store.keys().lookups.load(Ordering::Relaxed), before + 1);
    for (i, event) in batch.iter().enumerate() {
        let decoded: Registered = event.payload.decode().unwrap();
        assert_eq!(decoded.name, Personal::Known(format!("name {i}")));
    }
    let halves = store.read_all(&ReadAll::after(0).limit(20)).await.unwrap();
    assert_eq!(halves.len(), 20);
    assert_eq!(store.keys().lookups.load(Ordering::Relaxed), before + 2);

    // An append retried with the same ids and content stores nothing, though its
    // encryption differs.
    let s = customer("retry");
    let events = vec![registered("retry", "Ri"), registered("retry", "Ri")];
    let first = store
        .append(&s, ExpectedVersion::NoStream, &events)
        .await
        .unwrap();
    let again = store
        .append(&s, ExpectedVersion::NoStream, &events)
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(again.last_position, first.last_position);
    assert_eq!(store.stream_version(&s).await.unwrap(), 2);
    // The same value, encrypted twice, is stored as two different ciphertexts.
    let raw = inner.read_stream(&s, &StreamRead::all()).await.unwrap();
    let (a, b) = (
        raw[0].payload.to_value().unwrap(),
        raw[1].payload.to_value().unwrap(),
    );
    assert_ne!(a["name"], b["name"]);
    // Other content under a stored id is still refused.
    let mut changed = events.clone();
    changed[1] = NewEvent {
        payload: registered("retry", "Other").payload,
        ..changed[1].clone()
    };
    assert!(matches!(
        store.append(&s, ExpectedVersion::NoStream, &changed).await,
        Err(StoreError::DuplicateEventId { .. })
    ));
}

#[tokio::test]
async fn a_subject_forgotten_elsewhere_is_erased_for_every_reader() {
    let inner = store().await;
    let master = MasterKey::generate();
    let reader = Shredding::new(
        inner.clone(),
        PgKeyStore::new(&inner, master.clone()),
        personal_schema(),
    );
    let other = Shredding::new(
        inner.clone(),
        PgKeyStore::new(&inner, master),
        personal_schema(),
    );
    let s = customer("c-1");
    reader
        .append(&s, ExpectedVersion::NoStream, &[registered("c-1", "Ada")])
        .await
        .unwrap();
    let name =
        |events: Vec<factum::RecordedEvent>| events[0].payload.decode::<Registered>().unwrap().name;
    // The reader has unwrapped and kept the key; another process forgets the subject.
    let read = reader.read_all(&ReadAll::after(0)).await.unwrap();
    assert_eq!(name(read), Personal::Known("Ada".into()));
    assert_eq!(other.forget("c-1").await.unwrap(), Forgotten::Destroyed);
    let read = reader.read_all(&ReadAll::after(0)).await.unwrap();
    assert_eq!(name(read), Personal::Erased);
    // And it does not come back under a key the reader creates anew.
    assert!(matches!(
        reader
            .append(&s, ExpectedVersion::Exact(1), &[registered("c-1", "Ada")])
            .await,
        Err(StoreError::Personal(e)) if matches!(*e, PersonalError::SubjectForgotten { .. })
    ));
}

#[tokio::test]
async fn concurrent_first_uses_of_a_subject_share_one_key() {
    let inner = store().await;
    let keys = PgKeyStore::new(&inner, MasterKey::generate());
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let keys = keys.clone();
            tokio::spawn(async move { keys.key("c-1").await })
        })
        .collect();
    let mut seen = Vec::new();
    for task in tasks {
        match task.await.unwrap().unwrap() {
            KeyState::Active(key) => seen.push(*key.as_bytes()),
            KeyState::Forgotten => panic!("a new subject is not forgotten"),
        }
    }
    seen.dedup();
    assert_eq!(seen.len(), 1, "every caller gets the key stored first");
    let rows: i64 = raw_client()
        .await
        .query_one(
            &format!("SELECT count(*) FROM {}.data_keys", schema(&inner)),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 1);
}
