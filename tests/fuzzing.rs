//! The bodies of the fuzz targets in `fuzz/`, shared with the corpus-replay test
//! (`tests/fuzz_corpus.rs`) so that CI runs the same code on every committed corpus file.
//!
//! Each function takes arbitrary bytes, feeds them to a decoding or parsing entry point of
//! factum, and panics only when factum breaks a promise: a decoder that panics, an error that
//! names the wrong type or version, a decoded event that does not survive being stored
//! again, a parsed stream id that is not the text it was parsed from. Everything else is an
//! [`Outcome`].

use std::fmt::Debug;

use factum::store::{DecodeError, Decoded, Payload, StreamIdError};
use factum::{EventSet, Metadata, StreamId};

/// What a target made of one input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The input decoded or parsed.
    Accepted,
    /// The input was refused with a typed error.
    Refused,
    /// The input is not in the target's input format (for example a header that is not a
    /// number): nothing of factum was run.
    Skipped,
}

/// Schema versions tried for every stored type name by [`upcast`]: every version a domain
/// here stores, and unknown ones on both sides.
pub const VERSIONS: std::ops::RangeInclusive<u32> = 0..=4;

/// Decodes a stored event given as `<event type>\n<schema version>\n<payload>` into the
/// event set `E`, through the code `#[aggregate]` and `#[event]` generate.
///
/// A payload that is not JSON is refused by [`Payload::from_json`], and the same text handed
/// to the decoder as trusted JSON (as the stores hand theirs) must be refused too. A decoded
/// payload must encode again and decode, at its current version, to the same events. An
/// error must name the stored type and version.
pub fn decode_payload<E>(data: &[u8]) -> Outcome
where
    E: EventSet + Clone + PartialEq + Debug,
{
    let mut parts = data.splitn(3, |&b| b == b'\n');
    let (Some(name), Some(version), Some(payload)) = (parts.next(), parts.next(), parts.next())
    else {
        return Outcome::Skipped;
    };
    let Some(version) = std::str::from_utf8(version)
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
    else {
        return Outcome::Skipped;
    };
    let name = String::from_utf8_lossy(name);
    let text = String::from_utf8_lossy(payload).into_owned();
    decode_one::<E>(&name, version, text)
}

/// Decodes random JSON (the input, when it is JSON) under every name of `E` and every
/// version of [`VERSIONS`]: accepted when at least one decodes.
pub fn upcast<E>(data: &[u8]) -> Outcome
where
    E: EventSet + Clone + PartialEq + Debug,
{
    let Ok(text) = std::str::from_utf8(data) else {
        return Outcome::Skipped;
    };
    if Payload::from_json(text.to_owned()).is_err() {
        return Outcome::Skipped;
    }
    let mut outcome = Outcome::Refused;
    for name in E::EVENT_TYPES {
        for version in VERSIONS {
            if decode_one::<E>(name, version, text.to_owned()) == Outcome::Accepted {
                outcome = Outcome::Accepted;
            }
        }
    }
    outcome
}

fn decode_one<E>(name: &str, version: u32, text: String) -> Outcome
where
    E: EventSet + Clone + PartialEq + Debug,
{
    let payload = match Payload::from_json(text.clone()) {
        Ok(payload) => payload,
        Err(_) => {
            // `from_json` also refuses JSON whose strings hold a lone surrogate escape, which a
            // decoder skipping an unknown field never looks into: only text that is not JSON
            // at all must fail the trusted decode.
            let syntax_ok = serde_json::from_str::<serde::de::IgnoredAny>(&text).is_ok();
            let trusted = Payload::from_trusted_json(text);
            match E::decode(name, version, &trusted) {
                Ok(_) if syntax_ok => {}
                Ok(decoded) => panic!("text that is not JSON decoded as {decoded:?}"),
                Err(error) => check_error::<E>(name, version, &error),
            }
            return Outcome::Refused;
        }
    };
    match E::decode(name, version, &payload) {
        Ok(decoded) => {
            let events = match decoded {
                Decoded::One(event) => vec![event],
                Decoded::Many(events) => events,
            };
            for event in events {
                let again = event.encode().expect("a decoded event encodes");
                let round = E::decode(event.event_type(), event.schema_version(), &again)
                    .unwrap_or_else(|e| panic!("{event:?} encoded as {again:?} fails: {e}"));
                assert_eq!(round, Decoded::One(event.clone()), "stored as {again:?}");
            }
            Outcome::Accepted
        }
        Err(error) => {
            check_error::<E>(name, version, &error);
            Outcome::Refused
        }
    }
}

