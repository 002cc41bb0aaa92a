//! The error a call answers with: a code, a message and optional data.

use std::borrow::Cow;
use std::fmt;

use crate::protocol::PayloadError;

/// The error reply of a call: a machine-readable `code`, a human-readable
/// `message`, and optional structured `data`.
///
/// Handlers return it (directly or through [`IntoCallError`]) and clients
/// receive it as [`Error::Handler`](crate::Error::Handler).
///
/// ```
/// use webmesh::CallError;
///
/// #[webmesh::on("/withdraw")]
/// async fn withdraw(amount: u64) -> Result<u64, CallError> {
///     if amount > 100 {
///         return Err(CallError::new("insufficient_funds", "balance is 100"));
///     }
///     Ok(100 - amount)
/// }
/// ```
///
/// # Details for the log
///
/// An error can carry a [detail](Self::with_detail) for the server's
/// operators that callers do not see: the server logs it and sends only
/// the code and the message, unless it is built with
/// [`ServerBuilder::expose_internal_errors`](crate::ServerBuilder::expose_internal_errors).
/// Handlers returning `Result<T, std::io::Error>`,
/// `Result<T, Box<dyn std::error::Error + Send + Sync>>` or (feature
/// `anyhow`) `anyhow::Result<T>` get this: the caller sees the code
/// `internal` and the message `internal error`, the log has the error.
///
/// ```
/// #[webmesh::on("/config")]
/// fn config() -> Result<String, std::io::Error> {
///     // Callers see `internal: internal error`; the log has the error.
///     std::fs::read_to_string("/etc/service.toml")
/// }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct CallError {
    code: Cow<'static, str>,
    message: String,
    data: Option<serde_json::Value>,
    /// For the server's log, not for the caller.
    detail: Option<String>,
}

impl CallError {
    /// The code of a call to a path that has no handler.
    pub const NOT_FOUND: &'static str = "not_found";
    /// The code of a payload that does not decode into the handler's type.
    pub const BAD_PAYLOAD: &'static str = "bad_payload";
    /// The code of an envelope that is wrong beyond its payload.
    pub const BAD_REQUEST: &'static str = "bad_request";
    /// The code of a refused subscription or publication, by default.
    pub const FORBIDDEN: &'static str = "forbidden";
    /// The code of an error given as a bare message (`Result<T, String>`).
    pub const HANDLER: &'static str = "handler_error";
    /// The code of a message refused because handling it would take more
    /// memory than its connection may hold
    /// ([`ServerBuilder::connection_memory`](crate::ServerBuilder::connection_memory)).
    pub const TOO_LARGE: &'static str = "too_large";
    /// The code of a SUBSCRIBE or PUBLISH past a limit of the server's (the
    /// length or segments of its pattern or topic, the subscriptions per
    /// connection or in all); the message names the limit's setting.
    pub const LIMIT: &'static str = "limit";
    /// The code of a subscription cancelled by an UNSUBSCRIBE before it was
    /// in place.
    pub const UNSUBSCRIBED: &'static str = "unsubscribed";
    /// The code of a failure inside the server (a handler panicked, state is missing).
    pub const INTERNAL: &'static str = "internal";

    /// Creates an error with a code (by convention `snake_case`) and a message.
    pub fn new(code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self { code: code.into(), message: message.into(), data: None, detail: None }
    }

    /// Attaches structured data, sent beside the message.
    pub fn with_data(mut self, data: serde_json::Value) -> Self {
        self.data = Some(data);
        self
    }

