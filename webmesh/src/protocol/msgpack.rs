//! Native envelopes in MessagePack.

use bytes::Bytes;
use serde::Serialize;

use super::envelope::{Envelope, Incoming};
use super::kind;
use super::payload::Payload;
use super::wire::{DecodeError, EncodeError};
use crate::CallError;

/// How deeply MessagePack values may nest, as serde_json's default: deeper
/// input is an error rather than a stack overflow.
pub(super) const MAX_DEPTH: usize = 128;

/// A MessagePack deserializer with webmesh's depth limit.
pub(super) fn deserializer(bytes: &[u8]) -> rmp_serde::Deserializer<rmp_serde::decode::ReadRefReader<'_, [u8]>> {
    let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
    de.set_max_depth(MAX_DEPTH);
    de
}

/// Decodes a whole MessagePack value with webmesh's depth limit.
pub(super) fn from_slice<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, rmp_serde::decode::Error> {
    T::deserialize(&mut deserializer(bytes))
}

pub(super) fn encode<T: Serialize + ?Sized>(envelope: &Envelope<'_, T>) -> Result<Vec<u8>, EncodeError> {
    let mut buf = Vec::with_capacity(128);
    // Structs travel as maps so that other languages see field names.
    let mut ser = rmp_serde::Serializer::new(&mut buf).with_struct_map();
    envelope.serialize(&mut ser).map_err(|e| EncodeError(e.to_string()))?;
    Ok(buf)
}

/// A cursor over the envelope's leading elements.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn uint(&mut self, what: &str) -> Result<u64, String> {
        rmp::decode::read_int(&mut self.rest).map_err(|e| format!("{what} must be an unsigned integer ({e})"))
    }

    fn str(&mut self, what: &str) -> Result<String, String> {
        let len =
            rmp::decode::read_str_len(&mut self.rest).map_err(|e| format!("{what} must be a string ({e})"))? as usize;
        if len > self.rest.len() {
            return Err(format!("{what} claims {len} bytes, {} remain", self.rest.len()));
        }
        let (s, rest) = self.rest.split_at(len);
        self.rest = rest;
        String::from_utf8(s.to_vec()).map_err(|_| format!("{what} is not UTF-8"))
    }

    /// A string, or nil.
    fn opt_str(&mut self, what: &str) -> Result<Option<String>, String> {
        if self.rest.first() == Some(&NIL) {
            self.rest = &self.rest[1..];
            return Ok(None);
        }
        self.str(what).map(Some)
    }
}

/// MessagePack's nil.
const NIL: u8 = 0xc0;