fn check_error<E: EventSet>(name: &str, version: u32, error: &DecodeError) {
    let known = E::EVENT_TYPES.contains(&name);
    match error {
        DecodeError::UnknownType { event_type } => {
            assert_eq!(event_type, name);
            assert!(!known, "`{name}` is a type of the set: {error}");
        }
        DecodeError::UnknownVersion {
            event_type,
            version: v,
        }
        | DecodeError::Payload {
            event_type,
            version: v,
            ..
        } => {
            assert_eq!((event_type.as_str(), *v), (name, version), "{error}");
            assert!(known, "`{name}` is no type of the set: {error}");
        }
        DecodeError::Upcast {
            event_type,
            version: v,
            ..
        } => {
            // The version of the step that refused: the stored one or a later one.
            assert_eq!(event_type, name, "{error}");
            assert!(*v >= version, "{error}");
            assert!(known, "`{name}` is no type of the set: {error}");
        }
        other => panic!("an error this target does not know: {other:?}"),
    }
    assert!(error.to_string().contains(name), "{error}");
}

/// Decodes stored metadata as the stores do (`serde_json` from the stored text). Decoded
/// metadata encodes again and decodes to the same ids, actor, tenant and keys.
pub fn decode_metadata(data: &[u8]) -> Outcome {
    let Ok(text) = std::str::from_utf8(data) else {
        return Outcome::Skipped;
    };
    match serde_json::from_str::<Metadata>(text) {
        Ok(metadata) => {
            let stored = serde_json::to_string(&metadata).expect("metadata encodes");
            let again: Metadata = serde_json::from_str(&stored)
                .unwrap_or_else(|e| panic!("{metadata:?} stored as {stored} fails: {e}"));
            assert_eq!(
                (
                    again.command_id,
                    again.correlation_id,
                    again.causation_id,
                    &again.actor,
                    &again.tenant
                ),
                (
                    metadata.command_id,
                    metadata.correlation_id,
                    metadata.causation_id,
                    &metadata.actor,
                    &metadata.tenant
                )
            );
            assert!(again.extra.keys().eq(metadata.extra.keys()), "{stored}");
            Outcome::Accepted
        }
        Err(error) => {
            assert!(!error.to_string().is_empty());
            Outcome::Refused
        }
    }
}

/// Parses a stream name (`{category}-{id}`) and a category. A parsed name is the text it was
/// parsed from, split at its first `-`, and builds again from its parts; an error names the
/// rule the text breaks. A stream id read from JSON follows the same rules.
pub fn parse_stream_id(data: &[u8]) -> Outcome {
    let Ok(text) = std::str::from_utf8(data) else {
        return Outcome::Skipped;
    };
    let parsed = StreamId::parse(text);
    let from_json: Result<StreamId, _> =
        serde_json::from_value(serde_json::Value::String(text.to_owned()));
    assert_eq!(parsed.as_ref().ok(), from_json.as_ref().ok(), "{text:?}");
    let category_ok = factum::store::validate_category(text).is_ok();
    assert_eq!(
        category_ok,
        !text.is_empty()
            && text.len() <= 64
            && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
        "{text:?}"
    );
    match parsed {
        Ok(stream) => {
            assert_eq!(stream.as_str(), text);
            assert_eq!(format!("{}-{}", stream.category(), stream.id()), text);
            assert!(!stream.category().contains('-'));
            assert!(!stream.id().is_empty());
            assert!(text.len() <= factum::store::MAX_STREAM_ID_LEN);
            assert!(!text.chars().any(char::is_control));
            let rebuilt = StreamId::new(stream.category(), stream.id())
                .unwrap_or_else(|e| panic!("{stream} does not build again: {e}"));
            assert_eq!(rebuilt, stream);
            let json = serde_json::to_string(&stream).expect("a stream id encodes");
            let read: StreamId = serde_json::from_str(&json).expect("a stream id decodes");
            assert_eq!(read, stream);
            Outcome::Accepted
        }
        Err(error) => {
            let (category, id) = text.split_once('-').unwrap_or((text, ""));
            match &error {
                StreamIdError::MissingSeparator { stream } => {
                    assert_eq!(stream, text);
                    assert!(!text.contains('-'));
                }
                StreamIdError::InvalidCategory { category: c } => {
                    assert_eq!(c, category);
                    assert!(factum::store::validate_category(category).is_err());
                }
                StreamIdError::EmptyId { category: c } => {
                    assert_eq!((c.as_str(), id), (category, ""));
                }
                StreamIdError::TooLong { stream, max } => {
                    assert_eq!(stream, text);
                    assert!(text.len() > *max);
                }
                StreamIdError::ControlCharacter { stream } => {
                    assert_eq!(stream, text);
                    assert!(text.chars().any(char::is_control));
                }
                other => panic!("an error this target does not know: {other:?}"),
            }
            assert!(!error.to_string().is_empty());
            Outcome::Refused
        }
    }
}

pub mod parcel {
    //! A domain whose events have every kind of history the macros read: a typed chain of
    //! three versions, a renamed event split into several, and JSON upcasters.

    use factum::prelude::*;
    use serde::{Deserialize, Serialize};

    /// A parcel was registered; stored as ("ParcelRegistered", 3).
    #[event(version = 3, previous = ParcelRegisteredV2)]
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub struct ParcelRegistered {
        /// The parcel.
        pub parcel_id: String,
        /// Who sends it.
        pub sender: String,
        /// Its weight; 0 when registered before weights were recorded.
        pub weight_grams: u32,
        /// The delivery service.
        pub service: String,
    }

