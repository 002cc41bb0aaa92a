//! One place that picks a format for a frame and encodes or decodes it.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;

use super::codec::{self, Codec};
use super::compression::{self, Compression, ZLIB_HEADER};
use super::envelope::{Envelope, Incoming};
use super::frame::Frame;
use super::legacy::{self, LegacyFormat};
use super::{json, msgpack};

/// How the messages of one exchange are encoded.
#[derive(Clone)]
pub(crate) enum WireFormat {
    /// Native MessagePack in binary frames, zlib above a threshold.
    MsgPack,
    /// Native JSON in text frames.
    Json,
    /// A user codec, negotiated as a WebSocket subprotocol.
    Custom(Arc<dyn Codec>),
    /// webmesh 0.1.2's `{path, data}` in text frames.
    Legacy(LegacyFormat),
}

impl fmt::Debug for WireFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireFormat::MsgPack => f.write_str("msgpack"),
            WireFormat::Json => f.write_str("json"),
            WireFormat::Custom(c) => write!(f, "custom({})", c.name()),
            WireFormat::Legacy(l) => write!(f, "legacy-{l:?}"),
        }
    }
}

/// A frame that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// The bytes are not in any format webmesh speaks.
    Malformed(String),
    /// A well-formed value that is not a valid envelope.
    Envelope(String),
    /// A call whose id was read but whose other parts are invalid: answerable.
    BadCall { id: u64, message: String },
    /// A zlib stream that does not inflate.
    Compression(String),
    /// A message over the size limit, after decompression.
    TooLarge { limit: usize },
}

impl DecodeError {
    /// The close code for a peer that sent such a frame.
    pub(crate) fn close_code(&self) -> u16 {
        match self {
            DecodeError::TooLarge { .. } => super::close_code::TOO_BIG,
            DecodeError::Envelope(_) | DecodeError::BadCall { .. } => super::close_code::PROTOCOL,
            DecodeError::Malformed(_) | DecodeError::Compression(_) => super::close_code::INVALID_DATA,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Malformed(m) => write!(f, "malformed frame: {m}"),
            DecodeError::Envelope(m) => write!(f, "invalid envelope: {m}"),
            DecodeError::BadCall { id, message } => write!(f, "invalid call {id}: {message}"),
            DecodeError::Compression(m) => write!(f, "invalid zlib data: {m}"),
            DecodeError::TooLarge { limit } => write!(f, "message larger than {limit} bytes"),
        }
    }
}

/// A value that could not be encoded (e.g. a map with non-string keys in JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EncodeError(pub(crate) String);

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot encode message: {}", self.0)
    }
}

impl WireFormat {
    /// Whether two formats encode alike (the same codec, by name).
    pub(crate) fn same_as(&self, other: &WireFormat) -> bool {
        match (self, other) {
            (WireFormat::Custom(a), WireFormat::Custom(b)) => a.name() == b.name(),
            (WireFormat::Legacy(a), WireFormat::Legacy(b)) => a == b,
            (a, b) => std::mem::discriminant(a) == std::mem::discriminant(b),
        }
    }

    /// Recognises the built-in format of a frame from its type and first byte.
    pub(crate) fn detect(frame: &Frame) -> Result<WireFormat, DecodeError> {
        match frame {
            Frame::Binary(_) => Ok(WireFormat::MsgPack),
            Frame::Text(text) => match text.iter().find(|b| !b.is_ascii_whitespace()) {
                Some(b'[') => Ok(WireFormat::Json),
                Some(b'{') => Ok(WireFormat::Legacy(LegacyFormat::Json)),
                Some(b) if b.is_ascii_hexdigit() => Ok(WireFormat::Legacy(LegacyFormat::MsgPack)),
                _ => Err(DecodeError::Malformed("a text frame must hold a JSON array, a JSON object or hex".into())),
            },
        }
    }

    /// Decodes one frame; `max_size` bounds the message after decompression.
    pub(crate) fn decode(&self, frame: Frame, max_size: usize) -> Result<Incoming, DecodeError> {
        match (self, frame) {
            (WireFormat::MsgPack, Frame::Binary(bytes)) => {
                let bytes = match bytes.first() {
                    Some(&ZLIB_HEADER) => Bytes::from(compression::decompress(&bytes, max_size)?),
                    _ => bytes,
                };
                msgpack::decode(bytes)
            }
            (WireFormat::Json, Frame::Text(text)) => json::decode(text),
            (WireFormat::Legacy(format), Frame::Text(text)) => legacy::decode(*format, &text, max_size),
            (WireFormat::Custom(codec), frame) => codec::decode(codec.as_ref(), frame),
            (format, _) => Err(DecodeError::Malformed(format!("wrong frame type for {format:?}"))),
        }
    }

    /// Encodes one envelope as a frame.
    pub(crate) fn encode<T: Serialize + ?Sized>(
        &self,
        envelope: &Envelope<'_, T>,
        compression: Compression,
    ) -> Result<Frame, EncodeError> {
        self.encode_sized(envelope, compression).map(|(frame, _)| frame)
    }

    /// Encodes one envelope as a frame, with the size a server's message
    /// limit applies to: before decompression for native MessagePack, the
    /// frame's otherwise.
    pub(crate) fn encode_sized<T: Serialize + ?Sized>(
        &self,
        envelope: &Envelope<'_, T>,
        compression: Compression,
    ) -> Result<(Frame, usize), EncodeError> {
        let frame = match self {
            WireFormat::MsgPack => {
                let bytes = msgpack::encode(envelope)?;
                let size = bytes.len();
                let frame = if size >= compression.threshold {
                    Frame::Binary(compression::compress(&bytes).into())
                } else {
                    Frame::Binary(bytes.into())
                };
                return Ok((frame, size));
            }
            WireFormat::Json => json::encode(envelope)?,
            WireFormat::Custom(codec) => codec::encode(codec.as_ref(), envelope)?,
            WireFormat::Legacy(format) => legacy::encode(*format, envelope)?,
        };
        let size = frame.len();
        Ok((frame, size))
    }
}
