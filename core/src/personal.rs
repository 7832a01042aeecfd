//! Personal data and crypto-shredding: fields of events encrypted with a key per data
//! subject, so that destroying the key erases the data from every stored copy.
//!
//! - An event type declares which of its JSON fields are personal and which field names the
//!   subject they belong to ([`PersonalData`]); the fields have the type [`Personal<T>`], which
//!   is [`Personal::Known`] or, once the subject is forgotten, [`Personal::Erased`].
//! - [`Shredding`] wraps any [`EventStore`]: it encrypts those fields before an append and
//!   decrypts them on every read, replacing the fields of a forgotten subject by the erased
//!   marker, so that decoders and upcasters see plaintext or the marker.
//! - Data keys live in a [`KeyStore`]: [`MemoryKeyStore`] here, `PgKeyStore` in
//!   `factum-postgres` (wrapped by a [`MasterKey`]).
//!
//! Fields are encrypted with XChaCha20-Poly1305 under a random 192-bit nonce per encryption,
//! bound by its associated data to the stream, event type, field and subject
//! (`docs/adr/15-crypto-shredding.md`).
//!
//! ```
//! use factum::personal::{MemoryKeyStore, Personal, PersonalData, PersonalField, PersonalSchema, Shredding};
//! use factum::store::{ReadAll, StreamRead};
//! use factum::{Event, EventStore, ExpectedVersion, MemoryStore, Metadata, StreamId};
//! use factum::store::NewEvent;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct CustomerRegistered {
//!     customer_id: String,
//!     name: Personal<String>,
//! }
//! impl Event for CustomerRegistered {
//!     const NAME: &'static str = "CustomerRegistered";
//!     const VERSION: u32 = 1;
//! }
//! impl PersonalData for CustomerRegistered {
//!     const PERSONAL: &'static [PersonalField] = &[PersonalField::new("name", "customer_id")];
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
//! let keys = MemoryKeyStore::new();
//! let schema = PersonalSchema::new().register::<CustomerRegistered>()?;
//! let store = Shredding::new(MemoryStore::new(), keys, schema);
//! let stream = StreamId::new("customer", "c-1")?;
//! let event = CustomerRegistered { customer_id: "c-1".into(), name: Personal::Known("Ada".into()) };
//! store.append(&stream, ExpectedVersion::NoStream, &[NewEvent::from_event(&event, Metadata::new())?]).await?;
//!
//! store.forget("c-1").await?;
//! let read = store.read_stream(&stream, &StreamRead::all()).await?;
//! let back: CustomerRegistered = read[0].payload.decode()?;
//! assert_eq!(back.name, Personal::Erased);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chacha20poly1305::aead::{Aead, AeadCore, AeadInPlace, KeyInit, OsRng, Payload as AeadPayload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::error::{BoxError, StoreError};
use crate::event::{Event, NewEvent, Payload, RecordedEvent};
use crate::head::HeadStatus;
use crate::store::{
    AggregateRead, AppendResult, CommandRecord, EventStore, ReadAll, ReplayEvent, Snapshot,
    StreamRead, check_retry,
};
use crate::stream::{ExpectedVersion, StreamId};
use crate::tenant::TenantId;

/// The JSON key of the object that holds an encrypted field in a stored payload.
pub const ENCRYPTED_KEY: &str = "$encrypted";
/// The JSON key of the object that replaces a field whose subject was forgotten:
/// `{"$erased": true}`.
pub const ERASED_KEY: &str = "$erased";

/// Length of a nonce: XChaCha20-Poly1305's 192 bits, random for every encryption.
const NONCE_LEN: usize = 24;

// --- The field type ---------------------------------------------------------------------------

/// A personal value of an event: known, or erased because its subject was forgotten.
///
/// Serialized as the value itself; the erased marker `{"$erased": true}` deserializes as
/// [`Personal::Erased`] (and `Erased` serializes as it).
///
/// ```
/// use factum::personal::Personal;
/// let name: Personal<String> = serde_json::from_str(r#""Ada""#)?;
/// assert_eq!(name.known().map(String::as_str), Some("Ada"));
/// let gone: Personal<String> = serde_json::from_str(r#"{"$erased":true}"#)?;
/// assert!(gone.is_erased());
/// assert_eq!(serde_json::to_string(&gone)?, r#"{"$erased":true}"#);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Personal<T> {
    /// The value.
    Known(T),
    /// Erased: its subject was forgotten and its key destroyed.
    Erased,
}

impl<T> Personal<T> {
    /// The value, unless erased.
    pub fn known(&self) -> Option<&T> {
        match self {
            Personal::Known(value) => Some(value),
            Personal::Erased => None,
        }
    }

    /// Whether the value was erased.
    pub fn is_erased(&self) -> bool {
        matches!(self, Personal::Erased)
    }

    /// The value, unless erased.
    pub fn into_known(self) -> Option<T> {
        match self {
            Personal::Known(value) => Some(value),
            Personal::Erased => None,
        }
    }
}

impl<T> From<T> for Personal<T> {
    fn from(value: T) -> Self {
        Personal::Known(value)
    }
}

/// The erased marker `{"$erased": true}`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ErasedMarker {
    #[serde(rename = "$erased")]
    erased: True,
}

/// `true`, refusing `false`.
struct True;

impl Serialize for True {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bool(true)
    }
}

impl<'de> Deserialize<'de> for True {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if bool::deserialize(d)? {
            Ok(True)
        } else {
            Err(serde::de::Error::custom("the erased marker holds `true`"))
        }
    }
}

impl<T: Serialize> Serialize for Personal<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Personal::Known(value) => value.serialize(s),
            Personal::Erased => ErasedMarker { erased: True }.serialize(s),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Personal<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr<T> {
            Erased(ErasedMarker),
            Known(T),
        }
        match Repr::deserialize(d) {
            Ok(Repr::Erased(_)) => Ok(Personal::Erased),
            Ok(Repr::Known(value)) => Ok(Personal::Known(value)),
            Err(_) => Err(serde::de::Error::custom(
                "expected a personal value of the field's type or the erased marker {\"$erased\": true}",
            )),
        }
    }
}

// --- What an event declares -------------------------------------------------------------------

