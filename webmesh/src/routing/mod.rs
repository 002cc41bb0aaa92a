//! Routes: which handler answers which path.

mod registration;
mod table;

pub use registration::{erase, Registration};
pub(crate) use table::RouteTable;

use std::panic::Location;

use crate::handler::{BoxedHandler, Handler};

/// Handlers registered in code rather than with `#[webmesh::on]`, for
/// dynamic routes or tests.
///
/// ```
/// let router = webmesh::Router::new()
///     .on("/echo", |data: serde_json::Value| async move { data })
///     .on("/version", || env!("CARGO_PKG_VERSION"));
/// let server = webmesh::Server::builder().router(router);
/// ```
#[derive(Clone, Default)]
pub struct Router {
    pub(crate) routes: Vec<Route>,
}

/// One path, its handler and where it was declared.
#[derive(Clone)]
pub(crate) struct Route {
    pub(crate) path: String,
    pub(crate) handler: BoxedHandler,
    /// The handler's name and source location, for error messages.
    pub(crate) origin: String,
}

impl Router {
    /// Creates an empty router.
    pub fn new() -> Self {
        Self::default()
    }

    /// Answers calls and emits to `path` with `handler`.
    ///
    /// Paths are matched exactly. Two handlers on one path make the server
    /// fail to start, naming both.
    #[track_caller]
    pub fn on<H: Handler<T>, T>(mut self, path: &str, handler: H) -> Self {
        let at = Location::caller();
        self.routes.push(Route {
            path: path.to_owned(),
            handler: BoxedHandler::new(handler),
            origin: format!("{} at {}:{}", std::any::type_name::<H>(), at.file(), at.line()),
        });
        self
    }

    /// Adds every route of `other`.
    pub fn merge(mut self, other: Router) -> Self {
        self.routes.extend(other.routes);
        self
    }
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.routes.iter().map(|r| &r.path)).finish()
    }
}
