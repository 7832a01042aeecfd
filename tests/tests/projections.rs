//! The projection runtime and the coordination store suites against the in-memory stores,
//! in paused time.

use factum::coordination::{MemoryCheckpointStore, MemoryDeadLetterStore, MemoryLeaseStore};
use factum::testing::projections::MemoryRuntimeStores;

async fn memory_stores() -> MemoryRuntimeStores {
    MemoryRuntimeStores::memory()
}

factum::projection_runtime_tests!(memory_stores, start_paused);

mod coordination {
    use super::*;

    async fn checkpoints() -> MemoryCheckpointStore {
        MemoryCheckpointStore::new()
    }
    async fn leases() -> MemoryLeaseStore {
        MemoryLeaseStore::new()
    }
    async fn dead_letters() -> MemoryDeadLetterStore {
        MemoryDeadLetterStore::new()
    }

    factum::coordination_conformance_tests!(checkpoints, leases, dead_letters);
}

/// The lag gauges, read through a recorder installed for the test's thread.
mod lag_metrics {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use factum::EventStore;
    use factum::projection::ProjectionOptions;
    use factum::testing::projections::{MemoryRuntimeStores, RecordingProjection, append_tested};
    use metrics::{
        Counter, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
    };

    type Values = Arc<Mutex<BTreeMap<String, f64>>>;

    #[derive(Default)]
    struct Capture(Values);

    struct Cell(Values, String);

    impl GaugeFn for Cell {
        fn increment(&self, value: f64) {
            *self.0.lock().unwrap().entry(self.1.clone()).or_default() += value;
        }
        fn decrement(&self, value: f64) {
            *self.0.lock().unwrap().entry(self.1.clone()).or_default() -= value;
        }
        fn set(&self, value: f64) {
            self.0.lock().unwrap().insert(self.1.clone(), value);
        }
    }

    impl Recorder for Capture {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
            Counter::noop()
        }
        fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
            let labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            let name = format!("{}{{{}}}", key.name(), labels.join(","));
            Gauge::from_arc(Arc::new(Cell(Arc::clone(&self.0), name)))
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn lag_gauges_follow_a_stuck_partition() {
        let capture = Capture::default();
        let values = Arc::clone(&capture.0);
        let _guard = metrics::set_default_local_recorder(&capture);
        let stores = MemoryRuntimeStores::memory();
        let projection = RecordingProjection::new("gauged");
        let (_, first) = append_tested(&stores.events, "order-a", 1).await;
        let running = stores
            .runner("a")
            .register(Arc::clone(&projection), ProjectionOptions::new())
            .start();
        running.wait_for("gauged", first).await.unwrap();
        let events = "factum_projection_lag_positions{projection=gauged,partition=0}";
        let seconds = "factum_projection_lag_seconds{projection=gauged,partition=0}";
        assert_eq!(values.lock().unwrap().get(events), Some(&0.0));

        let (stuck, _) = append_tested(&stores.events, "order-a", 2).await;
        projection.hang_on(stuck);
        append_tested(&stores.events, "order-a", 3).await;
        projection.hung().await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(stores.events.head_position().await.unwrap(), 3);
        assert_eq!(values.lock().unwrap().get(events), Some(&2.0));
        let behind = values.lock().unwrap().get(seconds).copied().unwrap();
        assert!(behind >= 4.0, "the time behind grows while stuck: {behind}");
        drop(running);
    }
}

/// A rebuild abandoned by its caller leaves no partition paused: they resume from their
/// stored checkpoints, which the rebuild had already set to 0 when the reset hung.
mod abandoned_rebuild {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use factum::projection::{ProjectionOptions, ProjectionRunner, WorkerState};
    use factum::testing::projections::append_tested;
    use factum::{BoxError, MemoryStore, Projection, RecordedEvent};

    #[derive(Default)]
    struct StuckReset(AtomicU64);

    impl Projection for StuckReset {
        fn name(&self) -> &str {
            "stuck_reset"
        }

        async fn handle(&self, _event: &RecordedEvent) -> Result<(), BoxError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }

