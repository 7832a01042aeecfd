//! Events: the stored envelope, payloads, and the traits the macros implement.

use std::fmt;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::error::DecodeError;
use crate::metadata::Metadata;
use crate::stream::StreamId;

/// A JSON document, kept as text so that it is decoded once, straight into the target type.
///
/// Built from a serialized value ([`Payload::encode`]), from text that is checked
/// ([`Payload::from_json`]), or from text a store trusts because its database already
/// validated it ([`Payload::from_trusted_json`]). Text that turns out to be malformed only
/// ever surfaces as a decoding error, never as a panic.
#[derive(Clone)]
pub struct Payload(Box<str>);

impl Payload {
    /// Serializes `value` to JSON.
    pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        serde_json::to_string(value).map(|s| Self(s.into_boxed_str()))
    }

    /// Takes JSON text, checking that it is well-formed, escapes included: a `\uD800` to
    /// `\uDFFF` escape that is not half of a surrogate pair is refused, since it encodes no
    /// character (and PostgreSQL's `jsonb` refuses it).
    pub fn from_json(json: String) -> Result<Self, serde_json::Error> {
        serde_json::from_str::<serde::de::IgnoredAny>(&json)?;
        if json.contains("\\ud") || json.contains("\\uD") {
            // Skipping a string does not decode its escapes: decoding it checks the pairs.
            serde_json::from_str::<serde_json::Value>(&json)?;
        }
        Ok(Self(json.into_boxed_str()))
    }

    /// Takes JSON text without checking it: for stores reading a column whose database
    /// already validated it (PostgreSQL `jsonb`). Malformed text is reported when the payload
    /// is decoded.
    pub fn from_trusted_json(json: String) -> Self {
        Self(json.into_boxed_str())
    }

    /// Takes already-validated raw JSON.
    pub fn from_raw(raw: Box<RawValue>) -> Self {
        Self(Box::<str>::from(raw))
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Deserializes the payload into `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(&self.0)
    }

    /// Parses the payload into a generic JSON value (for JSON-level upcasters).
    pub fn to_value(&self) -> Result<serde_json::Value, serde_json::Error> {
        self.decode()
    }

    /// Where the payload holds the NUL character (`\u0000`), which no store keeps
    /// (PostgreSQL's `jsonb` refuses it): the JSONPath of the first string value or object
    /// key holding it, such as `$.lines[2].sku` or `$["a\u0000b"]`; `None` when there is none.
    ///
    /// Stores call it before appending ([`validate_batch`](crate::store::validate_batch)).
    /// Text without the escape `\u0000` (or a raw NUL byte) is passed over without parsing.
    ///
    /// ```
    /// use factum::store::Payload;
    /// let clean = Payload::encode(&serde_json::json!({"note": "a\\u0000 is fine"}))?;
    /// assert_eq!(clean.nul_character(), None);
    /// let nul = Payload::encode(&serde_json::json!({"lines": [{"sku": "a\u{0}"}]}))?;
    /// assert_eq!(nul.nul_character().as_deref(), Some("$.lines[0].sku"));
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    pub fn nul_character(&self) -> Option<String> {
        if !may_hold_nul(self.as_str().as_bytes()) {
            return None;
        }
        match self.to_value() {
            Ok(value) => nul_path(&value),
            // Only trusted text can be malformed; a raw NUL byte in it has no path.
            Err(_) => Some("$".to_owned()),
        }
    }
}

/// Whether JSON text may encode the NUL character: it holds the escape `\u0000` (not an
/// escaped backslash followed by `u0000`) or a raw NUL byte. One vectorised pass.
fn may_hold_nul(text: &[u8]) -> bool {
    let mut at = 0;
    while let Some(found) = memchr::memchr2(b'\\', 0, &text[at..]) {
        let i = at + found;
        if text[i] == 0 || text[i + 1..].starts_with(b"u0000") {
            return true;
        }
        // Skips the escaped character, so that `\\u0000` is not taken for `\u0000`.
        at = i + 2;
        if at >= text.len() {
            return false;
        }
    }
    false
}