/// One personal field of an event: a top-level field of its JSON payload, and the field
/// naming the subject (a string or an integer) whose key encrypts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PersonalField {
    /// The JSON name of the personal field.
    pub field: &'static str,
    /// The JSON name of the field holding the subject's id.
    pub subject: &'static str,
}

impl PersonalField {
    /// The personal field `field`, belonging to the subject named by the field `subject`.
    pub const fn new(field: &'static str, subject: &'static str) -> Self {
        Self { field, subject }
    }
}

/// A type a personal field can have: [`Personal<T>`] (or an `Option` of one) of a `T` that
/// serializes, so that the field can hold the erased state. `#[personal]` checks it.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot hold personal data: a `#[personal]` field is a `Personal<T>` (or `Option<Personal<T>>`) whose `T` implements `Serialize` and `Deserialize`",
    label = "not a `Personal<T>` of a serializable `T`"
)]
pub trait PersonalValue {}

impl<T: Serialize + serde::de::DeserializeOwned> PersonalValue for Personal<T> {}
impl<T: Serialize + serde::de::DeserializeOwned> PersonalValue for Option<Personal<T>> {}

/// For generated code: compiles only when `T` can hold personal data.
#[doc(hidden)]
pub fn assert_personal_value<T: PersonalValue + ?Sized>() {}

/// An event type with personal fields, for its stored name and schema version.
///
/// Implement it for every schema version of the type that has personal fields, and register
/// each with [`PersonalSchema::register`].
pub trait PersonalData: Event {
    /// The personal fields.
    const PERSONAL: &'static [PersonalField];
}

/// A declaration that [`PersonalSchema::register`] refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PersonalSchemaError {
    /// A personal field is also its own subject, or the subject of another field.
    #[error(
        "field `{field}` of event `{event_type}` version {version} is both personal and a subject"
    )]
    SubjectIsPersonal {
        /// The stored type name.
        event_type: String,
        /// The schema version.
        version: u32,
        /// The field.
        field: String,
    },
    /// A field is declared twice.
    #[error("personal field `{field}` of event `{event_type}` version {version} is declared twice")]
    Repeated {
        /// The stored type name.
        event_type: String,
        /// The schema version.
        version: u32,
        /// The field.
        field: String,
    },
    /// The event type and version are registered already, with other fields.
    #[error("event `{event_type}` version {version} is registered twice with different fields")]
    Conflict {
        /// The stored type name.
        event_type: String,
        /// The schema version.
        version: u32,
    },
}

/// Which fields of which stored event types (name and schema version) are personal.
#[derive(Clone, Debug, Default)]
pub struct PersonalSchema {
    /// By stored type name: the fields of each schema version that has some.
    types: HashMap<String, Vec<(u32, Vec<PersonalField>)>>,
}

impl PersonalSchema {
    /// No personal fields.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the personal fields of `E` (at `E::NAME` and `E::VERSION`).
    pub fn register<E: PersonalData>(self) -> Result<Self, PersonalSchemaError> {
        self.register_fields(E::NAME, E::VERSION, E::PERSONAL)
    }

    /// Adds personal fields of the stored type `event_type` at schema `version`.
    pub fn register_fields(
        mut self,
        event_type: &str,
        version: u32,
        fields: &[PersonalField],
    ) -> Result<Self, PersonalSchemaError> {
        for (i, f) in fields.iter().enumerate() {
            if fields.iter().any(|g| g.subject == f.field) {
                return Err(PersonalSchemaError::SubjectIsPersonal {
                    event_type: event_type.to_owned(),
                    version,
                    field: f.field.to_owned(),
                });
            }
            if fields[..i].iter().any(|g| g.field == f.field) {
                return Err(PersonalSchemaError::Repeated {
                    event_type: event_type.to_owned(),
                    version,
                    field: f.field.to_owned(),
                });
            }
        }
        let versions = self.types.entry(event_type.to_owned()).or_default();
        match versions.iter().find(|(v, _)| *v == version) {
            Some((_, existing)) if existing.as_slice() != fields => {
                return Err(PersonalSchemaError::Conflict {
                    event_type: event_type.to_owned(),
                    version,
                });
            }
            Some(_) => {}
            None if fields.is_empty() => {}
            None => versions.push((version, fields.to_vec())),
        }
        if versions.is_empty() {
            self.types.remove(event_type);
        }
        Ok(self)
    }

    /// The personal fields of a stored type at a schema version (empty when none).
    pub fn fields(&self, event_type: &str, version: u32) -> &[PersonalField] {
        self.types
            .get(event_type)
            .and_then(|versions| versions.iter().find(|(v, _)| *v == version))
            .map_or(&[], |(_, fields)| fields.as_slice())
    }
}

// --- Keys -------------------------------------------------------------------------------------

/// A 256-bit key, zeroed when dropped; its `Debug` shows nothing of it.
#[derive(Clone)]
pub struct DataKey(Zeroizing<[u8; 32]>);

impl DataKey {
    /// A fresh random key from the operating system's generator.
    pub fn generate() -> Self {
        let key = XChaCha20Poly1305::generate_key(&mut OsRng);
        let mut bytes = Zeroizing::new([0u8; 32]);
        bytes.copy_from_slice(&key);
        Self(bytes)
    }

    /// The key with these bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(self.0.as_ref().into())
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(..)")
    }
}

/// The key that wraps (encrypts) data keys at rest in a key store, given in configuration.
#[derive(Clone, Debug)]
pub struct MasterKey(DataKey);

/// A master key that cannot be read from configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid master key: expected 32 bytes in standard base64 (44 characters)")]
pub struct MasterKeyError;

impl MasterKey {
    /// A fresh random master key (print it with [`MasterKey::to_base64`] to configure it).
    pub fn generate() -> Self {
        Self(DataKey::generate())
    }

