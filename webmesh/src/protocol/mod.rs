//! The wire format: envelopes, codecs, compression and the legacy 0.1.2 format.
//!
//! `PROTOCOL.md` at the repository root is the normative description; this
//! module is its implementation.

pub(crate) mod close_code;
mod codec;
mod compression;
mod envelope;
mod explain;
mod frame;
mod json;
pub(crate) mod kind;
mod legacy;
mod msgpack;
mod payload;
#[cfg(test)]
mod properties;
mod weight;
mod wire;

pub use codec::{Codec, CodecError, IncomingMessage, OutgoingMessage};
pub use payload::{Payload, PayloadError};

pub(crate) use codec::subprotocol as codec_subprotocol;
pub(crate) use compression::Compression;
#[cfg(feature = "__internals")]
pub(crate) use compression::{compress, decompress};
pub(crate) use envelope::{Envelope, Incoming};
pub(crate) use frame::Frame;
pub use legacy::LegacyFormat;
pub(crate) use msgpack::{encoded_reply, value_len};
pub(crate) use wire::{DecodeError, WireFormat};