/// Whether a string value or object key of `value` holds the NUL character; allocates
/// nothing.
pub(crate) fn has_nul(value: &serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(members) => members
            .iter()
            .any(|(key, item)| key.contains('\0') || has_nul(item)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

/// The JSONPath of the first string value or object key of `value` that holds the NUL
/// character, or `None`.
pub(crate) fn nul_path(value: &serde_json::Value) -> Option<String> {
    let mut path = String::from("$");
    find_nul(value, &mut path).then_some(path)
}

fn find_nul(value: &serde_json::Value, path: &mut String) -> bool {
    use serde_json::Value;
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().enumerate().any(|(i, item)| {
            let len = path.len();
            let _ = write!(path, "[{i}]");
            let found = find_nul(item, path);
            if !found {
                path.truncate(len);
            }
            found
        }),
        Value::Object(members) => members.iter().any(|(key, item)| {
            let len = path.len();
            push_member(path, key);
            let found = key.contains('\0') || find_nul(item, path);
            if !found {
                path.truncate(len);
            }
            found
        }),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

/// Appends the member `key` to a JSONPath: `.key` for a plain name, `["key"]` (a JSON
/// string, control characters escaped) otherwise.
pub(crate) fn push_member(path: &mut String, key: &str) {
    let plain = key
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if plain {
        path.push('.');
        path.push_str(key);
    } else {
        path.push('[');
        path.push_str(&serde_json::Value::from(key).to_string());
        path.push(']');
    }
}

/// Two payloads are equal when they hold the same JSON value, whatever the key order or
/// white space.
impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
            || matches!(
                (self.to_value(), other.to_value()),
                (Ok(a), Ok(b)) if a == b
            )
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Serialized as the JSON it holds, not as a string.
impl Serialize for Payload {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let raw: &RawValue = serde_json::from_str(&self.0).map_err(serde::ser::Error::custom)?;
        raw.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(d).map(Self::from_raw)
    }
}

/// An event ready to be appended: no stream version, position or time yet.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    /// Unique id. Appending the same ids again is an idempotent retry.
    pub event_id: Uuid,
    /// Stored type name, such as `OrderPlaced`: 1 to
    /// [`MAX_EVENT_TYPE_LEN`](crate::store::MAX_EVENT_TYPE_LEN) bytes of any text but control
    /// characters (quotes, `%`, `_`, emoji are stored and filtered on exactly).
    pub event_type: String,
    /// Schema version of the payload.
    pub schema_version: u32,
    /// The event's data. Its strings and keys may hold any text but the NUL character
    /// (`\u0000`): see [`Payload::nul_character`].
    pub payload: Payload,
    /// Correlation, causation, actor, tenant, free key-values; the same rule for NUL.
    pub metadata: Metadata,
}

impl NewEvent {
    /// Encodes a typed event with a fresh time-ordered id.
    pub fn from_event<E: Event>(event: &E, metadata: Metadata) -> Result<Self, serde_json::Error> {
        Ok(Self {
            event_id: Uuid::now_v7(),
            event_type: E::NAME.to_owned(),
            schema_version: E::VERSION,
            payload: Payload::encode(event)?,
            metadata,
        })
    }

    /// Replaces the event id.
    #[must_use]
    pub fn with_id(mut self, event_id: Uuid) -> Self {
        self.event_id = event_id;
        self
    }

    /// Whether `recorded` holds the same event: same id, type, schema version and payload.
    pub fn same_content(&self, recorded: &RecordedEvent) -> bool {
        self.event_id == recorded.event_id
            && self.event_type == recorded.event_type
            && self.schema_version == recorded.schema_version
            && self.payload == recorded.payload
    }
}

/// An event as stored: the envelope of ARCHITECTURE's "stored event".
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordedEvent {
    /// Unique id.
    pub event_id: Uuid,
    /// The stream it belongs to.
    pub stream_id: StreamId,
    /// Its version in the stream: 1-based and gapless.
    pub stream_version: u64,
    /// Its global position: a reader following it never skips a committed event.
    pub position: u64,
    /// Stored type name.
    pub event_type: String,
    /// Schema version of the payload.
    pub schema_version: u32,
    /// The event's data.
    pub payload: Payload,
    /// Correlation, causation, actor, tenant, free key-values.
    pub metadata: Metadata,
    /// When the store committed it.
    pub recorded_at: DateTime<Utc>,
}

/// One event type: a past-tense fact with a stored name and schema version.
///
/// Implemented by `#[event]`; an old schema version is its own type with the same `NAME`, a
/// lower `VERSION`, and an upcast to the next version.
pub trait Event: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The stored type name.
    const NAME: &'static str;
    /// The schema version written for new events.
    const VERSION: u32;

    /// Decodes a stored payload of this event's name at schema `version`, upcasting older
    /// versions to this one.
    fn decode_stored(version: u32, payload: &Payload) -> Result<Decoded<Self>, DecodeError> {
        if version == Self::VERSION {
            payload
                .decode()
                .map(Decoded::One)
                .map_err(|source| DecodeError::payload(Self::NAME, version, source))
        } else {
            Err(DecodeError::UnknownVersion {
                event_type: Self::NAME.to_owned(),
                version,
            })
        }
    }
}

/// The set of events of one aggregate (or one projection): the enum `#[aggregate]` generates.
pub trait EventSet: Sized + Send + Sync + 'static {
    /// Every stored type name this set decodes.
    const EVENT_TYPES: &'static [&'static str];

    /// The stored type name of this event.
    fn event_type(&self) -> &'static str;

    /// The schema version this event is written with.
    fn schema_version(&self) -> u32;

    /// Serializes the payload.
    fn encode(&self) -> Result<Payload, serde_json::Error>;

    /// Decodes a stored event, running upcasters. Unknown names and versions are errors.
    fn decode(
        event_type: &str,
        schema_version: u32,
        payload: &Payload,
    ) -> Result<Decoded<Self>, DecodeError>;

    /// Decodes a recorded event.
    fn decode_recorded(event: &RecordedEvent) -> Result<Decoded<Self>, DecodeError> {
        Self::decode(&event.event_type, event.schema_version, &event.payload)
    }
}