    /// An [`INTERNAL`](Self::INTERNAL) error.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Self::INTERNAL, message)
    }

    /// Attaches a detail for the server's log, which the caller does not
    /// see: the server logs it (at ERROR level for an
    /// [`INTERNAL`](Self::INTERNAL) error, WARN otherwise) with the path
    /// called, and sends the code and the message alone, unless it is built
    /// with [`ServerBuilder::expose_internal_errors`](crate::ServerBuilder::expose_internal_errors),
    /// which appends the detail to the message.
    ///
    /// ```
    /// use webmesh::CallError;
    ///
    /// #[webmesh::on("/balance")]
    /// async fn balance(account: u64) -> Result<u64, CallError> {
    ///     let row: Result<u64, String> = Err(format!("replica db-3 timed out on account {account}"));
    ///     row.map_err(|e| CallError::new("unavailable", "try again later").with_detail(e))
    /// }
    /// ```
    pub fn with_detail(mut self, detail: impl fmt::Display) -> Self {
        self.detail = Some(detail.to_string());
        self
    }

    /// The detail for the server's log, if any; see [`with_detail`](Self::with_detail).
    /// Errors received from a server never have one.
    pub fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }

    /// An [`INTERNAL`](Self::INTERNAL) error whose `error` goes to the
    /// server's log: what handlers returning `std::io::Error` and other
    /// error types answer.
    fn hidden(detail: impl fmt::Display) -> Self {
        Self::internal("internal error").with_detail(detail)
    }

    /// Logs the detail and takes it out, appending it to the message if
    /// `expose` is set: what a server does before it sends the error.
    pub(crate) fn log_detail(&mut self, path: &str, expose: bool) {
        let Some(detail) = self.detail.take() else { return };
        if self.code == Self::INTERNAL {
            tracing::error!(path, code = %self.code, "{}: {detail}", self.message);
        } else {
            tracing::warn!(path, code = %self.code, "{}: {detail}", self.message);
        }
        if expose {
            self.message = format!("{}: {detail}", self.message);
        }
    }

    pub(crate) fn not_found(path: &str) -> Self {
        Self::new(Self::NOT_FOUND, format!("no handler for `{path}`"))
    }

    /// The machine-readable code.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The structured data, if any.
    pub fn data(&self) -> Option<&serde_json::Value> {
        self.data.as_ref()
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for CallError {}

impl From<PayloadError> for CallError {
    fn from(err: PayloadError) -> Self {
        // The field travels in `data`; the message is the decoder's alone.
        let data = serde_json::json!({ "field": err.field() });
        CallError::new(CallError::BAD_PAYLOAD, err.message()).with_data(data)
    }
}

/// Converts a handler's error type into the [`CallError`] the caller receives.
///
/// Implement it for your own error types to return `Result<T, YourError>`
/// from handlers:
///
/// ```
/// use webmesh::{CallError, IntoCallError};
///
/// enum ShopError {
///     OutOfStock(String),
///     Database(String),
/// }
///
/// impl IntoCallError for ShopError {
///     fn into_call_error(self) -> CallError {
///         match self {
///             ShopError::OutOfStock(item) => CallError::new("out_of_stock", format!("no {item} left")),
///             // Do not leak internals to callers.
///             ShopError::Database(_) => CallError::internal("try again later"),
///         }
///     }
/// }
///
/// #[webmesh::on("/buy")]
/// async fn buy(item: String) -> Result<u32, ShopError> {
///     Err(ShopError::OutOfStock(item))
/// }
/// ```
///
/// `String` and `&'static str` errors become the code `handler_error` with
/// the string as message.
///
/// With `#[webmesh::on]`, a return type spelled `Result<..>` is always an
/// error reply on `Err`. A closure given to [`Router::on`](crate::Router::on)
/// whose error type is also `Serialize` (such as `String`) is ambiguous,
/// since a `Result` is itself serializable, and does not compile: return
/// `Result<T, CallError>` there, converting with `map_err`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be turned into a webmesh error reply",
    label = "implement `webmesh::IntoCallError` for it, or map it to `webmesh::CallError`"
)]
pub trait IntoCallError {
    /// Performs the conversion.
    fn into_call_error(self) -> CallError;
}

impl IntoCallError for CallError {
    fn into_call_error(self) -> CallError {
        self
    }
}