    /// Version 2 added the weight.
    #[event(name = "ParcelRegistered", version = 2, upcast_to = ParcelRegistered, previous = ParcelRegisteredV1)]
    #[derive(Debug, Deserialize)]
    pub struct ParcelRegisteredV2 {
        /// The parcel.
        pub parcel_id: String,
        /// Who sends it.
        pub sender: String,
        /// Its weight.
        pub weight_grams: u32,
    }

    impl From<ParcelRegisteredV2> for ParcelRegistered {
        fn from(v2: ParcelRegisteredV2) -> Self {
            Self {
                parcel_id: v2.parcel_id,
                sender: v2.sender,
                weight_grams: v2.weight_grams,
                service: "standard".into(),
            }
        }
    }

    /// Version 1, the first shape.
    #[event(name = "ParcelRegistered", version = 1, upcast_to = ParcelRegisteredV2)]
    #[derive(Debug, Deserialize)]
    pub struct ParcelRegisteredV1 {
        /// The parcel.
        pub parcel_id: String,
        /// Who sends it.
        pub sender: String,
    }

    impl From<ParcelRegisteredV1> for ParcelRegisteredV2 {
        fn from(v1: ParcelRegisteredV1) -> Self {
            Self {
                parcel_id: v1.parcel_id,
                sender: v1.sender,
                weight_grams: 0,
            }
        }
    }

    /// One item was packed; replaces `ItemsPacked`, which held several.
    #[event(version = 2, previous = ItemsPackedV1)]
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub struct ItemPacked {
        /// The item.
        pub item: String,
    }

    /// The old event under its old name: read as one `ItemPacked` per item.
    #[event(name = "ItemsPacked", version = 1, upcast_to = ItemPacked, upcast_with = split_items)]
    #[derive(Debug, Deserialize)]
    pub struct ItemsPackedV1 {
        /// The items.
        pub items: Vec<String>,
    }

    fn split_items(old: ItemsPackedV1) -> Vec<ItemPacked> {
        old.items
            .into_iter()
            .map(|item| ItemPacked { item })
            .collect()
    }

    /// Postage was paid. Version 1 stored `{"euros": n}`, version 2 `{"cents": n}`, version 3
    /// adds the method; the older ones are read through JSON upcasters.
    #[event(
        version = 3,
        upcast_json(from = 1, with = postage_v1_to_v2),
        upcast_json(from = 2, with = postage_v2_to_v3)
    )]
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub struct PostagePaid {
        /// The amount, in cents.
        pub cents: u64,
        /// How it was paid.
        pub method: String,
    }

    fn postage_v1_to_v2(v1: serde_json::Value) -> Result<serde_json::Value, String> {
        let euros = v1
            .get("euros")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| format!("`euros` is not a whole number in {v1}"))?;
        let cents = euros
            .checked_mul(100)
            .ok_or_else(|| format!("{euros} euros overflow in cents"))?;
        Ok(serde_json::json!({ "cents": cents }))
    }

    fn postage_v2_to_v3(mut v2: serde_json::Value) -> Result<serde_json::Value, String> {
        match v2.as_object_mut() {
            Some(object) => {
                object.insert("method".into(), "card".into());
                Ok(v2)
            }
            None => Err(format!("not an object: {v2}")),
        }
    }

    /// The parcel was delivered.
    #[event]
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub struct ParcelDelivered {
        /// Who signed for it.
        pub signed_by: String,
    }

    /// Registers a parcel.
    #[command]
    #[derive(Clone, Debug)]
    pub struct RegisterParcelV1 {
        /// The parcel.
        #[id]
        pub parcel_id: String,
        /// Who sends it.
        pub sender: String,
    }

    /// A parcel.
    #[aggregate(category = "parcel")]
    #[derive(Debug, Default)]
    pub struct Parcel {
        /// Whether it was registered.
        pub registered: bool,
        /// The items packed.
        pub items: Vec<String>,
        /// The postage paid, in cents.
        pub postage_cents: u64,
        /// Whether it was delivered.
        pub delivered: bool,
    }

    #[aggregate]
    impl Parcel {
        #[handle]
        fn register(
            &self,
            command: RegisterParcelV1,
        ) -> Result<ParcelRegistered, std::convert::Infallible> {
            Ok(ParcelRegistered {
                parcel_id: command.parcel_id,
                sender: command.sender,
                weight_grams: 0,
                service: "standard".into(),
            })
        }

        #[apply]
        fn registered(&mut self, _: &ParcelRegistered) {
            self.registered = true;
        }

        #[apply]
        fn packed(&mut self, event: &ItemPacked) {
            self.items.push(event.item.clone());
        }

        #[apply]
        fn paid(&mut self, event: &PostagePaid) {
            self.postage_cents = self.postage_cents.saturating_add(event.cents);
        }

        #[apply]
        fn delivered(&mut self, _: &ParcelDelivered) {
            self.delivered = true;
        }
    }
}