/// What one stored event decodes into: usually one event, but an upcaster may split it into
/// several, or retire it into none.
#[derive(Clone, Debug, PartialEq)]
pub enum Decoded<E> {
    /// One event.
    One(E),
    /// Several events, or none.
    Many(Vec<E>),
}

impl<E> Decoded<E> {
    /// Converts every event.
    pub fn map<F, U>(self, mut f: F) -> Decoded<U>
    where
        F: FnMut(E) -> U,
    {
        match self {
            Decoded::One(e) => Decoded::One(f(e)),
            Decoded::Many(v) => Decoded::Many(v.into_iter().map(f).collect()),
        }
    }

    /// Converts every event with `Into`.
    pub fn convert<U: From<E>>(self) -> Decoded<U> {
        self.map(U::from)
    }
}

impl<E> IntoIterator for Decoded<E> {
    type Item = E;
    type IntoIter = DecodedIter<E>;

    fn into_iter(self) -> Self::IntoIter {
        match self {
            Decoded::One(e) => DecodedIter::One(Some(e)),
            Decoded::Many(v) => DecodedIter::Many(v.into_iter()),
        }
    }
}

/// Iterator over [`Decoded`].
#[derive(Debug)]
pub enum DecodedIter<E> {
    #[doc(hidden)]
    One(Option<E>),
    #[doc(hidden)]
    Many(std::vec::IntoIter<E>),
}

impl<E> Iterator for DecodedIter<E> {
    type Item = E;
    fn next(&mut self) -> Option<E> {
        match self {
            DecodedIter::One(e) => e.take(),
            DecodedIter::Many(it) => it.next(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_equality_ignores_key_order_and_spacing() {
        let a = Payload::from_json(r#"{"a":1,"b":[1,2]}"#.into()).unwrap();
        let b = Payload::from_json(r#"{ "b": [1, 2], "a": 1 }"#.into()).unwrap();
        let c = Payload::from_json(r#"{"a":2,"b":[1,2]}"#.into()).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(Payload::from_json("{nope".into()).is_err());
    }

    #[test]
    fn payload_serializes_as_json_and_trusted_text_fails_late() {
        let p = Payload::from_json(r#"{"a":[1,"x"]}"#.into()).unwrap();
        assert_eq!(serde_json::to_string(&p).unwrap(), r#"{"a":[1,"x"]}"#);
        let back: Payload = serde_json::from_str(r#" {"a": [1, "x"]} "#).unwrap();
        assert_eq!(back, p);
        let bad = Payload::from_trusted_json("{nope".into());
        assert!(bad.decode::<serde_json::Value>().is_err());
        assert!(serde_json::to_string(&bad).is_err());
    }

    #[test]
    fn nul_paths_name_values_and_keys() {
        let p = |v: serde_json::Value| Payload::encode(&v).unwrap().nul_character();
        assert_eq!(p(serde_json::json!({"a": "\\u0000"})), None);
        assert_eq!(
            p(serde_json::json!({"a": 1, "b": [null, "\u{0}"]})),
            Some("$.b[1]".into())
        );
        assert_eq!(
            p(serde_json::json!({"x y": {"\u{0}": 1}})),
            Some(r#"$["x y"]["\u0000"]"#.into())
        );
        assert_eq!(
            p(serde_json::json!([{"_k9": "\u{0}"}])),
            Some("$[0]._k9".into())
        );
        let raw = Payload::from_trusted_json("\"a\u{0}\"".into());
        assert_eq!(raw.nul_character(), Some("$".into()));
    }

    #[test]
    fn the_scan_tells_escapes_apart() {
        for (text, nul) in [
            (r#""\u0000""#, true),
            (r#""\\u0000""#, false),
            (r#""\\\u0000""#, true),
            (r#""a\"b\\""#, false),
            ("\"\u{0}\"", true),
            (r#"{"\n":"\\"}"#, false),
            ("\\", false),
        ] {
            assert_eq!(may_hold_nul(text.as_bytes()), nul, "{text}");
        }
    }

    #[test]
    fn lone_surrogates_are_not_well_formed() {
        for bad in [r#"{"a":"\ud800"}"#, r#"["\uDC00"]"#, r#"{"\udbff":1}"#] {
            assert!(Payload::from_json(bad.into()).is_err(), "{bad}");
        }
        let pair = Payload::from_json(r#"{"a":"\ud83d\ude00"}"#.into()).unwrap();
        assert_eq!(pair.to_value().unwrap(), serde_json::json!({"a": "😀"}));
    }

    #[test]
    fn decoded_iterates_all() {
        let one: Vec<_> = Decoded::One(1).map(|x| x * 2).into_iter().collect();
        assert_eq!(one, [2]);
        let many: Vec<i64> = Decoded::Many(vec![1i32, 2]).convert().into_iter().collect();
        assert_eq!(many, [1, 2]);
    }
}
