//! What the benchmark binaries share: SQL rendering, the server description, medians, timed
//! runs and the report lines.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use factum_postgres::testing::fresh_store_with;
use factum_postgres::{PgConfig, PgStore};

/// Fills the schema placeholder of a benchmark `.sql` file.
pub(crate) fn sql(template: &str, store: &PgStore) -> String {
    template.replace("__SCHEMA__", &store.config().schema.quoted())
}

/// Runs a benchmark on two runtime threads, as many as the machine's cores.
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

/// A fresh schema for the raw-SQL side, with its position counter (a plain sequence).
#[allow(dead_code, reason = "not every benchmark binary uses every helper")]
pub(crate) async fn baseline_store(config: PgConfig) -> PgStore {
    let base = fresh_store_with(config).await.unwrap();
    base.pool()
        .get()
        .await
        .unwrap()
        .batch_execute(&sql(include_str!("../sql/baseline_setup.sql"), &base))
        .await
        .unwrap();
    base
}

/// The median of `values` (0 when empty).
pub(crate) fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}

/// Prints the server version, where it runs, and the settings that matter for the figures.
pub(crate) async fn describe_server(store: &PgStore) {
    let client = store.pool().get().await.expect("a connection");
    let version: String = client
        .query_one("SHOW server_version", &[])
        .await
        .expect("the server version")
        .get(0);
    println!(
        "PostgreSQL {version} at {}",
        if std::env::var_os("DATABASE_URL").is_some() {
            "DATABASE_URL"
        } else {
            "a throwaway cluster"
        }
    );
    for row in client
        .query(include_str!("../sql/settings.sql"), &[])
        .await
        .expect("the server settings")
    {
        let (name, setting): (String, String) = (row.get(0), row.get(1));
        println!("  {name} = {setting}");
    }
}

/// Prints the header of the lines of [`report`].
#[allow(dead_code, reason = "not every benchmark binary uses every helper")]
pub(crate) fn print_header() {
    println!();
    println!(
        "{:<44} {:>12} {:>12} {:<9} {:>7}",
        "case", "factum", "raw SQL", "unit", "ratio"
    );
}

/// Whether a case is to run: `BENCH_ONLY` (a comma-separated list of cases) names it, or is
/// not set.
#[allow(dead_code, reason = "not every benchmark binary uses every helper")]
pub(crate) fn wanted_cases() -> impl Fn(&str) -> bool {
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    move |case| only.is_empty() || only.split(',').any(|c| c == case)
}

/// When the tasks of a timed run stop.
#[derive(Clone, Copy, Debug)]
#[allow(dead_code, reason = "not every benchmark binary uses every helper")]
pub(crate) enum Stop {
    /// When this much time has passed since the start.
    After(Duration),
    /// When each task has run this many operations.
    Ops(u64),
}

/// Runs `op` in `tasks` concurrent loops for `run`; returns operations per second.
#[allow(dead_code, reason = "not every benchmark binary uses every helper")]
pub(crate) async fn throughput<F, Fut>(tasks: u64, run: Duration, op: F) -> f64
where
    F: Fn(u64, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    timed(tasks, Stop::After(run), op).await
}

/// Runs `op(task, i)` in `tasks` concurrent loops until `stop`; returns operations per
/// second over all tasks.
#[allow(dead_code, reason = "not every benchmark binary uses every helper")]
pub(crate) async fn timed<F, Fut>(tasks: u64, stop: Stop, op: F) -> f64
where
    F: Fn(u64, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|task| {
            let (op, count) = (op.clone(), count.clone());
            tokio::spawn(async move {
                let mut i = 0;
                while match stop {
                    Stop::After(run) => start.elapsed() < run,
                    Stop::Ops(ops) => i < ops,
                } {
                    op(task, i).await;
                    i += 1;
                }
                count.fetch_add(i, Ordering::Relaxed);
            })
        })
        .collect();
    for handle in handles {
        handle.await.unwrap();
    }
    count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// Runs `op` `times` times; returns runs per second.
#[allow(dead_code, reason = "not every benchmark binary uses every helper")]
pub(crate) async fn rate<F, Fut>(times: u32, mut op: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let start = Instant::now();
    for _ in 0..times {
        op().await;
    }
    f64::from(times) / start.elapsed().as_secs_f64()
}

/// Prints the medians of both sides and the median of the per-round ratios: each factum run
/// is compared with the baseline run next to it in time, which cancels most of the noise of
/// a shared machine.
#[allow(dead_code, reason = "not every benchmark binary uses every helper")]
pub(crate) fn report(
    case: &str,
    unit: &str,
    factum_runs: &[f64],
    raw_runs: &[f64],
    target: Option<f64>,
) {
    let ratios: Vec<f64> = factum_runs
        .iter()
        .zip(raw_runs)
        .map(|(f, r)| f / r)
        .collect();
    let (factum, raw, ratio) = (median(factum_runs), median(raw_runs), median(&ratios));
    let verdict = match target {
        Some(t) if ratio >= t => format!("meets {t}x"),
        Some(t) => format!("BELOW {t}x"),
        None => String::new(),
    };
    println!("{case:<44} {factum:>12.0} {raw:>12.0} {unit:<9} {ratio:>6.3}x  {verdict}");
}

/// The runs of one side of a case, and the CPU time this process spent in them: the client's
/// share of the two cores it shares with the server.
#[derive(Debug, Default)]
#[allow(dead_code, reason = "not every benchmark binary uses every helper")]
pub(crate) struct Side {
    /// Operations per second, one per run.
    pub(crate) runs: Vec<f64>,
    cpu: Duration,
    ops: f64,
}

#[allow(dead_code, reason = "not every benchmark binary uses every helper")]
impl Side {
    /// Runs `run`, which returns operations per second, and keeps its rate and CPU time.
    pub(crate) async fn measure(&mut self, run: impl Future<Output = f64>) {
        let (cpu, start) = (process_cpu(), Instant::now());
        let rate = run.await;
        self.ops += rate * start.elapsed().as_secs_f64();
        self.cpu += process_cpu().saturating_sub(cpu);
        self.runs.push(rate);
    }

    /// This process's CPU time per operation, in microseconds.
    pub(crate) fn cpu_per_op(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.ops.max(1.0)
    }
}

/// Prints the client CPU time per operation of a case's sides.
#[allow(dead_code, reason = "not every benchmark binary uses every helper")]
pub(crate) fn report_cpu(factum: &Side, raw: &Side) {
    let (f, r) = (factum.cpu_per_op(), raw.cpu_per_op());
    let label = "  client CPU per operation";
    println!(
        "{label:<44} {f:>12.0} {r:>12.0} {:<9} {:>6.3}x",
        "µs",
        f / r
    );
}

/// The CPU time (user and system) this process has used, from `/proc/self/stat` (0 where
/// there is none); in clock ticks of 10 ms.
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name, which may hold spaces: `state` is the first, `utime`
    // and `stime` the 12th and 13th.
    let fields: Vec<u64> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let ticks = fields.get(11).unwrap_or(&0) + fields.get(12).unwrap_or(&0);
    Duration::from_millis(ticks * 10)
}
