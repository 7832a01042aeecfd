//! What makes the HTTP API a service: its limits, its metrics and the history of its
//! workers' lag that the operator's page draws.
//!
//! - [`ServiceOptions`]: the request body and time limits, the page sizes of the lists and
//!   how often the lag is sampled.
//! - [`metrics_handle`]: the process's Prometheus recorder, installed once, which
//!   `GET /metrics` renders: the framework's projection lag gauges and counters (factum's
//!   `metrics` feature) and the example's own command, load and request figures.
//! - [`LagHistory`]: a ring buffer of lag samples, one per worker per tick.

use std::collections::VecDeque;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::Serialize;

use crate::app::HealthReport;

// ANCHOR: options
/// The limits and figures of the HTTP service.
#[derive(Clone, Debug)]
pub struct ServiceOptions {
    /// The largest request body accepted: a larger one is answered 413 before it is read
    /// whole. 64 KiB by default (an order of a few hundred lines).
    pub body_limit: usize,
    /// How long a request may take: a slower one is answered 408 and its work dropped.
    /// 40 s by default, more than a read model's wait for a caller's own writes
    /// ([`AppOptions::read_your_writes_within`](crate::AppOptions), 30 s), so that
    /// such a wait ends with its own 503 naming the read model.
    pub request_timeout: Duration,
    /// The page size of a list when the request gives no `limit`: 50 by default.
    pub default_page: usize,
    /// The largest `limit` a list accepts: 500 by default; a larger one is a 400.
    pub max_page: usize,
    /// How often the workers' lag is sampled for the operator's page: every 5 s by default.
    pub lag_sample_every: Duration,
    /// How many samples are kept: 120 by default, ten minutes at one per 5 s.
    pub lag_samples: usize,
    /// The PostgreSQL store that the operator's page has the `factum` tool's doctor check
    /// (schema, held-back head, open transactions, replication, projections); none in
    /// memory, where the page shows only the checks of the running application.
    pub doctor_database: Option<DoctorDatabase>,
}

/// The database and schema of a store on PostgreSQL, for the doctor.
#[derive(Clone)]
pub struct DoctorDatabase {
    /// The database URL.
    pub url: String,
    /// The store's schema.
    pub schema: String,
}

impl std::fmt::Debug for DoctorDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password.
        f.debug_struct("DoctorDatabase")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl Default for ServiceOptions {
    fn default() -> Self {
        Self {
            body_limit: 64 * 1024,
            request_timeout: Duration::from_secs(40),
            default_page: 50,
            max_page: 500,
            lag_sample_every: Duration::from_secs(5),
            lag_samples: 120,
            doctor_database: None,
        }
    }
}
// ANCHOR_END: options

/// The buckets of the example's histograms, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The process's Prometheus recorder: installed as the global `metrics` recorder on the
/// first call, so that every figure recorded anywhere in the process (the framework's and
/// the example's) is rendered by `GET /metrics`. `None` when another recorder was installed
/// first, in which case `/metrics` says so.
pub fn metrics_handle() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(&BUCKETS)
                .map_err(|e| tracing::error!(%e, "the metrics buckets are refused"))
                .ok()?;
            builder
                .install_recorder()
                .map_err(|e| tracing::error!(%e, "no Prometheus recorder: /metrics stays empty"))
                .ok()
        })
        .as_ref()
}

/// Records the time since `started` in the histogram `name` (in seconds), with `labels`.
pub(crate) fn timed(name: &'static str, labels: &[(&'static str, String)], started: Instant) {
    let labels: Vec<metrics::Label> = labels
        .iter()
        .map(|(k, v)| metrics::Label::new(*k, v.clone()))
        .collect();
    metrics::histogram!(name, labels).record(started.elapsed().as_secs_f64());
}

/// One worker's lag in a sample.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WorkerLag {
    /// The projection or process manager (and partition, when it has several).
    pub name: String,
    /// How many positions it is behind the last committed event.
    pub lag: u64,
}

/// The lag of every worker at one moment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LagSample {
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Each worker's lag.
    pub workers: Vec<WorkerLag>,
}

/// The last [`ServiceOptions::lag_samples`] samples of the workers' lag, oldest first.
#[derive(Debug)]
pub struct LagHistory {
    capacity: usize,
    samples: Mutex<VecDeque<LagSample>>,
}

impl LagHistory {
    /// An empty history keeping `capacity` samples (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            samples: Mutex::new(VecDeque::new()),
        }
    }

    /// Records the lag of the workers of `report` now, dropping the oldest sample when full.
    pub fn record(&self, report: &HealthReport) {
        let at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let workers = report
            .workers
            .iter()
            .map(|w| WorkerLag {
                name: if w.partition == 0 {
                    w.name.clone()
                } else {
                    format!("{}#{}", w.name, w.partition)
                },
                lag: w.lag_events,
            })
            .collect();
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        if samples.len() == self.capacity {
            samples.pop_front();
        }
        samples.push_back(LagSample { at_ms, workers });
    }

    /// The samples, oldest first.
    pub fn samples(&self) -> Vec<LagSample> {
        let samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        samples.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::WorkerHealth;

    fn report(lag: u64) -> HealthReport {
        HealthReport {
            healthy: true,
            workers: vec![WorkerHealth {
                name: "order_list".into(),
                partition: 0,
                state: "Running".into(),
                checkpoint: 0,
                lag_events: lag,
                error: None,
            }],
            problems: Vec::new(),
        }
    }

    #[test]
    fn the_history_keeps_the_last_samples_oldest_first() {
        let history = LagHistory::new(3);
        for lag in 1..=5 {
            history.record(&report(lag));
        }
        let lags: Vec<u64> = history.samples().iter().map(|s| s.workers[0].lag).collect();
        assert_eq!(lags, [3, 4, 5]);
        assert_eq!(history.samples()[0].workers[0].name, "order_list");
    }
}