    /// The master key with these bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(DataKey::from_bytes(bytes))
    }

    /// Reads a master key from its standard base64 text (32 bytes).
    pub fn from_base64(text: &str) -> Result<Self, MasterKeyError> {
        let bytes = Zeroizing::new(BASE64.decode(text.trim()).map_err(|_| MasterKeyError)?);
        let array: [u8; 32] = bytes.as_slice().try_into().map_err(|_| MasterKeyError)?;
        Ok(Self::from_bytes(array))
    }

    /// The key as standard base64 text.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(BASE64.encode(self.0.as_bytes()))
    }

    /// Encrypts `key`, bound to `subject`: a random nonce followed by the ciphertext.
    pub fn wrap(&self, subject: &str, key: &DataKey) -> Vec<u8> {
        seal(&self.0, &wrap_context(subject), key.as_bytes())
    }

    /// Decrypts a key wrapped for `subject`.
    pub fn unwrap(&self, subject: &str, wrapped: &[u8]) -> Result<DataKey, KeyStoreError> {
        let plain = open(&self.0, &wrap_context(subject), wrapped).ok_or_else(|| {
            KeyStoreError::Unwrap {
                subject: subject.to_owned(),
            }
        })?;
        let plain = Zeroizing::new(plain);
        let bytes: [u8; 32] = plain
            .as_slice()
            .try_into()
            .map_err(|_| KeyStoreError::Unwrap {
                subject: subject.to_owned(),
            })?;
        Ok(DataKey::from_bytes(bytes))
    }
}

fn wrap_context(subject: &str) -> Vec<u8> {
    let mut aad = b"factum data key v1".to_vec();
    push_part(&mut aad, subject);
    aad
}

/// Encrypts `plain` under `key` with a fresh random nonce: nonce || ciphertext || tag.
fn seal(key: &DataKey, aad: &[u8], plain: &[u8]) -> Vec<u8> {
    let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
    let sealed = key
        .cipher()
        .encrypt(&nonce, AeadPayload { msg: plain, aad });
    // Encryption fails only for messages longer than the cipher's 256 GiB limit, far beyond
    // any JSON payload a store accepts.
    let sealed = sealed.unwrap_or_default();
    let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    out
}

/// Decrypts what [`seal`] produced, `None` when it fails authentication or is too short.
fn open(key: &DataKey, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < NONCE_LEN {
        return None;
    }
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    key.cipher()
        .decrypt(XNonce::from_slice(nonce), AeadPayload { msg: body, aad })
        .ok()
}

/// Appends a length-prefixed part, so that no two contexts share an encoding.
fn push_part(aad: &mut Vec<u8>, part: &str) {
    aad.extend_from_slice(&(part.len() as u64).to_le_bytes());
    aad.extend_from_slice(part.as_bytes());
}

/// The associated data of a personal field: stream, event type, field and subject. A
/// ciphertext moved to another of them fails authentication.
fn field_context(stream: &str, event_type: &str, field: &str, subject: &str) -> Vec<u8> {
    let mut aad = Vec::new();
    field_context_into(&mut aad, stream, event_type, field, subject);
    aad
}

/// [`field_context`], written into `aad`.
fn field_context_into(
    aad: &mut Vec<u8>,
    stream: &str,
    event_type: &str,
    field: &str,
    subject: &str,
) {
    aad.clear();
    aad.extend_from_slice(b"factum personal field v1");
    for part in [stream, event_type, field, subject] {
        push_part(aad, part);
    }
}

/// What a key store holds for a subject.
#[derive(Clone, Debug)]
pub enum KeyState {
    /// Its data key.
    Active(DataKey),
    /// Its key was destroyed ([`KeyStore::forget`]): a tombstone.
    Forgotten,
}

/// What [`KeyStore::forget`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forgotten {
    /// The key was destroyed now.
    Destroyed,
    /// The subject was forgotten before.
    Already,
}

/// What a key store reports.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyStoreError {
    /// The key store has never had a key for this subject.
    #[error("unknown subject `{subject}`: the key store has never held a key for it")]
    UnknownSubject {
        /// The subject.
        subject: String,
    },
    /// A stored key cannot be unwrapped by the configured master key.
    #[error(
        "the data key of subject `{subject}` cannot be unwrapped: wrong master key, or a corrupt key row"
    )]
    Unwrap {
        /// The subject.
        subject: String,
    },
    /// The subject's id is empty.
    #[error("empty subject id")]
    EmptySubject,
    /// A key store of a multi-tenant store was called without a tenant, or given one it
    /// cannot isolate.
    #[error(transparent)]
    Tenant(#[from] crate::tenant::TenantError),
    /// The backend failed.
    #[error("key store backend error: {0}")]
    Backend(#[source] BoxError),
}

/// Where the data keys of subjects live.
///
/// A subject's key is created on its first encryption and destroyed by
/// [`forget`](KeyStore::forget), which leaves a tombstone: the store tells a forgotten
/// subject (its fields read as erased) from one it never knew (a missing key is an error).
pub trait KeyStore: Clone + Send + Sync + 'static {
    /// The key of `subject`, created when it has none; [`KeyState::Forgotten`] when it was
    /// forgotten (no key is created again).
    fn key(&self, subject: &str) -> impl Future<Output = Result<KeyState, KeyStoreError>> + Send;

    /// The keys of `subjects`, in one query: subjects the store never knew are absent.
    fn lookup(
        &self,
        subjects: &[String],
    ) -> impl Future<Output = Result<HashMap<String, KeyState>, KeyStoreError>> + Send;

    /// Destroys the key of `subject`, leaving a tombstone.
    /// [`KeyStoreError::UnknownSubject`] when it never had one.
    fn forget(
        &self,
        subject: &str,
    ) -> impl Future<Output = Result<Forgotten, KeyStoreError>> + Send;

    /// A handle on this key store bound to `tenant`, as [`EventStore::tenant`] binds an event
    /// store: [`Shredding`] takes one for each tenant whose keys it uses, so a key store that
    /// keeps tenants apart (`PgKeyStore` of a multi-tenant store, under row-level security)
    /// serves each tenant's keys only to that tenant. Key ids name their tenant already
    /// ([`key_id`]). The default, for a key store that keeps no tenants, is the store itself.
    fn tenant(&self, tenant: &TenantId) -> Result<Self, KeyStoreError> {
        let _ = tenant;
        Ok(self.clone())
    }
}

/// Keys in memory, for tests and the in-memory store. Counts its lookups.
#[derive(Clone, Debug, Default)]
pub struct MemoryKeyStore {
    keys: Arc<Mutex<HashMap<String, Option<DataKey>>>>,
    lookups: Arc<AtomicU64>,
}

