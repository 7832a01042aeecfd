//! Tenants: the validated id of a tenant, and what a multi-tenant store refuses.
//!
//! A store in multi-tenant mode ([`MemoryStore::multi_tenant`](crate::MemoryStore::multi_tenant),
//! or `PgConfig::multi_tenant` of `factum-postgres`) keeps each tenant's streams, snapshots
//! and command outcomes apart. It serves a call only through a handle bound to one tenant,
//! [`EventStore::tenant`](crate::EventStore::tenant), which sees that tenant's rows and
//! nothing else; the unbound store refuses reads with [`TenantError::Required`], and takes
//! the tenant of an append from its events' metadata.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::event::NewEvent;
use crate::stream::StreamId;

/// Longest tenant id accepted, in bytes.
pub const MAX_TENANT_LEN: usize = 128;

/// The id of a tenant: 1 to [`MAX_TENANT_LEN`] bytes of text without control characters.
///
/// ```
/// use factum::tenant::{TenantError, TenantId};
/// let acme = TenantId::new("acme")?;
/// assert_eq!(acme.as_str(), "acme");
/// assert!(matches!(TenantId::new(""), Err(TenantError::Empty)));
/// assert!(matches!(TenantId::new("a\nb"), Err(TenantError::ControlCharacter { .. })));
/// assert!(matches!(TenantId::new("x".repeat(129)), Err(TenantError::TooLong { .. })));
/// # Ok::<(), TenantError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct TenantId(String);