impl IntoCallError for PayloadError {
    fn into_call_error(self) -> CallError {
        self.into()
    }
}

/// A bare message, with the code [`CallError::HANDLER`].
impl IntoCallError for String {
    fn into_call_error(self) -> CallError {
        CallError::new(CallError::HANDLER, self)
    }
}

/// A bare message, with the code [`CallError::HANDLER`].
impl IntoCallError for &'static str {
    fn into_call_error(self) -> CallError {
        CallError::new(CallError::HANDLER, self)
    }
}

impl IntoCallError for std::convert::Infallible {
    fn into_call_error(self) -> CallError {
        match self {}
    }
}

/// An [`INTERNAL`](CallError::INTERNAL) error, `internal error`; the error
/// itself goes to the server's log (see [`CallError::with_detail`]).
impl IntoCallError for std::io::Error {
    fn into_call_error(self) -> CallError {
        CallError::hidden(Chain(&self))
    }
}

/// An [`INTERNAL`](CallError::INTERNAL) error, `internal error`; the error
/// and its sources go to the server's log (see [`CallError::with_detail`]).
impl IntoCallError for Box<dyn std::error::Error + Send + Sync> {
    fn into_call_error(self) -> CallError {
        CallError::hidden(Chain(&*self))
    }
}

/// An [`INTERNAL`](CallError::INTERNAL) error, `internal error`; the error
/// and its context go to the server's log (see [`CallError::with_detail`]).
/// With the feature `anyhow`.
///
/// ```
/// use anyhow::Context;
///
/// #[webmesh::on("/report")]
/// async fn report(day: String) -> anyhow::Result<String> {
///     let path = format!("/var/reports/{day}.txt");
///     std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))
/// }
/// ```
#[cfg(feature = "anyhow")]
impl IntoCallError for anyhow::Error {
    fn into_call_error(self) -> CallError {
        // `{:#}`: the context and every cause, on one line.
        CallError::hidden(format_args!("{self:#}"))
    }
}

/// An error and its sources, one line: `outer: inner: root`.
struct Chain<'a>(&'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = self.0.to_string();
        let mut source = self.0.source();
        while let Some(error) = source {
            // Many errors already print their source; say it once.
            let more = error.to_string();
            if !text.ends_with(&more) {
                text.push_str(": ");
                text.push_str(&more);
            }
            source = error.source();
        }
        f.write_str(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("loading the price list")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn errors_become_internal_with_the_detail_kept_for_the_log() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "prices.csv is missing");
        let error = io.into_call_error();
        assert_eq!((error.code(), error.message()), (CallError::INTERNAL, "internal error"));
        assert_eq!(error.detail(), Some("prices.csv is missing"));

        let boxed: Box<dyn std::error::Error + Send + Sync> =
            Box::new(Outer(std::io::Error::other("prices.csv is missing")));
        let error = boxed.into_call_error();
        assert_eq!(error.message(), "internal error");
        assert_eq!(error.detail(), Some("loading the price list: prices.csv is missing"));
    }

    #[cfg(feature = "anyhow")]
    #[test]
    fn anyhow_errors_keep_their_context_for_the_log() {
        use anyhow::Context;
        let result: anyhow::Result<()> = Err(std::io::Error::other("disk full")).context("saving the order");
        let error = result.unwrap_err().into_call_error();
        assert_eq!((error.code(), error.message()), (CallError::INTERNAL, "internal error"));
        assert_eq!(error.detail(), Some("saving the order: disk full"));
    }

    #[test]
    fn the_detail_is_sent_only_when_exposed() {
        let mut hidden = CallError::hidden("db-3 timed out");
        hidden.log_detail("/balance", false);
        assert_eq!((hidden.message(), hidden.detail()), ("internal error", None));
        let mut exposed = CallError::hidden("db-3 timed out");
        exposed.log_detail("/balance", true);
        assert_eq!((exposed.message(), exposed.detail()), ("internal error: db-3 timed out", None));
    }
}