impl MemoryKeyStore {
    /// No keys.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many times [`KeyStore::lookup`] was called.
    pub fn lookups(&self) -> u64 {
        self.lookups.load(Ordering::Relaxed)
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Option<DataKey>>> {
        self.keys.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn state(key: Option<&DataKey>) -> KeyState {
    key.map_or(KeyState::Forgotten, |k| KeyState::Active(k.clone()))
}

impl KeyStore for MemoryKeyStore {
    fn key(&self, subject: &str) -> impl Future<Output = Result<KeyState, KeyStoreError>> + Send {
        let result = if subject.is_empty() {
            Err(KeyStoreError::EmptySubject)
        } else {
            let mut map = self.map();
            let entry = map
                .entry(subject.to_owned())
                .or_insert_with(|| Some(DataKey::generate()));
            Ok(state(entry.as_ref()))
        };
        std::future::ready(result)
    }

    fn lookup(
        &self,
        subjects: &[String],
    ) -> impl Future<Output = Result<HashMap<String, KeyState>, KeyStoreError>> + Send {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        let map = self.map();
        let found = subjects
            .iter()
            .filter_map(|s| map.get(s).map(|k| (s.clone(), state(k.as_ref()))))
            .collect();
        std::future::ready(Ok(found))
    }

    fn forget(
        &self,
        subject: &str,
    ) -> impl Future<Output = Result<Forgotten, KeyStoreError>> + Send {
        let result = match self.map().get_mut(subject) {
            None => Err(KeyStoreError::UnknownSubject {
                subject: subject.to_owned(),
            }),
            Some(key) => Ok(if key.take().is_some() {
                Forgotten::Destroyed
            } else {
                Forgotten::Already
            }),
        };
        std::future::ready(result)
    }
}

// --- Errors of the decorator --------------------------------------------------------------------

/// A personal field that cannot be encrypted or decrypted, naming the event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PersonalError {
    /// A stored ciphertext fails authentication: it was altered, moved to another event,
    /// field or subject, or encrypted under another key.
    #[error(
        "personal field `{field}` of event `{event_type}` at position {position} (stream `{stream}`) fails authentication: altered, moved or encrypted under another key"
    )]
    Tampered {
        /// The stored type name.
        event_type: String,
        /// The stream.
        stream: StreamId,
        /// The event's global position.
        position: u64,
        /// The event's id, when the read returned it (not in an aggregate's replay).
        event_id: Option<Uuid>,
        /// The field.
        field: String,
    },
    /// The key store has no key for the subject of a stored event, and the subject was never
    /// forgotten: the key store lost it, or is not the one the events were written with.
    #[error(
        "no key for subject `{subject}` of event `{event_type}` at position {position} (stream `{stream}`), and the subject was never forgotten"
    )]
    MissingKey {
        /// The stored type name.
        event_type: String,
        /// The stream.
        stream: StreamId,
        /// The event's global position.
        position: u64,
        /// The event's id, when the read returned it (not in an aggregate's replay).
        event_id: Option<Uuid>,
        /// The subject.
        subject: String,
    },
    /// A stored personal field or its subject is not what an encrypted event holds (plain
    /// text where a ciphertext belongs, bad base64, no subject).
    #[error(
        "personal field `{field}` of event `{event_type}` at position {position} (stream `{stream}`) is malformed: {message}"
    )]
    Malformed {
        /// The stored type name.
        event_type: String,
        /// The stream.
        stream: StreamId,
        /// The event's global position.
        position: u64,
        /// The event's id, when the read returned it (not in an aggregate's replay).
        event_id: Option<Uuid>,
        /// The field.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// An event to append lacks the subject of a personal field, or holds one that is not a
    /// non-empty string or an integer.
    #[error(
        "event `{event_type}` ({event_id}) appended to stream `{stream}` has no valid subject in field `{field}`: expected a non-empty string or an integer"
    )]
    InvalidSubject {
        /// The stored type name.
        event_type: String,
        /// The event's id.
        event_id: Uuid,
        /// The stream appended to.
        stream: StreamId,
        /// The subject field.
        field: String,
    },
    /// An event to append has personal data of a forgotten subject, which has no key any more.
    #[error(
        "event `{event_type}` ({event_id}) appended to stream `{stream}` has personal data of the forgotten subject `{subject}`"
    )]
    SubjectForgotten {
        /// The stored type name.
        event_type: String,
        /// The event's id.
        event_id: Uuid,
        /// The stream appended to.
        stream: StreamId,
        /// The subject.
        subject: String,
    },
    /// The key store failed.
    #[error(transparent)]
    KeyStore(#[from] KeyStoreError),
}

/// A stored event that cannot be decoded, and will not be on a retry: what a runner parks
/// or stops on ([`StoreError::undecodable_event`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct UndecodableEvent {
    /// The stored type name.
    pub event_type: String,
    /// The stream.
    pub stream: StreamId,
    /// The event's global position.
    pub position: u64,
    /// The event's id, when the read returned it.
    pub event_id: Option<Uuid>,
}

impl PersonalError {
    /// The stored event this error is about, when it cannot be decoded and retrying will not
    /// change that: a ciphertext failing authentication ([`Tampered`](Self::Tampered)), a
    /// field that is no ciphertext ([`Malformed`](Self::Malformed)), a key lost without being
    /// forgotten ([`MissingKey`](Self::MissingKey)). `None` for errors of appends and of the
    /// key store, which are not the event's.
    pub fn undecodable_event(&self) -> Option<UndecodableEvent> {
        let (event_type, stream, position, event_id) = match self {
            Self::Tampered {
                event_type,
                stream,
                position,
                event_id,
                ..
            }
            | Self::MissingKey {
                event_type,
                stream,
                position,
                event_id,
                ..
            }
            | Self::Malformed {
                event_type,
                stream,
                position,
                event_id,
                ..
            } => (event_type, stream, *position, *event_id),
            _ => return None,
        };
        Some(UndecodableEvent {
            event_type: event_type.clone(),
            stream: stream.clone(),
            position,
            event_id,
        })
    }
}

impl From<PersonalError> for StoreError {
    fn from(e: PersonalError) -> Self {
        StoreError::Personal(Box::new(e))
    }
}

// --- The decorator ------------------------------------------------------------------------------

