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
#[derive(Debug, Clone, PartialEq)]
pub struct CallError {
    code: Cow<'static, str>,
    message: String,
    data: Option<serde_json::Value>,
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
    /// The code of a subscription cancelled by an UNSUBSCRIBE before it was
    /// in place.
    pub const UNSUBSCRIBED: &'static str = "unsubscribed";
    /// The code of a failure inside the server (a handler panicked, state is missing).
    pub const INTERNAL: &'static str = "internal";

    /// Creates an error with a code (by convention `snake_case`) and a message.
    pub fn new(code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self { code: code.into(), message: message.into(), data: None }
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
