use crate::handler::{BoxedHandler, Handler};

/// A handler declared with `#[webmesh::on]`, collected at link time.
///
/// Not public API: built only by the macro's generated code.
#[doc(hidden)]
pub struct Registration {
    pub(crate) path: &'static str,
    pub(crate) name: &'static str,
    pub(crate) file: &'static str,
    pub(crate) line: u32,
    pub(crate) make: fn() -> BoxedHandler,
}

impl Registration {
    /// Describes one handler; `make` builds it when the server starts.
    pub const fn new(
        path: &'static str,
        name: &'static str,
        file: &'static str,
        line: u32,
        make: fn() -> BoxedHandler,
    ) -> Self {
        Self { path, name, file, line, make }
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
