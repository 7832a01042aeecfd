//! Subscriptions: follow the store's global order from a checkpoint, catching up in batches and
//! then waiting for new events.
//!
//! A [`Subscription`] is a cursor over [`EventStore::read_all`]. It catches up from the position
//! it is given, then goes live: it waits on the store's [`EventStore::head_hint`] when the store
//! has one, and polls every [`SubscriptionOptions::poll_interval`] in any case, so a lost hint
//! only delays delivery. Events are filtered by type (and category) in the store, so unrelated
//! events are neither transferred nor decoded.
//!
//! Delivery is at-least-once: the subscription does not store its position. Whoever consumes
//! the batches saves [`Batch::scanned_to`] as a checkpoint after handling them, and restarts
//! from the saved checkpoint.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! use factum::MemoryStore;
//! use factum::subscription::{Shutdown, Subscription, SubscriptionOptions};
//! let store = MemoryStore::new();
//! let shutdown = Shutdown::new();
//! let options = SubscriptionOptions::new().batch_size(100).event_types(["OrderPlaced"]);
//! let mut subscription = Subscription::new(store, 0, options);
//! shutdown.trigger();
//! // Returns `None` once shutdown is triggered and no batch is ready.
//! assert!(subscription.next(&shutdown).await?.is_none());
//! # Ok::<(), factum::StoreError>(())
//! # }).unwrap();
//! ```

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::error::StoreError;
use crate::event::RecordedEvent;
use crate::store::{EventStore, ReadAll};

/// A shutdown signal shared by a runtime and whoever stops it. Cloning shares the signal.
///
/// ```
/// let shutdown = factum::subscription::Shutdown::new();
/// let seen_by_worker = shutdown.clone();
/// shutdown.trigger();
/// assert!(seen_by_worker.is_triggered());
/// ```
#[derive(Clone, Debug)]
pub struct Shutdown {
    tx: Arc<watch::Sender<bool>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// A signal that is not triggered yet.
    pub fn new() -> Self {
        Self {
            tx: Arc::new(watch::channel(false).0),
        }
    }

    /// Triggers the signal: every waiter wakes up. Triggering twice is harmless.
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    /// Whether the signal was triggered.
    pub fn is_triggered(&self) -> bool {
        *self.tx.borrow()
    }

    /// Completes once the signal is triggered (at once when it already was).
    pub async fn triggered(&self) {
        let mut rx = self.tx.subscribe();
        // The sender lives in `self`, so `wait_for` cannot see it closed.
        let _ = rx.wait_for(|triggered| *triggered).await;
    }
}

/// How a [`Subscription`] reads.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscriptionOptions {
    /// Most events per batch.
    pub batch_size: usize,
    /// How long to wait for a hint before reading again when caught up: the delivery
    /// guarantee when hints are missing or lost.
    pub poll_interval: Duration,
    /// Only events of these types (all when empty).
    pub event_types: Vec<String>,
    /// Only events of streams in these categories (all when empty).
    pub categories: Vec<String>,
    /// Only events of the streams of this partition (all when `None`), read as such from the
    /// store ([`ReadAll::partition`]).
    pub partition: Option<crate::store::StreamPartition>,
}

impl Default for SubscriptionOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl SubscriptionOptions {
    /// Default poll interval.
    pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(500);

    /// Batches of [`ReadAll::DEFAULT_LIMIT`], polling every
    /// [`SubscriptionOptions::DEFAULT_POLL_INTERVAL`], all events.
    pub fn new() -> Self {
        Self {
            batch_size: ReadAll::DEFAULT_LIMIT,
            poll_interval: Self::DEFAULT_POLL_INTERVAL,
            event_types: Vec::new(),
            categories: Vec::new(),
            partition: None,
        }
    }

    /// Only events of the streams of `partition`.
    #[must_use]
    pub fn partition(mut self, partition: crate::store::StreamPartition) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Sets the batch size (at least 1).
    #[must_use]
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// Sets the poll interval.
    #[must_use]
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Only events of these types.
    #[must_use]
    pub fn event_types<I, T>(mut self, types: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.event_types = types.into_iter().map(Into::into).collect();
        self
    }

    /// Only events of streams in these categories.
    #[must_use]
    pub fn categories<I, T>(mut self, categories: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.categories = categories.into_iter().map(Into::into).collect();
        self
    }
}

/// One batch read by a [`Subscription`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Batch {
    /// The matching events, in global order (possibly none when only unrelated events were
    /// appended).
    pub events: Vec<RecordedEvent>,
    /// Every matching event at or below this position is in this batch or an earlier one: the
    /// checkpoint to save once the batch is handled.
    pub scanned_to: u64,
    /// The store's head position seen when the batch was read.
    pub head: u64,
}