/// An event store whose personal fields are encrypted at rest with their subject's key.
///
/// Appends encrypt the fields its [`PersonalSchema`] declares; every read (`read_stream`,
/// `replay_stream`, `read_all`, `event_by_id`, `load_aggregate`, and so subscriptions,
/// projections and repositories built on it) decrypts them, with one key-store lookup per
/// batch, and replaces those of forgotten subjects by the erased marker.
///
/// Snapshots are not kept: an aggregate's state may hold personal data in plain text, which
/// forgetting could not reach, so [`save_snapshot`](EventStore::save_snapshot) stores nothing
/// and aggregates load from their events.
#[derive(Clone, Debug)]
pub struct Shredding<S, K> {
    inner: S,
    keys: K,
    schema: Arc<PersonalSchema>,
}

impl<S: EventStore, K: KeyStore> Shredding<S, K> {
    /// Wraps `inner`, with data keys in `keys`, encrypting the fields `schema` declares.
    pub fn new(inner: S, keys: K, schema: PersonalSchema) -> Self {
        Self {
            inner,
            keys,
            schema: Arc::new(schema),
        }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The key store.
    pub fn keys(&self) -> &K {
        &self.keys
    }

    /// Forgets `subject`: destroys its key, so its personal fields read as erased from now
    /// on. [`KeyStoreError::UnknownSubject`] when it never had a key.
    ///
    /// On a tenant's handle ([`EventStore::tenant`]) it forgets that tenant's subject only:
    /// the keys of a multi-tenant store are kept per tenant, so two tenants' subjects with the
    /// same id never share a key (see [`key_id`]).
    pub async fn forget(&self, subject: &str) -> Result<Forgotten, KeyStoreError> {
        self.keys
            .forget(&key_id(self.inner.bound_tenant(), subject))
            .await
    }

    /// The tenant whose keys encrypt `events`: the handle's, or, on an unbound multi-tenant
    /// store, the one the events name (the store appends them under it). `None` on a
    /// single-tenant store, where a tenant in the metadata is only information.
    fn append_tenant(&self, events: &[NewEvent]) -> Option<TenantId> {
        if let Some(bound) = self.inner.bound_tenant() {
            return Some(bound.clone());
        }
        let named = events.iter().find_map(|e| e.metadata.tenant.as_deref())?;
        let tenant = TenantId::new(named).ok()?;
        self.inner.tenant(&tenant).is_ok().then_some(tenant)
    }

    /// The events with their personal fields encrypted.
    async fn seal_events(
        &self,
        stream: &StreamId,
        events: &[NewEvent],
    ) -> Result<Vec<NewEvent>, StoreError> {
        let tenant = self.append_tenant(events);
        let tenant = tenant.as_ref();
        // Through the unbound store, the keys of the tenant the events name.
        let bound_keys;
        let key_store = match tenant {
            Some(tenant) if self.inner.bound_tenant().is_none() => {
                bound_keys = self.keys.tenant(tenant).map_err(PersonalError::from)?;
                &bound_keys
            }
            _ => &self.keys,
        };
        // The payloads with personal fields, and their subjects' key ids.
        let mut objects = Vec::with_capacity(events.len());
        let mut subjects = BTreeSet::new();
        for event in events {
            let fields = self.schema.fields(&event.event_type, event.schema_version);
            if fields.is_empty() {
                objects.push(None);
                continue;
            }
            let Ok(Value::Object(object)) = event.payload.to_value() else {
                // Not an object: no field is present to encrypt, and no subject either.
                return Err(invalid_subject(stream, event, fields[0].subject).into());
            };
            for f in fields {
                if object.contains_key(f.field) {
                    let subject = subject_of(&object, f.subject)
                        .ok_or_else(|| invalid_subject(stream, event, f.subject))?;
                    subjects.insert(key_id(tenant, &subject));
                }
            }
            objects.push(Some((fields, object)));
        }
        // One lookup for the known subjects, a new key for each of the others.
        let mut keys = if subjects.is_empty() {
            HashMap::new()
        } else {
            let subjects: Vec<String> = subjects.iter().cloned().collect();
            key_store
                .lookup(&subjects)
                .await
                .map_err(PersonalError::from)?
        };
        for subject in subjects {
            if let std::collections::hash_map::Entry::Vacant(entry) = keys.entry(subject) {
                let state = key_store
                    .key(entry.key())
                    .await
                    .map_err(PersonalError::from)?;
                entry.insert(state);
            }
        }
        let mut out = Vec::with_capacity(events.len());
        for (event, object) in events.iter().zip(objects) {
            let Some((fields, mut object)) = object else {
                out.push(event.clone());
                continue;
            };
            for f in fields {
                let Some(subject) = subject_of(&object, f.subject) else {
                    continue;
                };
                let Some(value) = object.get_mut(f.field) else {
                    continue;
                };
                let id = key_id(tenant, &subject);
                let key = match keys.get(&id) {
                    Some(KeyState::Active(key)) => key,
                    _ => {
                        return Err(PersonalError::SubjectForgotten {
                            event_type: event.event_type.clone(),
                            event_id: event.event_id,
                            stream: stream.clone(),
                            subject,
                        }
                        .into());
                    }
                };
                let plain = Zeroizing::new(value.to_string().into_bytes());
                let aad = field_context(stream.as_str(), &event.event_type, f.field, &id);
                let sealed = seal(key, &aad, &plain);
                let mut envelope = Map::new();
                envelope.insert(
                    ENCRYPTED_KEY.to_owned(),
                    Value::String(BASE64.encode(sealed)),
                );
                *value = Value::Object(envelope);
            }
            let payload = Payload::encode(&object).map_err(|source| StoreError::Encode {
                what: "encrypted payload",
                source,
            })?;
            out.push(NewEvent {
                payload,
                ..event.clone()
            });
        }
        Ok(out)
    }

    /// Decrypts the personal fields of a batch of stored events in place, with one key-store
    /// lookup for all their subjects.
    ///
    /// Each payload is parsed once, to its top-level members borrowed from its text; the
    /// decrypted values (or the erased marker) are spliced into that text in place of their
    /// envelopes, so the rest of the payload is copied, never re-serialized. Each key's cipher
    /// is built once per batch; base64 decoding and decryption reuse one buffer.
    async fn open_batch<'a>(&self, items: Vec<Stored<'a>>) -> Result<(), StoreError> {
        // Reads of a multi-tenant store are bound to a tenant (an unbound one refuses them).
        let tenant = self.inner.bound_tenant();
        // The events with personal fields: where each field's envelope lies in the payload's
        // text, and the key id of its subject.
        let mut pending: Vec<(Stored<'a>, Vec<Sealed>)> = Vec::new();
        let mut subjects = BTreeSet::new();
        for item in items {
            let fields = self.schema.fields(item.event_type, item.schema_version);
            if fields.is_empty() {
                continue;
            }
            let text = item.payload.as_str();
            let members = raw_members(text).ok_or_else(|| {
                item.malformed(fields[0].field, "the payload is not a JSON object")
            })?;
            let mut sealed = Vec::with_capacity(fields.len());
            for f in fields {
                let Some(value) = member(&members, f.field) else {
                    continue;
                };
                let subject = member(&members, f.subject)
                    .and_then(raw_subject)
                    .ok_or_else(|| {
                        item.malformed(f.subject, "its subject field is missing or invalid")
                    })?;
                let start = value.get().as_ptr() as usize - text.as_ptr() as usize;
                sealed.push(Sealed {
                    field: f.field,
                    key_id: key_id(tenant, &subject),
                    subject,
                    start,
                    end: start + value.get().len(),
                });
            }
            drop(members);
            sealed.sort_by_key(|s| s.start);
            for s in &sealed {
                if !subjects.contains(&s.key_id) {
                    subjects.insert(s.key_id.clone());
                }
            }
            pending.push((item, sealed));
        }
        if pending.is_empty() {
            return Ok(());
        }
        let subjects: Vec<String> = subjects.into_iter().collect();
        let keys = self
            .keys
            .lookup(&subjects)
            .await
            .map_err(PersonalError::from)?;
        let erased = erased_marker();
        let mut ciphers: HashMap<&str, XChaCha20Poly1305> = HashMap::new();
        let mut buffer = Zeroizing::new(Vec::new());
        let mut aad = Vec::new();
        for (item, sealed) in pending {
            let text = item.payload.as_str();
            let mut out = String::with_capacity(text.len());
            let mut copied = 0;
            for s in sealed {
                out.push_str(&text[copied..s.start]);
                copied = s.end;
                let cipher = match keys.get_key_value(&s.key_id) {
                    None => return Err(item.missing_key(s.subject).into()),
                    Some((_, KeyState::Forgotten)) => {
                        out.push_str(erased.get());
                        continue;
                    }
                    Some((id, KeyState::Active(key))) => {
                        ciphers.entry(id.as_str()).or_insert_with(|| key.cipher())
                    }
                };
                envelope_bytes_into(&text[s.start..s.end], &mut buffer)
                    .map_err(|m| item.malformed(s.field, m))?;
                if buffer.len() < NONCE_LEN {
                    return Err(item.tampered(s.field).into());
                }
                let nonce = *XNonce::from_slice(&buffer[..NONCE_LEN]);
                buffer.drain(..NONCE_LEN);
                field_context_into(
                    &mut aad,
                    item.stream.as_str(),
                    item.event_type,
                    s.field,
                    &s.key_id,
                );
                cipher
                    .decrypt_in_place(&nonce, &aad, &mut *buffer)
                    .map_err(|_| item.tampered(s.field))?;
                let plain = std::str::from_utf8(&buffer)
                    .map_err(|_| item.malformed(s.field, "decrypted text is not UTF-8"))?;
                // One JSON value, as the field held when it was sealed.
                serde_json::from_str::<&RawValue>(plain).map_err(|e| {
                    item.malformed(s.field, &format!("decrypted text is not JSON: {e}"))
                })?;
                out.push_str(plain);
            }
            out.push_str(&text[copied..]);
            *item.payload = Payload::from_trusted_json(out);
        }
        Ok(())
    }

    async fn open_recorded(&self, events: &mut [RecordedEvent]) -> Result<(), StoreError> {
        let items = events
            .iter_mut()
            .map(|e| Stored {
                stream: &e.stream_id,
                position: e.position,
                event_id: Some(e.event_id),
                event_type: &e.event_type,
                schema_version: e.schema_version,
                payload: &mut e.payload,
            })
            .collect();
        self.open_batch(items).await
    }
}

/// A stored event being decrypted.
struct Stored<'a> {
    stream: &'a StreamId,
    position: u64,
    event_id: Option<Uuid>,
    event_type: &'a str,
    schema_version: u32,
    payload: &'a mut Payload,
}

