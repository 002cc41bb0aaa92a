//! User codecs: serialization formats beyond the built-in MessagePack and JSON.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::envelope::{Envelope, Incoming};
use super::frame::Frame;
use super::msgpack;
use super::wire::{DecodeError, EncodeError};

/// The error a [`Codec`] returns.
pub type CodecError = Box<dyn std::error::Error + Send + Sync>;

/// A serialization format for webmesh envelopes, beyond the built-in ones.
///
/// MessagePack and JSON are built in and recognised frame by frame. A user
/// codec is chosen per connection: the client asks for the WebSocket
/// subprotocol `webmesh.<name>` and the server, if it knows a codec of that
/// name, uses it for every message of the connection. The codec sees whole
/// envelopes (the arrays of PROTOCOL.md), so any self-describing serde format
/// fits.
///
/// ```
/// use webmesh::{Codec, CodecError, IncomingMessage, OutgoingMessage};
///
/// /// JSON, indented, for reading traffic in a packet capture.
/// struct PrettyJson;
///
/// impl Codec for PrettyJson {
///     fn name(&self) -> &'static str {
///         "pretty-json"
///     }
///     fn is_binary(&self) -> bool {
///         false
///     }
///     fn encode(&self, message: OutgoingMessage<'_>) -> Result<Vec<u8>, CodecError> {
///         Ok(serde_json::to_vec_pretty(&message)?)
///     }
///     fn decode(&self, bytes: &[u8]) -> Result<IncomingMessage, CodecError> {
///         Ok(serde_json::from_slice(bytes)?)
///     }
/// }
///
/// let server = webmesh::Server::builder().codec(PrettyJson);
/// let client = webmesh::Client::builder("ws://127.0.0.1:4269").codec(PrettyJson);
/// ```
pub trait Codec: Send + Sync + 'static {
    /// The name peers agree on, sent as the subprotocol `webmesh.<name>`.
    fn name(&self) -> &'static str;

    /// Whether messages travel in binary frames (`true`) or text frames,
    /// in which case [`Codec::encode`] must produce UTF-8.
    fn is_binary(&self) -> bool {
        true
    }

    /// Serializes one envelope: `message` implements `Serialize`.
    fn encode(&self, message: OutgoingMessage<'_>) -> Result<Vec<u8>, CodecError>;

    /// Deserializes one envelope into an [`IncomingMessage`], which
    /// implements `Deserialize`.
    fn decode(&self, bytes: &[u8]) -> Result<IncomingMessage, CodecError>;
}

/// The message a [`Codec`] encodes: serialize it with any serde format.
pub struct OutgoingMessage<'a>(&'a dyn erased_serde::Serialize);

impl Serialize for OutgoingMessage<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        erased_serde::serialize(self.0, serializer)
    }
}

/// A message a [`Codec`] decoded: deserialize it with any self-describing
/// serde format.
pub struct IncomingMessage(rmpv::Value);

impl<'de> Deserialize<'de> for IncomingMessage {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        rmpv::Value::deserialize(deserializer).map(IncomingMessage)
    }
}

/// The WebSocket subprotocol that selects `codec`.
pub(crate) fn subprotocol(codec: &dyn Codec) -> String {
    format!("webmesh.{}", codec.name())
}

pub(super) fn encode<T: Serialize + ?Sized>(
    codec: &dyn Codec,
    envelope: &Envelope<'_, T>,
) -> Result<Frame, EncodeError> {
    let bytes = codec.encode(OutgoingMessage(&envelope)).map_err(|e| EncodeError(e.to_string()))?;
    if codec.is_binary() {
        Ok(Frame::Binary(bytes.into()))
    } else {
        String::from_utf8(bytes)
            .map(Frame::text)
            .map_err(|_| EncodeError(format!("codec {} produced a text frame that is not UTF-8", codec.name())))
    }
}

/// Decodes through the user codec into a generic value, then reads the
/// envelope from that value's MessagePack form, so both share one reader.
pub(super) fn decode(codec: &dyn Codec, frame: Frame) -> Result<Incoming, DecodeError> {
    let bytes = match frame {
        Frame::Text(b) | Frame::Binary(b) => b,
    };
    let IncomingMessage(value) =
        codec.decode(&bytes).map_err(|e| DecodeError::Malformed(format!("codec {}: {e}", codec.name())))?;
    let mut packed = Vec::with_capacity(bytes.len());
    rmpv::encode::write_value(&mut packed, &value).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    msgpack::decode(packed.into())
}