/// A cursor over the store's global order: catch-up in batches, then live.
///
/// See the [module documentation](self).
#[derive(Debug)]
pub struct Subscription<S> {
    store: S,
    options: SubscriptionOptions,
    position: u64,
    head: u64,
    hint: Option<watch::Receiver<u64>>,
}

impl<S: EventStore> Subscription<S> {
    /// A subscription to events after `after` (0: from the beginning).
    pub fn new(store: S, after: u64, options: SubscriptionOptions) -> Self {
        let hint = store.head_hint();
        Self {
            store,
            options,
            position: after,
            head: 0,
            hint,
        }
    }

    /// Every matching event at or below this position has been returned.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The head position seen by the last read.
    pub fn head(&self) -> u64 {
        self.head
    }

    /// The options.
    pub fn options(&self) -> &SubscriptionOptions {
        &self.options
    }

    /// Moves the cursor: the next batch starts after `after`.
    pub fn seek(&mut self, after: u64) {
        self.position = after;
    }

    /// Reads one batch now, without waiting; it may be empty.
    pub async fn poll(&mut self) -> Result<Batch, StoreError> {
        if let Some(hint) = &mut self.hint {
            // Mark the current hint as seen: it is about to be acted upon.
            hint.borrow_and_update();
        }
        let head = self.store.head_position().await?;
        self.head = self.head.max(head);
        if head <= self.position {
            return Ok(Batch {
                events: Vec::new(),
                scanned_to: self.position,
                head,
            });
        }
        let mut read = ReadAll::after(self.position)
            .limit(self.options.batch_size)
            .event_types(self.options.event_types.iter().cloned())
            .categories(self.options.categories.iter().cloned());
        read.partition = self.options.partition;
        let mut events = self.store.read_all(&read).await?;
        let full = events.len() >= read.limit;
        // Defensive: a store must return positions above `after` in increasing order; anything
        // else would break the cursor, so it is dropped rather than delivered twice.
        let mut last = self.position;
        events.retain(|e| {
            let keep = e.position > last;
            if keep {
                last = e.position;
            }
            keep
        });
        // A batch that is not full read everything up to the head seen before the read.
        let scanned_to = if full { last } else { last.max(head) };
        self.position = scanned_to;
        self.head = self.head.max(scanned_to);
        Ok(Batch {
            events,
            scanned_to,
            head: self.head,
        })
    }

    /// The next batch that moves the cursor, waiting for new events when caught up; `None`
    /// once `shutdown` is triggered.
    ///
    /// The batch may hold no events when only unrelated events were appended: its
    /// [`Batch::scanned_to`] still moves, so the caller can save it. Cancel-safe: dropping the
    /// future loses no event.
    pub async fn next(&mut self, shutdown: &Shutdown) -> Result<Option<Batch>, StoreError> {
        loop {
            if shutdown.is_triggered() {
                return Ok(None);
            }
            let before = self.position;
            let batch = self.poll().await?;
            if !batch.events.is_empty() || batch.scanned_to > before {
                return Ok(Some(batch));
            }
            if !self.wait(shutdown).await {
                return Ok(None);
            }
        }
    }

