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
    /// A value already encoded as MessagePack (the answer of a call another
    /// node ran over NATS), sent as it is where the format allows.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    Encoded(Encoded),
    Error(CallError),
}

/// One well-formed MessagePack value, as bytes; serializes as the value it
/// encodes.
pub(crate) struct Encoded(pub(crate) bytes::Bytes);

impl Serialize for Encoded {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let value = rmpv::decode::read_value(&mut &self.0[..]).map_err(serde::ser::Error::custom)?;
        value.serialize(serializer)
    }
}

impl Reply {
    /// A successful reply carrying `value`.
    pub fn value<T: Serialize + Send + 'static>(value: T) -> Self {
        Reply(ReplyKind::Value(Box::new(value)))
    }

    /// A successful reply carrying one MessagePack value, already encoded.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn encoded(value: bytes::Bytes) -> Self {
        Reply(ReplyKind::Encoded(Encoded(value)))
    }

    /// An error reply.
    pub fn error(error: CallError) -> Self {
        Reply(ReplyKind::Error(error))
    }
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            ReplyKind::Value(_) | ReplyKind::Encoded(_) => f.write_str("Reply::Value(..)"),
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
