//! Stopping a runner's workers together.

use tokio::task::JoinSet;

use crate::subscription::Shutdown;

/// Triggers `shutdown` and waits for every task; returns the first error a task stopped
/// with. A task that panicked or was aborted is logged, as a `kind` worker.
pub(crate) async fn stop_all<E: 'static>(
    shutdown: &Shutdown,
    tasks: &mut JoinSet<Result<(), E>>,
    kind: &str,
) -> Result<(), E> {
    shutdown.trigger();
    let mut first = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                first.get_or_insert(e);
            }
            Err(join) => {
                tracing::error!(error = %join, "{kind} worker panicked or was aborted");
            }
        }
    }
    first.map_or(Ok(()), Err)
}