    /// Waits for a hint above the cursor, the poll interval, or shutdown (then `false`).
    async fn wait(&mut self, shutdown: &Shutdown) -> bool {
        let sleep = tokio::time::sleep(self.options.poll_interval);
        tokio::pin!(sleep);
        let position = self.position;
        loop {
            let hint_changed = async {
                match &mut self.hint {
                    Some(hint) => hint.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = shutdown.triggered() => return false,
                () = &mut sleep => return true,
                open = hint_changed => {
                    if !open {
                        self.hint = None;
                        continue;
                    }
                    let hinted = self.hint.as_mut().map_or(0, |h| *h.borrow_and_update());
                    if hinted > position {
                        return true;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{NewEvent, Payload};
    use crate::metadata::Metadata;
    use crate::stream::{ExpectedVersion, StreamId};
    use crate::{EventStore, MemoryStore};

    fn event(event_type: &str) -> NewEvent {
        NewEvent {
            event_id: uuid::Uuid::now_v7(),
            event_type: event_type.to_owned(),
            schema_version: 1,
            payload: Payload::encode(&serde_json::json!({})).unwrap(),
            metadata: Metadata::new(),
        }
    }

    async fn append(store: &MemoryStore, stream: &str, types: &[&str]) {
        let events: Vec<_> = types.iter().map(|t| event(t)).collect();
        store
            .append(
                &StreamId::parse(stream).unwrap(),
                ExpectedVersion::Any,
                &events,
            )
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn catches_up_in_batches_and_skips_unrelated_events() {
        let store = MemoryStore::new();
        append(
            &store,
            "a-1",
            &["Wanted", "Other", "Wanted", "Other", "Wanted"],
        )
        .await;
        let options = SubscriptionOptions::new()
            .batch_size(2)
            .event_types(["Wanted"]);
        let mut sub = Subscription::new(store.clone(), 0, options);
        let first = sub.poll().await.unwrap();
        assert_eq!(
            first.events.iter().map(|e| e.position).collect::<Vec<_>>(),
            [1, 3]
        );
        assert_eq!(first.scanned_to, 3, "a full batch ends at its last event");
        let second = sub.poll().await.unwrap();
        assert_eq!(
            second.events.iter().map(|e| e.position).collect::<Vec<_>>(),
            [5]
        );
        assert_eq!(second.scanned_to, 5);
        append(&store, "a-1", &["Other", "Other"]).await;
        let third = sub.poll().await.unwrap();
        assert!(third.events.is_empty());
        assert_eq!(
            third.scanned_to, 7,
            "unrelated events still move the cursor"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn wakes_on_append_and_stops_on_shutdown() {
        let store = MemoryStore::new();
        let shutdown = Shutdown::new();
        let mut sub = Subscription::new(store.clone(), 0, SubscriptionOptions::new());
        let writer = {
            let store = store.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(60)).await;
                append(&store, "a-1", &["Wanted"]).await;
            })
        };
        let batch = sub.next(&shutdown).await.unwrap().unwrap();
        assert_eq!(batch.events.len(), 1);
        writer.await.unwrap();
        let stopper = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            stopper.trigger();
        });
        assert!(sub.next(&shutdown).await.unwrap().is_none());
        assert_eq!(sub.position(), 1);
    }

    /// A store without hints is still followed, by polling.
    #[derive(Clone)]
    struct NoHints(MemoryStore);

    impl EventStore for NoHints {
        async fn append(
            &self,
            stream: &StreamId,
            expected: ExpectedVersion,
            events: &[NewEvent],
        ) -> Result<crate::store::AppendResult, StoreError> {
            self.0.append(stream, expected, events).await
        }
        async fn read_stream(
            &self,
            stream: &StreamId,
            read: &crate::store::StreamRead,
        ) -> Result<Vec<RecordedEvent>, StoreError> {
            self.0.read_stream(stream, read).await
        }
        async fn stream_version(&self, stream: &StreamId) -> Result<u64, StoreError> {
            self.0.stream_version(stream).await
        }
        async fn read_all(&self, read: &ReadAll) -> Result<Vec<RecordedEvent>, StoreError> {
            self.0.read_all(read).await
        }
        async fn head_position(&self) -> Result<u64, StoreError> {
            self.0.head_position().await
        }
        async fn event_by_id(
            &self,
            event_id: uuid::Uuid,
        ) -> Result<Option<RecordedEvent>, StoreError> {
            self.0.event_by_id(event_id).await
        }
        async fn save_snapshot(&self, snapshot: &crate::store::Snapshot) -> Result<(), StoreError> {
            self.0.save_snapshot(snapshot).await
        }
        async fn load_snapshot(
            &self,
            stream: &StreamId,
            schema_version: u32,
            max_version: Option<u64>,
        ) -> Result<Option<crate::store::Snapshot>, StoreError> {
            self.0
                .load_snapshot(stream, schema_version, max_version)
                .await
        }
        async fn record_command(
            &self,
            record: &crate::store::CommandRecord,
        ) -> Result<Option<crate::store::CommandRecord>, StoreError> {
            self.0.record_command(record).await
        }
        async fn command_record(
            &self,
            command_id: uuid::Uuid,
        ) -> Result<Option<crate::store::CommandRecord>, StoreError> {
            self.0.command_record(command_id).await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn polls_without_hints() {
        let inner = MemoryStore::new();
        let store = NoHints(inner.clone());
        assert!(store.head_hint().is_none());
        let shutdown = Shutdown::new();
        let mut sub = Subscription::new(store, 0, SubscriptionOptions::new());
        let writer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            append(&inner, "a-1", &["Wanted", "Wanted"]).await;
        });
        let batch = sub.next(&shutdown).await.unwrap().unwrap();
        assert_eq!(batch.events.len(), 2);
        assert_eq!(batch.scanned_to, 2);
        writer.await.unwrap();
    }
}
