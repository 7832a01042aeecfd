//! Routing commands by type to the aggregate that accepts them.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::aggregate::{Aggregate, Command, CommandSet, CommandVisitor, Routed};
use crate::error::{BoxError, Error};
use crate::event::EventSet;
use crate::metadata::Metadata;
use crate::repository::{Executed, Repository};
use crate::store::EventStore;
use crate::stream::StreamId;

/// Why an aggregate refused a command, with the aggregate's own error inside.
///
/// A [`Router`] serves many aggregates, so its errors cannot name one error type; the
/// rejection keeps the aggregate's error as it was, for matching with
/// [`downcast_ref`](Self::downcast_ref):
///
/// ```
/// # use factum::Rejection;
/// #[derive(Debug, thiserror::Error)]
/// enum OrderError {
///     #[error("the order is cancelled")]
///     Cancelled,
/// }
/// let rejection = Rejection::new(OrderError::Cancelled);
/// assert!(matches!(rejection.downcast_ref::<OrderError>(), Some(OrderError::Cancelled)));
/// assert_eq!(rejection.to_string(), "the order is cancelled");
/// ```
#[derive(Debug)]
pub struct Rejection(BoxError);

impl Rejection {
    /// A rejection with `error`, usually an aggregate's error; a string works too.
    pub fn new(error: impl Into<BoxError>) -> Self {
        let error: BoxError = error.into();
        // A rejection passed on again keeps the aggregate's error directly inside.
        match error.downcast::<Rejection>() {
            Ok(rejection) => *rejection,
            Err(error) => Self(error),
        }
    }

    /// The aggregate's error, if it is an `E`.
    pub fn downcast_ref<E: std::error::Error + 'static>(&self) -> Option<&E> {
        self.0.downcast_ref::<E>()
    }

    /// Whether the aggregate's error is an `E`.
    pub fn is<E: std::error::Error + 'static>(&self) -> bool {
        self.0.is::<E>()
    }

    /// The aggregate's error, boxed.
    pub fn into_inner(self) -> BoxError {
        self.0
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for Rejection {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// The outcome of a command dispatched by a [`Router`]: an [`Executed`] without the
/// aggregate's types.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dispatched {
    /// The stream written to.
    pub stream_id: StreamId,
    /// The stored type names of the events the command caused (empty when it changed
    /// nothing).
    pub event_types: Vec<&'static str>,
    /// The stream's version after them.
    pub version: u64,
    /// The global position of the last event (0 when none was appended): wait for a read
    /// model to reach it to read this command's writes.
    pub position: u64,
    /// Whether this outcome was recorded earlier under the same command id and is returned
    /// again without appending.
    pub duplicate: bool,
}

impl<A: Aggregate> From<Executed<A>> for Dispatched {
    fn from(executed: Executed<A>) -> Self {
        Self {
            stream_id: executed.stream_id,
            event_types: executed.events.iter().map(EventSet::event_type).collect(),
            version: executed.version,
            position: executed.position,
            duplicate: executed.duplicate,
        }
    }
}

/// What a router reports: the repository's [`Error`], with the aggregate's error inside a
/// [`Rejection`].
pub type DispatchResult = Result<Dispatched, Error<Rejection>>;

type Handler = Arc<
    dyn Fn(Box<dyn Any + Send>, Metadata, Option<u64>) -> BoxFuture<'static, DispatchResult>
        + Send
        + Sync,
>;

#[derive(Clone)]
struct Route {
    category: &'static str,
    handler: Handler,
}

/// Dispatches any command of the registered aggregates to the aggregate that accepts it,
/// on the instance its `#[id]` field names.
///
/// Built once from the repositories, then cloned freely (it is an `Arc` inside). An
/// [`Application`](crate::Application) builds one and gives it to its process managers.
///
/// `Router::new().aggregate(Repository::<Order, _>::new(store.clone()))` routes every
/// command of `Order`; `router.dispatch(PlaceOrderV1 { order_id: "o-1".into(), .. },
/// metadata)` then executes on `order-o-1`. The book's walkthrough shows it whole.
#[derive(Clone, Default)]
pub struct Router {
    routes: Arc<HashMap<TypeId, Route>>,
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut categories: Vec<_> = self.routes.values().map(|r| r.category).collect();
        categories.sort_unstable();
        categories.dedup();
        f.debug_struct("Router")
            .field("aggregates", &categories)
            .field("commands", &self.routes.len())
            .finish()
    }
}

impl Router {
    /// A router without aggregates.
    pub fn new() -> Self {
        Self::default()
    }