impl TenantId {
    /// Validates `tenant`.
    pub fn new(tenant: impl Into<String>) -> Result<Self, TenantError> {
        let tenant = tenant.into();
        if tenant.is_empty() {
            return Err(TenantError::Empty);
        }
        if tenant.len() > MAX_TENANT_LEN {
            return Err(TenantError::TooLong {
                len: tenant.len(),
                max: MAX_TENANT_LEN,
            });
        }
        if tenant.chars().any(char::is_control) {
            return Err(TenantError::ControlCharacter { tenant });
        }
        Ok(Self(tenant))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for TenantId {
    type Err = TenantError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<&str> for TenantId {
    type Error = TenantError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl TryFrom<String> for TenantId {
    type Error = TenantError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl<'de> Deserialize<'de> for TenantId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Self::new(String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

/// A tenant id refused, or a call a multi-tenant store refuses for its tenant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TenantError {
    /// The tenant id is empty.
    #[error("empty tenant id")]
    Empty,
    /// The tenant id is longer than [`MAX_TENANT_LEN`].
    #[error("tenant id of {len} bytes: at most {max} are accepted")]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The longest accepted.
        max: usize,
    },
    /// The tenant id holds a control character.
    #[error("tenant id {tenant:?} contains a control character")]
    ControlCharacter {
        /// The id given.
        tenant: String,
    },
    /// A multi-tenant store was called without a tenant: a read through a handle bound to
    /// none, or an append whose events name no tenant.
    #[error("this store is multi-tenant: {operation} needs a tenant")]
    Required {
        /// What was called.
        operation: &'static str,
    },
    /// An event appended through a handle bound to one tenant names another in its metadata,
    /// or the events of one append name different tenants.
    #[error(
        "event {event_id} of tenant `{event_tenant}` appended to stream `{stream}` as tenant `{tenant}`"
    )]
    Mismatch {
        /// The tenant of the append.
        tenant: String,
        /// The tenant the event's metadata names.
        event_tenant: String,
        /// The event.
        event_id: uuid::Uuid,
        /// The stream appended to.
        stream: StreamId,
    },
    /// A tenant was bound to a store that is not in multi-tenant mode, where it would
    /// isolate nothing.
    #[error("this store is not multi-tenant: a tenant handle would not isolate anything")]
    NotMultiTenant,
}

/// The tenant of an append to a multi-tenant store, and the events to store: `bound`, or
/// else the tenant all events' metadata names; events without a tenant get it in their
/// metadata. Refuses events naming another tenant ([`TenantError::Mismatch`]), an invalid
/// tenant in metadata, and an append with no tenant at all ([`TenantError::Required`]).
/// Both stores run it before anything is written.
pub fn tenant_of_append(
    bound: Option<&TenantId>,
    stream: &StreamId,
    events: &[NewEvent],
) -> Result<(TenantId, Option<Vec<NewEvent>>), TenantError> {
    let tenant = match bound {
        Some(tenant) => tenant.clone(),
        None => match events.iter().find_map(|e| e.metadata.tenant.as_deref()) {
            Some(named) => TenantId::new(named)?,
            None => {
                return Err(TenantError::Required {
                    operation: "an append",
                });
            }
        },
    };
    let mut missing = false;
    for event in events {
        match event.metadata.tenant.as_deref() {
            None => missing = true,
            Some(named) if named == tenant.as_str() => {}
            Some(named) => {
                return Err(TenantError::Mismatch {
                    tenant: tenant.to_string(),
                    event_tenant: named.to_owned(),
                    event_id: event.event_id,
                    stream: stream.clone(),
                });
            }
        }
    }
    let filled = missing.then(|| {
        events
            .iter()
            .map(|e| {
                let mut e = e.clone();
                e.metadata
                    .tenant
                    .get_or_insert_with(|| tenant.as_str().to_owned());
                e
            })
            .collect()
    });
    Ok((tenant, filled))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Metadata;
    use crate::event::Payload;

    fn event(tenant: Option<&str>) -> NewEvent {
        let mut metadata = Metadata::new();
        metadata.tenant = tenant.map(str::to_owned);
        NewEvent {
            event_id: uuid::Uuid::now_v7(),
            event_type: "Tested".into(),
            schema_version: 1,
            payload: Payload::encode(&serde_json::json!({})).unwrap(),
            metadata,
        }
    }

    #[test]
    fn ids_are_validated_at_the_edge() {
        assert_eq!(TenantId::new("x".repeat(128)).unwrap().as_str().len(), 128);
        assert_eq!(
            TenantId::new("x".repeat(129)),
            Err(TenantError::TooLong { len: 129, max: 128 })
        );
        assert_eq!(
            "a\u{7f}".parse::<TenantId>(),
            Err(TenantError::ControlCharacter {
                tenant: "a\u{7f}".into()
            })
        );
        assert_eq!(
            serde_json::from_str::<TenantId>("\"\"")
                .unwrap_err()
                .to_string(),
            "empty tenant id"
        );
        assert_eq!(
            serde_json::from_str::<TenantId>("\"acme é\"").unwrap(),
            TenantId::new("acme é").unwrap()
        );
    }

    #[test]
    fn appends_take_the_bound_or_named_tenant() {
        let stream = StreamId::new("order", "1").unwrap();
        let acme = TenantId::new("acme").unwrap();
        let (tenant, filled) =
            tenant_of_append(Some(&acme), &stream, &[event(None), event(Some("acme"))]).unwrap();
        assert_eq!(tenant, acme);
        let filled = filled.expect("the event without a tenant gets one");
        assert!(
            filled
                .iter()
                .all(|e| e.metadata.tenant.as_deref() == Some("acme"))
        );

        let (tenant, filled) =
            tenant_of_append(None, &stream, &[event(None), event(Some("acme"))]).unwrap();
        assert_eq!((tenant, filled.map(|f| f.len())), (acme.clone(), Some(2)));

        assert!(matches!(
            tenant_of_append(Some(&acme), &stream, &[event(Some("globex"))]),
            Err(TenantError::Mismatch { event_tenant, .. }) if event_tenant == "globex"
        ));
        assert!(matches!(
            tenant_of_append(None, &stream, &[event(Some("acme")), event(Some("globex"))]),
            Err(TenantError::Mismatch { .. })
        ));
        assert_eq!(
            tenant_of_append(None, &stream, &[event(None)]),
            Err(TenantError::Required {
                operation: "an append"
            })
        );
        assert_eq!(
            tenant_of_append(None, &stream, &[event(Some(""))]),
            Err(TenantError::Empty)
        );
    }
}
