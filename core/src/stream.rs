//! Stream names, versions, positions and expected-version checks.

use std::borrow::Borrow;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::StreamIdError;

/// Longest stream id a store accepts, in bytes.
pub const MAX_STREAM_ID_LEN: usize = 255;

/// The name of one stream: `{category}-{id}`, for example `order-o-1`.
///
/// The category is everything before the first `-`, so it never contains one; the id is
/// everything after it and may contain anything but control characters: quotes, `;`, `--`,
/// `\`, `%`, `_`, `$1`, emoji and combining characters are stored, read and filtered on
/// exactly. The whole name holds at most [`MAX_STREAM_ID_LEN`] bytes (not characters: an
/// emoji takes four).
///
/// ```
/// let stream = factum::StreamId::new("order", "o-1")?;
/// assert_eq!(stream.as_str(), "order-o-1");
/// assert_eq!(stream.category(), "order");
/// assert_eq!(stream.id(), "o-1");
/// # Ok::<(), factum::store::StreamIdError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct StreamId {
    name: String,
    #[serde(skip)]
    split: usize,
}

impl StreamId {
    /// Builds the stream id of the aggregate instance `id` in `category`.
    pub fn new(category: &str, id: &str) -> Result<Self, StreamIdError> {
        validate_category(category)?;
        if id.is_empty() {
            return Err(StreamIdError::EmptyId {
                category: category.to_owned(),
            });
        }
        let name = format!("{category}-{id}");
        Self::check_rest(&name)?;
        Ok(Self {
            split: category.len(),
            name,
        })
    }

    /// Parses a full stream name such as `order-o-1`.
    pub fn parse(name: &str) -> Result<Self, StreamIdError> {
        let Some(split) = name.find('-') else {
            return Err(StreamIdError::MissingSeparator {
                stream: name.to_owned(),
            });
        };
        Self::new(&name[..split], &name[split + 1..])
    }

    fn check_rest(name: &str) -> Result<(), StreamIdError> {
        if name.len() > MAX_STREAM_ID_LEN {
            return Err(StreamIdError::TooLong {
                stream: name.to_owned(),
                max: MAX_STREAM_ID_LEN,
            });
        }
        if name.chars().any(char::is_control) {
            return Err(StreamIdError::ControlCharacter {
                stream: name.to_owned(),
            });
        }
        Ok(())
    }

    /// The whole name, `{category}-{id}`.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// The category, the part before the first `-`.
    pub fn category(&self) -> &str {
        &self.name[..self.split]
    }

    /// The instance id, the part after the first `-`.
    pub fn id(&self) -> &str {
        &self.name[self.split + 1..]
    }
}

impl<'de> Deserialize<'de> for StreamId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Self::parse(&name).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl AsRef<str> for StreamId {
    fn as_ref(&self) -> &str {
        &self.name
    }
}

impl Borrow<str> for StreamId {
    fn borrow(&self) -> &str {
        &self.name
    }
}

impl std::str::FromStr for StreamId {
    type Err = StreamIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Checks that `category` is a valid stream category: non-empty, at most 64 bytes of ASCII
/// letters, digits and `_`, and in particular without `-`.
pub fn validate_category(category: &str) -> Result<(), StreamIdError> {
    let valid = !category.is_empty()
        && category.len() <= 64
        && category
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(StreamIdError::InvalidCategory {
            category: category.to_owned(),
        })
    }
}

/// What the writer believes about a stream's version before appending.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ExpectedVersion {
    /// Append whatever the stream's version.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream must have at least one event.
    StreamExists,
    /// The stream must be at exactly this version (`Exact(0)` is the same as `NoStream`).
    Exact(u64),
}

impl ExpectedVersion {
    /// Whether a stream currently at `actual` satisfies this expectation.
    pub fn matches(self, actual: u64) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual == 0,
            ExpectedVersion::StreamExists => actual > 0,
            ExpectedVersion::Exact(v) => v == actual,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any version"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::StreamExists => f.write_str("an existing stream"),
            ExpectedVersion::Exact(v) => write!(f, "version {v}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_category_and_id() {
        let s = StreamId::parse("order-o-1-a").unwrap();
        assert_eq!(s.category(), "order");
        assert_eq!(s.id(), "o-1-a");
        assert_eq!(s, StreamId::new("order", "o-1-a").unwrap());
    }

    #[test]
    fn rejects_bad_names() {
        assert!(matches!(
            StreamId::parse("order"),
            Err(StreamIdError::MissingSeparator { .. })
        ));
        assert!(matches!(
            StreamId::new("ord-er", "1"),
            Err(StreamIdError::InvalidCategory { .. })
        ));
        assert!(matches!(
            StreamId::new("order", ""),
            Err(StreamIdError::EmptyId { .. })
        ));
        assert!(matches!(
            StreamId::new("order", "a\nb"),
            Err(StreamIdError::ControlCharacter { .. })
        ));
        assert!(matches!(
            StreamId::new("order", &"x".repeat(300)),
            Err(StreamIdError::TooLong { .. })
        ));
        let err = serde_json::from_str::<StreamId>("\"nodash\"").unwrap_err();
        assert!(err.to_string().contains("nodash"), "{err}");
    }

    #[test]
    fn expected_version_matches() {
        assert!(ExpectedVersion::Any.matches(0));
        assert!(ExpectedVersion::NoStream.matches(0));
        assert!(!ExpectedVersion::NoStream.matches(1));
        assert!(ExpectedVersion::StreamExists.matches(3));
        assert!(!ExpectedVersion::StreamExists.matches(0));
        assert!(ExpectedVersion::Exact(2).matches(2));
        assert!(!ExpectedVersion::Exact(2).matches(3));
    }
}
