//! Dispatching the commands of a process manager.

use std::future::Future;

use crate::error::{BoxError, Error};
use crate::metadata::Metadata;
use crate::router::{Rejection, Routable, Router};

/// Why a command was not dispatched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DispatchError {
    /// The target refused it (a domain rule, an invalid command): retrying will not help;
    /// the process manager compensates.
    #[error("command rejected: {0}")]
    Rejected(Rejection),
    /// It could not be dispatched now (store unavailable, conflicts): it is retried.
    #[error("command dispatch failed: {0}")]
    Failed(#[source] BoxError),
}

impl<E: std::error::Error + Send + Sync + 'static> From<Error<E>> for DispatchError {
    /// A rejection is [`DispatchError::Rejected`] with the aggregate's error inside; a command
    /// that can never succeed as it is (invalid, naming an invalid or another instance) is
    /// rejected with the error's text; anything else is [`DispatchError::Failed`], and
    /// retried.
    fn from(error: Error<E>) -> Self {
        match error {
            Error::Rejected(e) => DispatchError::Rejected(Rejection::new(e)),
            e @ (Error::InvalidCommand { .. }
            | Error::StreamId(_)
            | Error::WrongInstance { .. }
            | Error::VersionMismatch { .. }) => {
                DispatchError::Rejected(Rejection::new(e.to_string()))
            }
            other => DispatchError::Failed(Box::new(other)),
        }
    }
}

/// Sends a process manager's commands to where they are executed: usually the
/// [`Router`] of an [`Application`](crate::Application), which executes them with the given
/// metadata (whose `command_id` makes the execution idempotent).
pub trait CommandDispatcher<C>: Send + Sync + 'static {
    /// Dispatches `command` with `metadata` (command id, correlation, causation).
    fn dispatch(
        &self,
        command: &C,
        metadata: &Metadata,
    ) -> impl Future<Output = Result<(), DispatchError>> + Send;
}

/// A router dispatches any [`Routable`] command: what an
/// [`Application`](crate::Application) gives its process managers.
impl<C: Routable> CommandDispatcher<C> for Router {
    fn dispatch(
        &self,
        command: &C,
        metadata: &Metadata,
    ) -> impl Future<Output = Result<(), DispatchError>> + Send {
        let sent = command.dispatch_through(self, metadata.clone());
        async move {
            sent.await?;
            Ok(())
        }
    }
}

/// A dispatcher from a closure returning a future, for quick wiring and tests.
///
/// ```
/// use factum::Metadata;
/// use factum::process::{dispatch_fn, DispatchError};
/// let dispatcher = dispatch_fn(|command: &String, _meta: &Metadata| {
///     let command = command.clone();
///     async move { if command.is_empty() { Err(DispatchError::Rejected(factum::Rejection::new("empty"))) } else { Ok(()) } }
/// });
/// # let _ = dispatcher;
/// ```
pub fn dispatch_fn<C, F, Fut>(f: F) -> DispatchFn<F>
where
    F: Fn(&C, &Metadata) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), DispatchError>> + Send,
{
    DispatchFn(f)
}

/// See [`dispatch_fn`].
#[derive(Clone, Copy)]
pub struct DispatchFn<F>(F);

impl<F> std::fmt::Debug for DispatchFn<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DispatchFn")
    }
}

impl<C, F, Fut> CommandDispatcher<C> for DispatchFn<F>
where
    C: Sync,
    F: Fn(&C, &Metadata) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), DispatchError>> + Send,
{
    fn dispatch(
        &self,
        command: &C,
        metadata: &Metadata,
    ) -> impl Future<Output = Result<(), DispatchError>> + Send {
        (self.0)(command, metadata)
    }
}
