use crate::handler::{BoxedHandler, Handler};

/// What a route answers. Not public API.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    /// Calls and emits (`#[webmesh::on]`).
    Call,
    /// Subscription checks (`#[webmesh::subscribe]`).
    Subscribe,
    /// Client publication checks (`#[webmesh::publish]`).
    Publish,
}

impl std::fmt::Display for RouteKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RouteKind::Call => "call",
            RouteKind::Subscribe => "subscribe",
            RouteKind::Publish => "publish",
        })
    }
}

/// A handler declared with `#[webmesh::on]` (or `subscribe`, `publish`),
/// collected at link time.
///
/// Not public API: built only by the macro's generated code.
#[doc(hidden)]
pub struct Registration {
    pub(crate) kind: RouteKind,
    pub(crate) path: &'static str,
    pub(crate) name: &'static str,
    pub(crate) file: &'static str,
    pub(crate) line: u32,
    pub(crate) make: fn() -> BoxedHandler,
}

impl Registration {
    /// Describes one handler; `make` builds it when the server starts.
    pub const fn new(
        kind: RouteKind,
        path: &'static str,
        name: &'static str,
        file: &'static str,
        line: u32,
        make: fn() -> BoxedHandler,
    ) -> Self {
        Self { kind, path, name, file, line, make }
    }

    pub(crate) fn origin(&self) -> String {
        format!("{} at {}:{}", self.name, self.file, self.line)
    }
}

inventory::collect!(Registration);

/// Erases a handler's type for the registry. Not public API.
#[doc(hidden)]
pub fn erase<H: Handler<T>, T>(handler: H) -> BoxedHandler {
    BoxedHandler::new(handler)
}

/// Every handler declared with `#[webmesh::on]` in the program.
pub(crate) fn registered() -> impl Iterator<Item = &'static Registration> {
    inventory::iter::<Registration>.into_iter()
}