    /// Routes every command type of `A`'s command set to `repository`.
    ///
    /// # Panics
    ///
    /// When a command type is already routed to another aggregate: each command type has
    /// one aggregate.
    #[must_use]
    pub fn aggregate<A, S>(mut self, repository: Repository<A, S>) -> Self
    where
        A: Aggregate,
        S: EventStore,
    {
        let mut visitor = Registrar {
            repository,
            routes: Arc::make_mut(&mut self.routes),
        };
        <A::Command as CommandSet>::visit_commands(&mut visitor);
        self
    }

    /// Whether commands of type `C` are routed.
    pub fn routes<C: Command>(&self) -> bool {
        self.routes.contains_key(&TypeId::of::<C>())
    }

    /// Executes `command` on the instance its `#[id]` names, in the aggregate that accepts
    /// it, as [`Repository::execute`] does (including command-id idempotency).
    ///
    /// A command type no registered aggregate accepts is [`Error::NotRouted`]; a rejection
    /// is [`Error::Rejected`] with the aggregate's error inside.
    pub fn dispatch<C: Routed>(
        &self,
        command: C,
        metadata: Metadata,
    ) -> impl Future<Output = DispatchResult> + Send + 'static {
        self.send(command, metadata, None)
    }

    /// Executes `command` only if its instance's stream is at version `expected`, as
    /// [`Repository::execute_expecting`] does: otherwise [`Error::VersionMismatch`].
    pub fn dispatch_expecting<C: Routed>(
        &self,
        command: C,
        expected: u64,
        metadata: Metadata,
    ) -> impl Future<Output = DispatchResult> + Send + 'static {
        self.send(command, metadata, Some(expected))
    }

    fn send<C: Command>(
        &self,
        command: C,
        metadata: Metadata,
        expected: Option<u64>,
    ) -> BoxFuture<'static, DispatchResult> {
        match self.routes.get(&TypeId::of::<C>()) {
            Some(route) => (route.handler)(Box::new(command), metadata, expected),
            None => Box::pin(std::future::ready(Err(Error::NotRouted {
                command: C::NAME,
                version: C::VERSION,
            }))),
        }
    }
}

struct Registrar<'a, A, S> {
    repository: Repository<A, S>,
    routes: &'a mut HashMap<TypeId, Route>,
}

impl<A, S> CommandVisitor<A::Command> for Registrar<'_, A, S>
where
    A: Aggregate,
    S: EventStore,
{
    fn visit<C: Command + Into<A::Command>>(&mut self) {
        let repository = self.repository.clone();
        let handler: Handler = Arc::new(move |command, metadata, expected| {
            let repository = repository.clone();
            Box::pin(async move {
                let Ok(command) = command.downcast::<C>() else {
                    return Err(Error::NotRouted {
                        command: C::NAME,
                        version: C::VERSION,
                    });
                };
                let Some(id) = command.aggregate_id() else {
                    return Err(Error::NotRouted {
                        command: C::NAME,
                        version: C::VERSION,
                    });
                };
                let stream = Repository::<A, S>::stream_id(id)
                    .map_err(|e| e.map_rejection(Rejection::new))?;
                repository
                    .run(stream, (*command).into(), metadata, expected)
                    .await
                    .map(Dispatched::from)
                    .map_err(|e| e.map_rejection(Rejection::new))
            })
        });
        let route = Route {
            category: A::CATEGORY,
            handler,
        };
        if let Some(earlier) = self.routes.insert(TypeId::of::<C>(), route) {
            panic!(
                "command `{}` (version {}) is accepted by two aggregates, `{}` and `{}`: route each command type to one aggregate",
                C::NAME,
                C::VERSION,
                earlier.category,
                A::CATEGORY
            );
        }
    }
}

/// A command, or an enum of commands (`#[command]` on an enum), that a [`Router`]
/// dispatches: what a process manager's commands must be to be dispatched through the
/// router of an [`Application`](crate::Application).
pub trait Routable: Send + Sync + 'static {
    /// Dispatches this command through `router`.
    fn dispatch_through(
        &self,
        router: &Router,
        metadata: Metadata,
    ) -> impl Future<Output = DispatchResult> + Send + 'static;
}

impl<C: Routed + Clone + Sync> Routable for C {
    fn dispatch_through(
        &self,
        router: &Router,
        metadata: Metadata,
    ) -> impl Future<Output = DispatchResult> + Send + 'static {
        router.dispatch(self.clone(), metadata)
    }
}