impl Stored<'_> {
    fn malformed(&self, field: &str, message: &str) -> PersonalError {
        PersonalError::Malformed {
            event_type: self.event_type.to_owned(),
            stream: self.stream.clone(),
            position: self.position,
            event_id: self.event_id,
            field: field.to_owned(),
            message: message.to_owned(),
        }
    }

    fn tampered(&self, field: &str) -> PersonalError {
        PersonalError::Tampered {
            event_type: self.event_type.to_owned(),
            stream: self.stream.clone(),
            position: self.position,
            event_id: self.event_id,
            field: field.to_owned(),
        }
    }

    fn missing_key(&self, subject: String) -> PersonalError {
        PersonalError::MissingKey {
            event_type: self.event_type.to_owned(),
            stream: self.stream.clone(),
            position: self.position,
            event_id: self.event_id,
            subject,
        }
    }
}

fn invalid_subject(stream: &StreamId, event: &NewEvent, field: &str) -> PersonalError {
    PersonalError::InvalidSubject {
        event_type: event.event_type.clone(),
        event_id: event.event_id,
        stream: stream.clone(),
        field: field.to_owned(),
    }
}

/// The subject named by `field`: a non-empty string, or an integer as text.
fn subject_of(object: &Map<String, Value>, field: &str) -> Option<String> {
    subject_value(object.get(field)?)
}

/// The id a subject's key has in the key store: the subject's id on a single-tenant store;
/// on a tenant's, the tenant and the subject's id separated by U+001F (a tenant id holds no
/// control character, nor does a subject's id, so the two parts never run into each other and
/// two tenants' subjects with one id get two keys).
pub fn key_id(tenant: Option<&TenantId>, subject: &str) -> String {
    match tenant {
        None => subject.to_owned(),
        Some(tenant) => format!("{}\u{1f}{subject}", tenant.as_str()),
    }
}

