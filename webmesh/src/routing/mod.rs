//! Routes: which handler answers which path.

mod registration;
mod table;

pub use registration::{erase, Registration, RouteKind};
pub(crate) use table::{PathParams, RouteTable};

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
    pub(crate) kind: RouteKind,
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
    /// `path` may hold parameters, `/users/{id}`, and end with a catch-all,
    /// `/files/{*rest}`; handlers read them with [`Path`](crate::extract::Path).
    /// Static segments win over parameters. Two handlers on one path, or on
    /// conflicting patterns, make the server fail to start, naming both.
    #[track_caller]
    pub fn on<H: Handler<T>, T>(self, path: &str, handler: H) -> Self {
        self.route(RouteKind::Call, path, handler, Location::caller())
    }

    /// Decides who may subscribe to the topics `pattern` matches: `handler`
    /// runs for each subscription, and an error refuses it, with the error
    /// as the reason the client sees.
    ///
    /// Without a matching subscribe handler, subscribing is allowed.
    #[track_caller]
    pub fn subscribe<H: Handler<T>, T>(self, pattern: &str, handler: H) -> Self {
        self.route(RouteKind::Subscribe, pattern, handler, Location::caller())
    }

    /// Allows clients to publish to the topics `pattern` matches: `handler`
    /// runs for each publication, with its data as payload, and an error
    /// refuses it.
    ///
    /// Without a matching publish handler, clients may not publish.
    #[track_caller]
    pub fn publish<H: Handler<T>, T>(self, pattern: &str, handler: H) -> Self {
        self.route(RouteKind::Publish, pattern, handler, Location::caller())
    }

    fn route<H: Handler<T>, T>(mut self, kind: RouteKind, path: &str, handler: H, at: &Location<'_>) -> Self {
        self.routes.push(Route {
            kind,
            path: path.to_owned(),
            handler: BoxedHandler::new(handler),
            origin: format!("{} at {}:{}", std::any::type_name::<H>(), at.file(), at.line()),
        });
        self
    }

    /// Adds the handlers declared with `#[webmesh::on]`, `#[webmesh::subscribe]`
    /// and `#[webmesh::publish]` anywhere in the program.
    pub(crate) fn with_registered(mut self) -> Self {
        let declared = registration::registered().map(|r| Route {
            kind: r.kind,
            path: r.path.to_owned(),
            handler: (r.make)(),
            origin: r.origin(),
        });
        self.routes = declared.chain(self.routes).collect();
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
