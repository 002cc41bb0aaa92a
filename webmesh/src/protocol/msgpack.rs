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

/// The REPLY to call `id` whose data is `value`, one MessagePack value
/// already encoded: the frame `encode(&Envelope::Reply { id, data })` makes
/// of the value it holds, without decoding it.
pub(crate) fn encoded_reply(id: u64, value: &[u8], compression: super::Compression) -> super::Frame {
    let mut buf = Vec::with_capacity(value.len() + 12);
    buf.extend_from_slice(&[0x93, kind::REPLY as u8]);
    // Infallible into a Vec.
    let _ = rmp::encode::write_uint(&mut buf, id);
    buf.extend_from_slice(value);
    if buf.len() >= compression.threshold {
        super::Frame::Binary(super::compression::compress(&buf).into())
    } else {
        super::Frame::Binary(buf.into())
    }
}

/// How deeply [`value_len`] follows nested values.
const MAX_SCAN_DEPTH: usize = 100;

/// The length of the MessagePack value `bytes` starts with, if it is one
/// that decodes into a dynamic value (`rmpv::Value`) as it is: well formed,
/// its strings UTF-8, no extension types, nested at most
/// [`MAX_SCAN_DEPTH`] deep. `None` says nothing of the value but that it
/// must be decoded to be known.
pub(crate) fn value_len(bytes: &[u8]) -> Option<usize> {
    // The elements left in each open array or map (a map's keys and values
    // counted apart), the innermost in `left`.
    let mut stack = [0u64; MAX_SCAN_DEPTH];
    let mut depth = 0usize;
    let mut left = 1u64;
    let mut at = 0usize;
    let int = |at: usize, width: usize| -> Option<u64> {
        let raw = bytes.get(at..at.checked_add(width)?)?;
        Some(raw.iter().fold(0u64, |n, b| (n << 8) | u64::from(*b)))
    };
    loop {
        let marker = *bytes.get(at)?;
        at += 1;
        // The bytes after the marker, whether they are a string, and the
        // elements the value holds.
        let (skip, text, children): (u64, bool, u64) = match marker {
            0x00..=0x7f | 0xc0 | 0xc2 | 0xc3 | 0xe0..=0xff => (0, false, 0),
            0x80..=0x8f => (0, false, 2 * u64::from(marker & 0x0f)),
            0x90..=0x9f => (0, false, u64::from(marker & 0x0f)),
            0xa0..=0xbf => (u64::from(marker & 0x1f), true, 0),
            0xcc | 0xd0 => (1, false, 0),
            0xcd | 0xd1 => (2, false, 0),
            0xca | 0xce | 0xd2 => (4, false, 0),
            0xcb | 0xcf | 0xd3 => (8, false, 0),
            0xc4 | 0xd9 => (1 + int(at, 1)?, marker == 0xd9, 0),
            0xc5 | 0xda => (2 + int(at, 2)?, marker == 0xda, 0),
            0xc6 | 0xdb => (4 + int(at, 4)?, marker == 0xdb, 0),
            0xdc => (2, false, int(at, 2)?),
            0xdd => (4, false, int(at, 4)?),
            0xde => (2, false, 2 * int(at, 2)?),
            0xdf => (4, false, 2 * int(at, 4)?),
            // 0xc1 is never used; extensions take the slow way.
            _ => return None,
        };
        let end = at.checked_add(usize::try_from(skip).ok()?)?;
        let body = bytes.get(at..end)?;
        if text {
            let len = match marker {
                0xa0..=0xbf => 0,
                0xd9 => 1,
                0xda => 2,
                _ => 4,
            };
            std::str::from_utf8(&body[len..]).ok()?;
        }
        at = end;
        left -= 1;
        if children > 0 {
            if depth == MAX_SCAN_DEPTH {
                return None;
            }
            stack[depth] = left;
            depth += 1;
            left = children;
        }
        while left == 0 {
            if depth == 0 {
                return Some(at);
            }
            depth -= 1;
            left = stack[depth];
        }
    }
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

    proptest::proptest! {
        /// Whatever a client sends, the scan does not panic, and a length it
        /// vouches for is that of a value that decodes whole, as it is.
        #[test]
        fn a_scan_vouches_only_for_values_that_decode_as_they_are(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
            value in proptest::collection::vec(proptest::prelude::any::<(i64, String, bool)>(), 0..4),
        ) {
            let encoded = rmp_serde::to_vec(&value).unwrap();
            proptest::prop_assert_eq!(value_len(&encoded), Some(encoded.len()));
            for candidate in [&bytes[..], &encoded[..encoded.len() / 2]] {
                if let Some(len) = value_len(candidate) {
                    let mut rest = &candidate[..len];
                    let decoded = rmpv::decode::read_value(&mut rest);
                    proptest::prop_assert!(decoded.is_ok() && rest.is_empty(), "{:?}", candidate);
                }
            }
        }
    }

    #[test]
    fn an_encoded_reply_is_the_reply_of_its_value_and_scans_stop_at_its_end() {
        let values = [
            serde_json::json!({"id": 12345, "name": "webmesh", "tags": ["a", "b"], "score": 0.75, "ok": true, "n": null}),
            serde_json::json!(null),
            serde_json::json!([1, -1, 300, -300, 70000, u64::MAX, i64::MIN, "x".repeat(40), "y".repeat(300)]),
            serde_json::json!({"big": "z".repeat(2000)}),
        ];
        for value in values {
            let bytes = rmp_serde::to_vec_named(&value).unwrap();
            let mut padded = bytes.clone();
            padded.extend_from_slice(&[0x01, 0xc0]);
            assert_eq!(value_len(&padded), Some(bytes.len()));
            let rmpv: rmpv::Value = from_slice(&bytes).unwrap();
            for id in [0, 1, 127, 128, 70_000, u64::MAX] {
                for compression in
                    [super::super::Compression::default(), super::super::Compression { threshold: usize::MAX }]
                {
                    let frame = encoded_reply(id, &bytes, compression);
                    let bytes = encode(&Envelope::Reply { id, data: &rmpv }).unwrap();
                    let expected = if bytes.len() >= compression.threshold {
                        super::super::compression::compress(&bytes)
                    } else {
                        bytes
                    };
                    assert_eq!(frame, super::super::Frame::Binary(expected.into()));
                }
            }
        }
        for bad in [
            &b""[..],
            &[0x92, 0x01],
            &[0xa3, b'a'],
            &[0xa1, 0xff],
            &[0xd4, 0x01, 0x02],
            &[0xc1],
            &[0xdd, 0xff, 0xff, 0xff, 0xff],
        ] {
            assert_eq!(value_len(bad), None, "{bad:?}");
        }
        let deep: Vec<u8> = std::iter::repeat_n(0x91, 200).chain([0xc0]).collect();
        assert_eq!(value_len(&deep), None);
        let deep: Vec<u8> = std::iter::repeat_n(0x91, 50).chain([0xc0]).collect();
        assert_eq!(value_len(&deep), Some(51));
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