/// A subject id: a non-empty string without control characters, or an integer as text.
fn subject_value(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() && !s.chars().any(char::is_control) => Some(s.clone()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

/// A personal field of a stored payload: where its envelope lies in the payload's text, and
/// its subject.
struct Sealed {
    field: &'static str,
    subject: String,
    key_id: String,
    start: usize,
    end: usize,
}

/// The top-level members of a JSON object, as raw text borrowed from `text` (keys too, unless
/// escaped); `None` when it is not an object.
fn raw_members(text: &str) -> Option<Vec<(Cow<'_, str>, &RawValue)>> {
    serde_json::from_str::<Members<'_>>(text).ok().map(|m| m.0)
}

/// The value of member `name` (the last one, as a map would keep it).
fn member<'a>(members: &[(Cow<'a, str>, &'a RawValue)], name: &str) -> Option<&'a RawValue> {
    members
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| *v)
}

struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut map: M,
            ) -> Result<Self::Value, M::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some((key, value)) = map.next_entry::<Key<'de>, &'de RawValue>()? {
                    members.push((key.0, value));
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(Visit)
    }
}

/// A member's name, borrowed unless it holds escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(Visit)
    }
}

/// The subject held by a raw member: a non-empty string without control characters, or an
/// integer as text.
fn raw_subject(value: &RawValue) -> Option<String> {
    let text = value.get();
    let subject = if text.starts_with('"') {
        match serde_json::from_str::<&str>(text) {
            Ok(borrowed) => borrowed.to_owned(),
            Err(_) => serde_json::from_str::<String>(text).ok()?,
        }
    } else {
        let number = serde_json::from_str::<serde_json::Number>(text).ok()?;
        if !(number.is_i64() || number.is_u64()) {
            return None;
        }
        number.to_string()
    };
    (!subject.is_empty() && !subject.chars().any(char::is_control)).then_some(subject)
}

/// An encrypted field's envelope.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope<'a> {
    #[serde(rename = "$encrypted", borrow)]
    data: Cow<'a, str>,
}

/// Decodes an encrypted field's envelope `{"$encrypted": "<base64>"}` into `buffer`.
fn envelope_bytes_into(value: &str, buffer: &mut Vec<u8>) -> Result<(), &'static str> {
    let envelope: Envelope<'_> =
        serde_json::from_str(value).map_err(|_| "expected an encrypted value, found plain JSON")?;
    buffer.clear();
    BASE64
        .decode_vec(envelope.data.as_bytes(), buffer)
        .map_err(|_| "the encrypted value is not valid base64")
}

/// The erased marker as raw JSON.
fn erased_marker() -> Box<RawValue> {
    // Serializing a one-member struct to JSON text cannot fail.
    serde_json::value::to_raw_value(&ErasedMarker { erased: True }).unwrap_or_default()
}

impl<S: EventStore, K: KeyStore> EventStore for Shredding<S, K> {
    fn tenant(&self, tenant: &TenantId) -> Result<Self, StoreError> {
        Ok(Self {
            inner: self.inner.tenant(tenant)?,
            keys: self.keys.tenant(tenant).map_err(PersonalError::from)?,
            schema: Arc::clone(&self.schema),
        })
    }

    fn bound_tenant(&self) -> Option<&TenantId> {
        self.inner.bound_tenant()
    }

    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Result<AppendResult, StoreError> {
        let sealed = self.seal_events(stream, events).await?;
        match self.inner.append(stream, expected, &sealed).await {
            Err(StoreError::DuplicateEventId { event_id, stream }) => {
                // A retry is encrypted under fresh nonces, so the store sees other
                // content: compare the plain text of what it holds instead.
                let mut stored = Vec::with_capacity(events.len());
                for event in events {
                    stored.push(self.event_by_id(event.event_id).await?);
                }
                let stored: Vec<Option<&RecordedEvent>> =
                    stored.iter().map(Option::as_ref).collect();
                match check_retry(&stream, events, &stored) {
                    Ok(Some(result)) => Ok(result),
                    _ => Err(StoreError::DuplicateEventId { event_id, stream }),
                }
            }
            other => other,
        }
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        read: &StreamRead,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut events = self.inner.read_stream(stream, read).await?;
        self.open_recorded(&mut events).await?;
        Ok(events)
    }

    async fn replay_stream(
        &self,
        stream: &StreamId,
        read: &StreamRead,
    ) -> Result<Vec<ReplayEvent>, StoreError> {
        let mut events = self.inner.replay_stream(stream, read).await?;
        let items = events
            .iter_mut()
            .map(|e| Stored {
                stream,
                position: e.position,
                event_id: None,
                event_type: &e.event_type,
                schema_version: e.schema_version,
                payload: &mut e.payload,
            })
            .collect();
        self.open_batch(items).await?;
        Ok(events)
    }

    fn stream_version(
        &self,
        stream: &StreamId,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        self.inner.stream_version(stream)
    }

