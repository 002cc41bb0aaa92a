//! The format of webmesh 0.1.2 (Python), byte for byte.
//!
//! Every message is a text frame holding the map `{"path": p, "data": d}`,
//! either as JSON or as hex(zlib(msgpack(map))).

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::compression;
use super::envelope::{Envelope, Incoming};
use super::frame::Frame;
use super::payload::Payload;
use super::wire::{DecodeError, EncodeError};

/// Which serializer a webmesh 0.1.2 peer was started with.
///
/// 0.1.2 has no way to tell, so both sides must be configured alike; its
/// default is [`LegacyFormat::MsgPack`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LegacyFormat {
    /// `MessagePackSerializer`: hex(zlib(msgpack)) in text frames (0.1.2's default).
    MsgPack,
    /// `StandardJsonSerializer`: JSON text frames.
    Json,
}

#[derive(Serialize)]
struct Outgoing<'a, T: ?Sized> {
    path: &'a str,
    data: &'a T,
}

#[derive(Deserialize)]
struct JsonIncoming<'a> {
    path: String,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct MsgPackIncoming {
    path: String,
    #[serde(default)]
    data: Option<rmpv::Value>,
}

pub(super) fn encode<T: Serialize + ?Sized>(
    format: LegacyFormat,
    envelope: &Envelope<'_, T>,
) -> Result<Frame, EncodeError> {
    let (path, data) = match envelope {
        Envelope::Call { path, data, .. }
        | Envelope::Emit { path, data }
        | Envelope::Push { path, data }
        | Envelope::Event { path, data } => (*path, *data),
        _ => return Err(EncodeError("webmesh 0.1.2 has only `{path, data}` messages".into())),
    };
    let message = Outgoing { path, data };
    match format {
        LegacyFormat::Json => serde_json::to_string(&message).map(Frame::text).map_err(|e| EncodeError(e.to_string())),
        LegacyFormat::MsgPack => {
            let mut packed = Vec::with_capacity(64);
            message
                .serialize(&mut rmp_serde::Serializer::new(&mut packed).with_struct_map())
                .map_err(|e| EncodeError(e.to_string()))?;
            Ok(Frame::text(hex::encode(compression::compress(&packed))))
        }
    }
}

/// How many times its size limit a 0.1.2 MessagePack message may weigh
/// (see `weight.rs`): it is decoded into dynamic values before the server
/// can weigh its data as it weighs native messages.
const LEGACY_WEIGHT_FACTOR: usize = 4;

pub(super) fn decode(format: LegacyFormat, text: &Bytes, max_size: usize) -> Result<Incoming, DecodeError> {
    match format {
        LegacyFormat::Json => {
            let message: JsonIncoming<'_> = serde_json::from_slice(text)
                .map_err(|e| DecodeError::Malformed(format!("expected {{\"path\", \"data\"}} ({e})")))?;
            let payload = match message.data {
                Some(raw) => Payload::json(text.slice_ref(raw.get().as_bytes())),
                None => Payload::nil(),
            };
            Ok(Incoming::Legacy { path: message.path, payload })
        }
        LegacyFormat::MsgPack => {
            let trimmed = text.trim_ascii();
            if trimmed.len() / 2 > max_size {
                return Err(DecodeError::TooLarge { limit: max_size });
            }
            let zipped = hex::decode(trimmed).map_err(|e| DecodeError::Malformed(format!("not hex ({e})")))?;
            let packed = compression::decompress(&zipped, max_size)?;
            // Decoded whole into dynamic values, so weighed first: 8 MiB of
            // `nil`s would take 256 MiB.
            if super::weight::msgpack(&packed) > max_size.saturating_mul(LEGACY_WEIGHT_FACTOR) {
                return Err(DecodeError::TooLarge { limit: max_size });
            }
            let message: MsgPackIncoming = super::msgpack::from_slice(&packed)
                .map_err(|e| DecodeError::Malformed(format!("expected {{\"path\", \"data\"}} ({e})")))?;
            let mut data = Vec::with_capacity(packed.len());
            rmpv::encode::write_value(&mut data, &message.data.unwrap_or(rmpv::Value::Nil))
                .map_err(|e| DecodeError::Malformed(e.to_string()))?;
            Ok(Incoming::Legacy { path: message.path, payload: Payload::msgpack(data.into()) })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Python's `MessagePackSerializer().serialize({'path': '/echo', 'data': {'blop': 56}})` prints.
    const PYTHON_ECHO: &str = "789c6b5a52905892b1543f3539237f494a624962e392a49cfc020b0087ca0a8f";

    #[test]
    fn json_round_trip() {
        let text = Bytes::from_static(br#"{"path": "/echo", "data": {"blop": 56}}"#);
        let Incoming::Legacy { path, payload } = decode(LegacyFormat::Json, &text, 1 << 20).unwrap() else { panic!() };
        assert_eq!(path, "/echo");
        let data: serde_json::Value = payload.deserialize().unwrap();
        let frame = encode(LegacyFormat::Json, &Envelope::Push { path: &path, data: &data }).unwrap();
        assert_eq!(frame, Frame::text(r#"{"path":"/echo","data":{"blop":56}}"#.into()));
    }

    #[test]
    fn msgpack_round_trip() {
        let data = serde_json::json!({"blop": 56});
        let Frame::Text(text) = encode(LegacyFormat::MsgPack, &Envelope::Push { path: "/echo", data: &data }).unwrap()
        else {
            panic!()
        };
        assert!(text.iter().all(u8::is_ascii_hexdigit));
        let Incoming::Legacy { path, payload } = decode(LegacyFormat::MsgPack, &text, 1 << 20).unwrap() else {
            panic!()
        };
        assert_eq!(path, "/echo");
        assert_eq!(payload.deserialize::<serde_json::Value>().unwrap(), data);
    }

    #[test]
    fn reads_what_python_writes() {
        let text = Bytes::from_static(PYTHON_ECHO.as_bytes());
        let Incoming::Legacy { path, payload } = decode(LegacyFormat::MsgPack, &text, 1 << 20).unwrap() else {
            panic!()
        };
        assert_eq!(path, "/echo");
        assert_eq!(payload.deserialize::<serde_json::Value>().unwrap(), serde_json::json!({"blop": 56}));
    }
}
