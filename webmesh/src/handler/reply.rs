use serde::Serialize;

use crate::marker::{ViaResult, ViaSerialize};
use crate::{CallError, IntoCallError};

/// What a handler answers: a value to serialize, or an error.
///
/// Built by [`IntoReply`] from the handler's return value. `()` and `None`
/// are the value `nil`: a native call still gets its (empty) reply, while a
/// webmesh 0.1.2 client, as with the Python server, gets none.
pub struct Reply(pub(crate) ReplyKind);

pub(crate) enum ReplyKind {
    Value(Box<dyn erased_serde::Serialize + Send>),
    Error(CallError),
}

impl Reply {
    /// A successful reply carrying `value`.
    pub fn value<T: Serialize + Send + 'static>(value: T) -> Self {
        Reply(ReplyKind::Value(Box::new(value)))
    }

    /// An error reply.
    pub fn error(error: CallError) -> Self {
        Reply(ReplyKind::Error(error))
    }
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            ReplyKind::Value(_) => f.write_str("Reply::Value(..)"),
            ReplyKind::Error(e) => write!(f, "Reply::Error({e})"),
        }
    }
}

/// Turns a handler's return value into a [`Reply`].
///
/// Implemented for every `T: Serialize` (including `()` and `Option<T>`),
/// for `Result<T, E>` where `E:` [`IntoCallError`], and for [`Reply`]. The `M`
/// parameter only keeps those implementations apart.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a webmesh reply",
    label = "handlers return a `Serialize` value, `()`, `Option<T>` or `Result<T, E: IntoCallError>`"
)]
pub trait IntoReply<M = ViaSerialize> {
    /// Performs the conversion.
    fn into_reply(self) -> Reply;
}

impl<T: Serialize + Send + 'static> IntoReply<ViaSerialize> for T {
    fn into_reply(self) -> Reply {
        Reply::value(self)
    }
}

impl<T: Serialize + Send + 'static, E: IntoCallError> IntoReply<ViaResult> for Result<T, E> {
    fn into_reply(self) -> Reply {
        match self {
            Ok(value) => Reply::value(value),
            Err(error) => Reply::error(error.into_call_error()),
        }
    }
}

impl IntoReply<crate::marker::ViaReply> for Reply {
    fn into_reply(self) -> Reply {
        self
    }
}
