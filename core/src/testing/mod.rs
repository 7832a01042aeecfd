//! For authors of event stores and coordination backends (feature `testing`): the
//! conformance suites that every [`EventStore`] and [`Coordination`](crate::Coordination)
//! must pass, and the runtime suites that run projections and process managers over them.
//! Application tests use [`test_kit`](crate::test_kit) instead.
//!
//! Run it against a store with [`store_conformance_tests!`](crate::store_conformance_tests),
//! giving an `async fn` that returns a fresh, empty store for each test:
//!
//! ```no_run
//! // In a test file of the crate that implements the store:
//! async fn fresh_store() -> factum::MemoryStore {
//!     factum::MemoryStore::new()
//! }
//!
//! factum::store_conformance_tests!(fresh_store);
//! # fn main() {}
//! ```
//!
//! Each case is also a public `async fn(store)` in [`cases`], for stores that need a custom
//! harness.
//!
//! The runtime suites work the same way: [`coordination`] (checkpoint, lease and dead-letter
//! stores, with [`coordination_conformance_tests!`](crate::coordination_conformance_tests)),
//! [`projections`] (the projection runtime over a set of stores, with
//! [`projection_runtime_tests!`](crate::projection_runtime_tests)) and [`process_managers`]
//! (with [`process_manager_tests!`](crate::process_manager_tests), and
//! [`process_store_conformance`](process_managers::process_store_conformance) for
//! [`ProcessStore`](crate::coordination::ProcessStore)s).

pub mod cases;
pub mod coordination;
mod counter;
pub mod faults;
pub mod process_managers;
pub mod projections;
pub mod tab;

pub use counter::{Counter, CounterCommand, CounterError, CounterEvent, Increment, Incremented};

/// Expands to one `#[tokio::test]` per conformance case, each on a store returned by the
/// given `async fn() -> impl EventStore`.
#[macro_export]
macro_rules! store_conformance_tests {
    ($make_store:path) => {
        $crate::store_conformance_tests!(@cases $make_store;
            append_to_new_stream,
            expected_version_no_stream,
            expected_version_exact,
            expected_version_stream_exists,
            expected_version_any,
            empty_append_checks_expected_version,
            append_is_all_or_nothing,
            idempotent_retry,
            reused_id_with_other_content,
            reused_id_in_other_stream,
            partially_repeated_batch,
            invalid_event_type,
            envelope_round_trip,
            read_stream_ranges,
            replay_stream_matches_read_stream,
            read_stream_until_time,
            read_missing_stream,
            read_all_in_order_and_batches,
            read_all_filters,
            read_all_partitions,
            head_position_and_event_by_id,
            snapshots,
            concurrent_writers_one_stream,
            concurrent_no_stream_race,
            concurrent_writers_many_streams,
            repository_execute_and_load,
            repository_rejects_and_validates,
            repository_command_idempotency,
            repository_command_race_same_outcome,
            repository_rejection_is_remembered,
            repository_empty_outcome_is_remembered,
            repository_store_errors_are_not_remembered,
            command_log_first_outcome_wins,
            repository_concurrent_commands,
            repository_cache_sees_other_writers,
            repository_cache_never_trusts_a_stale_rejection,
            repository_cache_queues_commands_on_one_aggregate,
            repository_cache_takes_snapshots,
            repository_round_trips,
            repository_snapshot_equals_replay,
            repository_temporal_loads,
            repository_decode_error_names_the_event,
            load_aggregate_matches_snapshot_and_replay,
            hostile_stream_ids_round_trip,
            hostile_event_types_round_trip,
            hostile_metadata_and_payload_round_trip,
            nul_characters_are_refused,
            nul_characters_in_snapshots_are_refused,
            control_characters_in_event_types_are_refused,
            command_log_keeps_hostile_messages,
        );
    };
    (@cases $make_store:path; $($case:ident),* $(,)?) => {
        $(
            #[$crate::__private::tokio::test(
                flavor = "multi_thread",
                worker_threads = 4,
                crate = "::factum::__private::tokio"
            )]
            async fn $case() {
                $crate::testing::cases::$case($make_store().await).await;
            }
        )*
    };
}

/// Expands to one `#[tokio::test]` per tenant case ([`cases::tenants_are_isolated`] and the
/// cases after it), each on a store in multi-tenant mode, bound to no tenant, returned by the
/// given `async fn() -> impl EventStore`.
#[macro_export]
macro_rules! tenant_conformance_tests {
    ($make_store:path) => {
        $crate::store_conformance_tests!(@cases $make_store;
            tenants_are_isolated,
            tenant_appends_are_checked,
            tenant_required_for_reads,
            tenant_projections_run_per_tenant,
            tenant_process_managers_run_per_tenant,
        );
    };
}

/// Expands to one `#[tokio::test]` per checkpoint, lease and dead-letter store case. Takes
/// three `async fn`s returning fresh, empty stores: checkpoints, leases, dead letters.
#[macro_export]
macro_rules! coordination_conformance_tests {
    ($checkpoints:path, $leases:path, $dead_letters:path) => {
        #[$crate::__private::tokio::test(crate = "::factum::__private::tokio")]
        async fn coordination_checkpoint_fencing() {
            $crate::testing::coordination::checkpoint_fencing($checkpoints().await).await;
        }
        #[$crate::__private::tokio::test(crate = "::factum::__private::tokio")]
        async fn coordination_lease_exclusive() {
            $crate::testing::coordination::lease_exclusive($leases().await).await;
        }
        #[$crate::__private::tokio::test(crate = "::factum::__private::tokio")]
        async fn coordination_lease_expiry() {
            $crate::testing::coordination::lease_expiry($leases().await).await;
        }
        #[$crate::__private::tokio::test(crate = "::factum::__private::tokio")]
        async fn coordination_lease_membership() {
            $crate::testing::coordination::lease_membership($leases().await).await;
        }
        #[$crate::__private::tokio::test(crate = "::factum::__private::tokio")]
        async fn coordination_dead_letters() {
            $crate::testing::coordination::dead_letters($dead_letters().await).await;
        }
    };
}
