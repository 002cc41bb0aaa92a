use std::any::type_name;
use std::fmt;
use std::marker::PhantomData;

use super::{CallParts, FromCallParts};
use crate::{CallError, IntoCallError};

/// A value shared by all handlers, given to the server with
/// [`ServerBuilder::state`](crate::ServerBuilder::state).
///
/// Several states of different types can be given; each handler asks for
/// the ones it needs. The value is cloned per call, so wrap large or mutable
/// state in an `Arc`.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::sync::Arc;
/// use webmesh::State;
///
/// #[derive(Clone, Default)]
/// struct Counter(Arc<AtomicU64>);
///
/// #[webmesh::on("/hit")]
/// async fn hit(State(counter): State<Counter>) -> u64 {
///     counter.0.fetch_add(1, Ordering::Relaxed) + 1
/// }
///
/// let server = webmesh::Server::builder().state(Counter::default());
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct State<T>(pub T);

impl<T: Clone + Send + Sync + 'static> FromCallParts for State<T> {
    type Rejection = MissingState<T>;

    async fn from_call_parts(parts: &CallParts) -> Result<Self, Self::Rejection> {
        parts.state::<T>().map(State).ok_or(MissingState(PhantomData))
    }
}

/// A handler asked for a [`State<T>`] the server was not given.
pub struct MissingState<T>(PhantomData<fn() -> T>);

impl<T> fmt::Debug for MissingState<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MissingState<{}>", type_name::<T>())
    }
}

impl<T> fmt::Display for MissingState<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no state of type `{}`: add it with `Server::builder().state(..)`", type_name::<T>())
    }
}

impl<T> IntoCallError for MissingState<T> {
    fn into_call_error(self) -> CallError {
        tracing::error!("{self}");
        CallError::internal(self.to_string())
    }
}