        async fn reset(&self) -> Result<(), BoxError> {
            std::future::pending().await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn partitions_resume_from_the_stored_checkpoints() {
        let store = MemoryStore::new();
        let (_, first) = append_tested(&store, "order-a", 1).await;
        let projection = Arc::new(StuckReset::default());
        let running = ProjectionRunner::new(store.clone())
            .register(
                Arc::clone(&projection),
                ProjectionOptions::new().partitions(2),
            )
            .start();
        running.wait_for("stuck_reset", first).await.unwrap();
        let abandoned = tokio::time::timeout(
            Duration::from_secs(5),
            running.rebuild("stuck_reset", |_| {}),
        )
        .await;
        assert!(abandoned.is_err(), "the reset never finishes");
        let (_, head) = append_tested(&store, "order-a", 2).await;
        tokio::time::timeout(
            Duration::from_secs(60),
            running.wait_for("stuck_reset", head),
        )
        .await
        .expect("the partitions were resumed")
        .unwrap();
        assert!(
            running
                .status()
                .iter()
                .all(|p| p.state == WorkerState::Running)
        );
        assert_eq!(
            projection.0.load(Ordering::SeqCst),
            3,
            "the first event again, from checkpoint 0, then the second"
        );
        running.shutdown().await.unwrap();
    }
}

/// `Projection::handle_batch_in`: each batch's events are offered at once; a batch that fails
/// is handled again event by event, where the failure policy parks the poison event alone.
mod batches {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use factum::projection::{FailurePolicy, HandleContext, ProjectionOptions};
    use factum::testing::projections::{MemoryRuntimeStores, append_tested};
    use factum::{BoxError, Projection, RecordedEvent};
    use uuid::Uuid;

    #[derive(Debug, Default)]
    struct Batched {
        poison: Mutex<Option<Uuid>>,
        batches: Mutex<Vec<Vec<u64>>>,
        single: Mutex<Vec<u64>>,
    }

    impl Batched {
        fn is_poison(&self, event: &RecordedEvent) -> bool {
            *self.poison.lock().unwrap() == Some(event.event_id)
        }
    }

    impl Projection for Batched {
        fn name(&self) -> &str {
            "batched"
        }

        fn event_types(&self) -> Vec<String> {
            vec!["Tested".to_owned()]
        }

        async fn handle(&self, event: &RecordedEvent) -> Result<(), BoxError> {
            if self.is_poison(event) {
                return Err("poisoned".into());
            }
            self.single.lock().unwrap().push(event.position);
            Ok(())
        }

        async fn handle_batch_in(
            &self,
            events: &[&RecordedEvent],
            context: &HandleContext,
        ) -> Result<bool, BoxError> {
            assert_eq!(context.lease.name, "batched");
            if events.iter().any(|e| self.is_poison(e)) {
                return Err("a poisoned event in the batch".into());
            }
            let positions = events.iter().map(|e| e.position).collect();
            self.batches.lock().unwrap().push(positions);
            Ok(true)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn batches_are_handled_whole_and_a_failed_batch_event_by_event() {
        let stores = MemoryRuntimeStores::memory();
        let mut positions = Vec::new();
        let mut poison = None;
        for i in 0..10u64 {
            let stream = if i == 5 { "order-p" } else { "order-a" };
            let (id, position) = append_tested(&stores.events, stream, i).await;
            if i == 5 {
                poison = Some(id);
            }
            positions.push(position);
        }
        let projection = Arc::new(Batched::default());
        *projection.poison.lock().unwrap() = poison;
        let running = stores
            .runner("a")
            .register(
                Arc::clone(&projection),
                ProjectionOptions::new()
                    .batch_size(4)
                    .poll_interval(Duration::from_millis(50))
                    .failure(
                        FailurePolicy::park_after(2)
                            .backoff(Duration::from_millis(10), Duration::from_millis(10)),
                    ),
            )
            .start();
        tokio::time::timeout(
            Duration::from_secs(60),
            running.wait_for("batched", positions[9]),
        )
        .await
        .expect("caught up in time")
        .expect("running");
        assert_eq!(
            *projection.batches.lock().unwrap(),
            [positions[0..4].to_vec(), positions[8..10].to_vec()],
            "whole batches, in order"
        );
        assert_eq!(
            *projection.single.lock().unwrap(),
            [positions[4], positions[6], positions[7]],
            "the failed batch, event by event, without the poison event"
        );
        let parked = running.parked("batched").await.expect("parked");
        assert_eq!(parked.len(), 1);
        assert_eq!(parked[0].position, positions[5]);
        running.shutdown().await.expect("clean shutdown");
    }
}
