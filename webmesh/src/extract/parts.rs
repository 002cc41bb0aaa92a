use std::convert::Infallible;
use std::sync::Arc;

use super::FromCallParts;
use crate::routing::PathParams;
use crate::server::Shared;
use crate::Connection;

/// The context of one call, from which [`FromCallParts`] extractors read.
#[derive(Clone)]
pub struct CallParts {
    pub(crate) connection: Connection,
    pub(crate) path: Arc<str>,
    pub(crate) params: PathParams,
    pub(crate) shared: Arc<Shared>,
}

impl CallParts {
    /// The connection the call came on.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// The path that was called.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The parameters the path matched, by name, in the order of the
    /// route's pattern; see [`Path`](super::Path) to decode them.
    pub fn params(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.params.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// A clone of the server state of type `T`, if the server was given one.
    pub fn state<T: Clone + Send + Sync + 'static>(&self) -> Option<T> {
        self.shared.states.get::<T>().cloned()
    }
}

impl FromCallParts for crate::Connection {
    type Rejection = Infallible;

    async fn from_call_parts(parts: &CallParts) -> Result<Self, Infallible> {
        Ok(parts.connection.clone())
    }
}

/// The path that was called, useful in a handler shared by several paths or
/// in a not-found handler.
///
/// ```
/// use webmesh::extract::CallPath;
///
/// async fn not_found(CallPath(path): CallPath) -> String {
///     format!("nothing at {path}")
/// }
/// let server = webmesh::Server::builder().not_found(not_found);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallPath(pub String);

impl FromCallParts for CallPath {
    type Rejection = Infallible;

    async fn from_call_parts(parts: &CallParts) -> Result<Self, Infallible> {
        Ok(CallPath(parts.path.to_string()))
    }
}

impl FromCallParts for crate::Hub {
    type Rejection = Infallible;

    async fn from_call_parts(parts: &CallParts) -> Result<Self, Infallible> {
        Ok(parts.shared.hub.clone())
    }
}