pub(super) fn decode(frame: Bytes) -> Result<Incoming, DecodeError> {
    let mut r = Reader { rest: &frame };
    let len = rmp::decode::read_array_len(&mut r.rest)
        .map_err(|e| DecodeError::Malformed(format!("expected a MessagePack array ({e})")))?;
    let kind = r.uint("the kind").map_err(DecodeError::Envelope)?;
    // The data is the last element; a missing one is nil.
    let payload = |r: &Reader<'_>, elements: u32| {
        if len < elements {
            Payload::nil()
        } else {
            Payload::msgpack(frame.slice(frame.len() - r.rest.len()..))
        }
    };
    let need = |min: u32| {
        if len < min {
            Err(DecodeError::Envelope(format!("kind {kind} needs at least {min} elements, got {len}")))
        } else {
            Ok(())
        }
    };
    match kind {
        kind::CALL | kind::SUBSCRIBE | kind::PUBLISH => {
            need(3)?;
            let id = r.uint("the call id").map_err(DecodeError::Envelope)?;
            let path = r.str("the path").map_err(|message| DecodeError::BadCall { id, message })?;
            let payload = payload(&r, 4);
            Ok(match kind {
                kind::CALL => Incoming::Call { id, path, payload },
                kind::SUBSCRIBE => Incoming::Subscribe { id, pattern: path, options: payload },
                _ => Incoming::Publish { id, topic: path, payload },
            })
        }
        kind::EMIT | kind::PUSH | kind::EVENT => {
            need(2)?;
            let path = r.str("the path").map_err(DecodeError::Envelope)?;
            let payload = payload(&r, 3);
            Ok(match kind {
                kind::EMIT => Incoming::Emit { path, payload },
                kind::PUSH => Incoming::Push { path, payload },
                _ => Incoming::Event { topic: path, payload },
            })
        }
        kind::UNSUBSCRIBE => {
            need(2)?;
            Ok(Incoming::Unsubscribe { id: r.uint("the subscription id").map_err(DecodeError::Envelope)? })
        }
        kind::LAGGED => {
            need(3)?;
            let id = r.uint("the subscription id").map_err(DecodeError::Envelope)?;
            let missed = r.uint("the missed count").map_err(DecodeError::Envelope)?;
            Ok(Incoming::Lagged { id, missed })
        }
        kind::WILL => {
            need(2)?;
            let id = r.uint("the call id").map_err(DecodeError::Envelope)?;
            let bad = |message| DecodeError::BadCall { id, message };
            // Said as the JSON reader says it: an answer, not a closed connection.
            for (i, what) in [(3, "the session"), (4, "the topic")] {
                if len < i {
                    return Err(bad(format!("{what} is missing")));
                }
            }
            let session = r.opt_str("the session").map_err(bad)?;
            let topic = r.opt_str("the topic").map_err(bad)?;
            let delay_ms = if len >= 5 { r.uint("the delay").map_err(bad)? } else { 0 };
            Ok(Incoming::Will { id, session, topic, delay_ms, payload: payload(&r, 6) })
        }
        kind::REPLY => {
            need(2)?;
            let id = r.uint("the call id").map_err(DecodeError::Envelope)?;
            Ok(Incoming::Reply { id, payload: payload(&r, 3) })
        }
        kind::ERROR => {
            need(4)?;
            let id = r.uint("the call id").map_err(DecodeError::Envelope)?;
            let code = r.str("the error code").map_err(DecodeError::Envelope)?;
            let message = r.str("the error message").map_err(DecodeError::Envelope)?;
            let mut error = CallError::new(code, message);
            if len >= 5 {
                let data: Option<serde_json::Value> =
                    from_slice(r.rest).map_err(|e| DecodeError::Envelope(format!("error data: {e}")))?;
                if let Some(data) = data {
                    error = error.with_data(data);
                }
            }
            Ok(Incoming::Error { id, error })
        }
        other => Err(DecodeError::Envelope(format!("unknown message kind {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_round_trip() {
        let data = serde_json::json!({"blop": 56});
        let bytes = encode(&Envelope::Call { id: 7, path: "/echo", data: &data }).unwrap();
        assert_eq!(bytes[0], 0x94, "a fixarray of 4");
        match decode(bytes.into()).unwrap() {
            Incoming::Call { id, path, payload } => {
                assert_eq!((id, path.as_str()), (7, "/echo"));
                assert_eq!(payload.deserialize::<serde_json::Value>().unwrap(), data);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let mut frame = vec![0x94, 0x01, 0x01, 0xa2, b'/', b'p'];
        frame.extend(std::iter::repeat_n(0x91, 100_000)); // arrays of one element, nested
        frame.push(0xc0);
        let Incoming::Call { payload, .. } = decode(frame.into()).unwrap() else { panic!() };
        assert!(payload.deserialize::<serde_json::Value>().is_err());
    }

    #[test]
    fn lying_lengths_are_errors() {
        // [1, 1, str32 claiming 4 GiB, "abc"]
        let frame = vec![0x94, 0x01, 0x01, 0xdb, 0xff, 0xff, 0xff, 0xff, b'a', b'b', b'c'];
        assert!(matches!(decode(frame.into()), Err(DecodeError::BadCall { id: 1, .. })));
        assert!(decode(Bytes::from_static(&[0xdd, 0xff, 0xff, 0xff, 0xff])).is_err());
        assert!(matches!(decode(Bytes::from_static(b"hello")), Err(DecodeError::Malformed(_))));
    }
}