    async fn read_all(&self, read: &ReadAll) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut events = self.inner.read_all(read).await?;
        self.open_recorded(&mut events).await?;
        Ok(events)
    }

    fn head_position(&self) -> impl Future<Output = Result<u64, StoreError>> + Send {
        self.inner.head_position()
    }

    async fn event_by_id(&self, event_id: Uuid) -> Result<Option<RecordedEvent>, StoreError> {
        let Some(event) = self.inner.event_by_id(event_id).await? else {
            return Ok(None);
        };
        let mut events = [event];
        self.open_recorded(&mut events).await?;
        let [event] = events;
        Ok(Some(event))
    }

    fn save_snapshot(
        &self,
        _snapshot: &Snapshot,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        std::future::ready(Ok(()))
    }

    fn load_snapshot(
        &self,
        _stream: &StreamId,
        _schema_version: u32,
        _max_version: Option<u64>,
    ) -> impl Future<Output = Result<Option<Snapshot>, StoreError>> + Send {
        std::future::ready(Ok(None))
    }

    async fn load_aggregate(
        &self,
        stream: &StreamId,
        _schema_version: u32,
        max_version: Option<u64>,
    ) -> Result<AggregateRead, StoreError> {
        let mut read = StreamRead::all();
        read.to = max_version;
        let events = self.replay_stream(stream, &read).await?;
        Ok(AggregateRead {
            snapshot: None,
            events,
        })
    }

    fn record_command(
        &self,
        record: &CommandRecord,
    ) -> impl Future<Output = Result<Option<CommandRecord>, StoreError>> + Send {
        self.inner.record_command(record)
    }

    fn command_record(
        &self,
        command_id: Uuid,
    ) -> impl Future<Output = Result<Option<CommandRecord>, StoreError>> + Send {
        self.inner.command_record(command_id)
    }

    fn head_hint(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.inner.head_hint()
    }

    fn head_status(&self) -> impl Future<Output = Result<HeadStatus, StoreError>> + Send {
        self.inner.head_status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_errors_of_a_stored_event_make_it_undecodable() {
        let stream = StreamId::new("customer", "c-1").unwrap();
        let event_id = Some(Uuid::now_v7());
        let expected = Some(UndecodableEvent {
            event_type: "Registered".into(),
            stream: stream.clone(),
            position: 7,
            event_id,
        });
        let tampered = PersonalError::Tampered {
            event_type: "Registered".into(),
            stream: stream.clone(),
            position: 7,
            event_id,
            field: "name".into(),
        };
        let malformed = PersonalError::Malformed {
            event_type: "Registered".into(),
            stream: stream.clone(),
            position: 7,
            event_id,
            field: "name".into(),
            message: "bad base64".into(),
        };
        let missing = PersonalError::MissingKey {
            event_type: "Registered".into(),
            stream: stream.clone(),
            position: 7,
            event_id,
            subject: "c-1".into(),
        };
        for error in [tampered, malformed, missing] {
            assert_eq!(StoreError::from(error).undecodable_event(), expected);
        }
        let unwrap = PersonalError::KeyStore(KeyStoreError::Unwrap {
            subject: "c-1".into(),
        });
        assert_eq!(StoreError::from(unwrap).undecodable_event(), None);
        let forgotten = PersonalError::SubjectForgotten {
            event_type: "Registered".into(),
            event_id: Uuid::now_v7(),
            stream,
            subject: "c-1".into(),
        };
        assert_eq!(StoreError::from(forgotten).undecodable_event(), None);
    }

    #[test]
    fn key_ids_keep_tenants_apart_and_subjects_hold_no_control_character() {
        let acme = TenantId::new("acme").unwrap();
        assert_eq!(key_id(None, "c-1"), "c-1");
        assert_eq!(key_id(Some(&acme), "c-1"), "acme\u{1f}c-1");
        // The separator cannot occur in a tenant id, so the first one ends the tenant.
        assert!(TenantId::new("a\u{1f}b").is_err());
        assert_eq!(subject_value(&Value::from("c-1")).as_deref(), Some("c-1"));
        assert_eq!(subject_value(&Value::from(42)).as_deref(), Some("42"));
        for bad in ["", "a\u{1f}b", "line\nbreak"] {
            assert_eq!(subject_value(&Value::from(bad)), None, "{bad:?}");
        }
    }

    #[test]
    fn sealing_twice_gives_different_ciphertexts_that_both_open() {
        let key = DataKey::generate();
        let a = seal(&key, b"ctx", b"\"Ada\"");
        let b = seal(&key, b"ctx", b"\"Ada\"");
        assert_ne!(a, b);
        assert_ne!(a[..NONCE_LEN], b[..NONCE_LEN]);
        assert_eq!(open(&key, b"ctx", &a).as_deref(), Some(&b"\"Ada\""[..]));
        assert_eq!(open(&key, b"ctx", &b).as_deref(), Some(&b"\"Ada\""[..]));
        assert_eq!(open(&key, b"other", &a), None);
        assert_eq!(open(&DataKey::generate(), b"ctx", &a), None);
        assert_eq!(open(&key, b"ctx", &a[..NONCE_LEN - 1]), None);
    }

    #[test]
    fn contexts_are_unambiguous() {
        assert_ne!(
            field_context("s", "ab", "c", "d"),
            field_context("s", "a", "bc", "d")
        );
    }

    #[test]
    fn master_key_wraps_per_subject() {
        let master = MasterKey::generate();
        let key = DataKey::generate();
        let wrapped = master.wrap("alice", &key);
        let back = master.unwrap("alice", &wrapped).unwrap();
        assert_eq!(back.as_bytes(), key.as_bytes());
        assert!(matches!(
            master.unwrap("bob", &wrapped),
            Err(KeyStoreError::Unwrap { subject }) if subject == "bob"
        ));
        assert!(MasterKey::generate().unwrap("alice", &wrapped).is_err());
        let text = master.to_base64();
        let again = MasterKey::from_base64(&text).unwrap();
        assert_eq!(
            again.unwrap("alice", &wrapped).unwrap().as_bytes(),
            key.as_bytes()
        );
        assert_eq!(
            MasterKey::from_base64("c2hvcnQ=").unwrap_err(),
            MasterKeyError
        );
        assert_eq!(
            MasterKey::from_base64("not base64!").unwrap_err(),
            MasterKeyError
        );
    }

    #[test]
    fn schema_refuses_bad_declarations() {
        let bad = PersonalSchema::new().register_fields(
            "E",
            1,
            &[
                PersonalField::new("name", "id"),
                PersonalField::new("id", "x"),
            ],
        );
        assert!(
            matches!(bad, Err(PersonalSchemaError::SubjectIsPersonal { field, .. }) if field == "id")
        );
        let twice = PersonalSchema::new().register_fields(
            "E",
            1,
            &[
                PersonalField::new("name", "id"),
                PersonalField::new("name", "id"),
            ],
        );
        assert!(matches!(twice, Err(PersonalSchemaError::Repeated { .. })));
        let conflict = PersonalSchema::new()
            .register_fields("E", 1, &[PersonalField::new("name", "id")])
            .unwrap()
            .register_fields("E", 1, &[PersonalField::new("mail", "id")]);
        assert!(matches!(
            conflict,
            Err(PersonalSchemaError::Conflict { .. })
        ));
    }

    #[test]
    fn personal_values_round_trip_and_refuse_other_shapes() {
        let known: Personal<u32> = serde_json::from_str("7").unwrap();
        assert_eq!(known, Personal::Known(7));
        assert_eq!(serde_json::to_string(&known).unwrap(), "7");
        let erased: Personal<u32> = serde_json::from_str(r#"{"$erased":true}"#).unwrap();
        assert_eq!(erased, Personal::Erased);
        assert!(serde_json::from_str::<Personal<u32>>(r#"{"$erased":false}"#).is_err());
        assert!(serde_json::from_str::<Personal<u32>>(r#""seven""#).is_err());
    }
}
