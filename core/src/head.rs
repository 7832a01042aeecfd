//! How far the global order is readable, compared with what is committed.
//!
//! A store whose global order can be held back (PostgreSQL: a reader stops below the oldest
//! transaction that may still commit an event) reports it through
//! [`EventStore::head_status`](crate::EventStore::head_status): the readable head, the
//! committed one, and the session holding the difference. The runners turn it into
//! [`HealthProblem::HeadHeldBack`](crate::projection::HealthProblem::HeadHeldBack), the lag of every
//! partition and the `factum_head_held_back_seconds` gauge.

use std::time::Duration;

/// The store's head: how far a reader may read, and how far events are committed.
///
/// ```
/// use factum::store::HeadStatus;
/// let head = HeadStatus::settled(42);
/// assert_eq!((head.readable, head.committed), (42, 42));
/// assert!(!head.is_held_back());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HeadStatus {
    /// The highest position a reader may read up to without skipping a commit, as
    /// [`EventStore::head_position`](crate::EventStore::head_position) reports it.
    pub readable: u64,
    /// The highest committed position. Above `readable` while a transaction that may still
    /// commit events below it runs.
    pub committed: u64,
    /// What holds the committed events above `readable` back, when the store can tell.
    pub held_back_by: Option<Blocker>,
}

impl HeadStatus {
    /// A head that nothing holds back: everything committed up to `position` is readable.
    pub fn settled(position: u64) -> Self {
        Self {
            readable: position,
            committed: position,
            held_back_by: None,
        }
    }

    /// A head at `readable`, with events committed up to `committed` (at least `readable`)
    /// held back by `held_back_by`.
    pub fn held_back(readable: u64, committed: u64, held_back_by: Option<Blocker>) -> Self {
        Self {
            readable,
            committed: committed.max(readable),
            held_back_by,
        }
    }

    /// Whether committed events are not readable yet.
    pub fn is_held_back(&self) -> bool {
        self.committed > self.readable
    }
}

/// The open transaction holding the readable head back: a database session, or a prepared
/// transaction (no session).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Blocker {
    /// The server process of its session; `None` for a prepared transaction.
    pub pid: Option<u32>,
    /// The session's application name (empty when it set none).
    pub application_name: Option<String>,
    /// What the session is doing, such as `idle in transaction`, or which prepared
    /// transaction it is; `None` when the store's role may not see it.
    pub state: Option<String>,
    /// How long its transaction has been open; `None` when the store's role may not see it.
    pub transaction_age: Option<Duration>,
}

impl std::fmt::Display for Blocker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.pid {
            Some(pid) => write!(f, "pid {pid}")?,
            None => f.write_str("no session")?,
        }
        if let Some(name) = self.application_name.as_deref().filter(|n| !n.is_empty()) {
            write!(f, " ({name})")?;
        }
        if let Some(state) = &self.state {
            write!(f, ", {state}")?;
        }
        if let Some(age) = self.transaction_age {
            write!(f, ", transaction open for {:.1} s", age.as_secs_f64())?;
        }
        Ok(())
    }
}
