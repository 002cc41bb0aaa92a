//! Native envelopes in JSON text.

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;

use super::envelope::{Envelope, Incoming};
use super::frame::Frame;
use super::kind;
use super::payload::Payload;
use super::wire::{DecodeError, EncodeError};
use crate::CallError;

pub(super) fn encode<T: Serialize + ?Sized>(envelope: &Envelope<'_, T>) -> Result<Frame, EncodeError> {
    serde_json::to_string(envelope).map(Frame::text).map_err(|e| EncodeError(e.to_string()))
}

pub(super) fn decode(text: Bytes) -> Result<Incoming, DecodeError> {
    let elements: Vec<&RawValue> =
        serde_json::from_slice(&text).map_err(|e| DecodeError::Malformed(format!("expected a JSON array ({e})")))?;
    let get = |i: usize| elements.get(i).map(|raw| raw.get());
    let parse = |i: usize, what: &str| -> Result<serde_json::Value, String> {
        let raw = get(i).ok_or_else(|| format!("{what} is missing"))?;
        serde_json::from_str(raw).map_err(|e| format!("{what}: {e}"))
    };
    let uint = |i: usize, what: &str| -> Result<u64, String> {
        parse(i, what)?.as_u64().ok_or_else(|| format!("{what} must be an unsigned integer"))
    };
    let string = |i: usize, what: &str| -> Result<String, String> {
        match parse(i, what)? {
            serde_json::Value::String(s) => Ok(s),
            _ => Err(format!("{what} must be a string")),
        }
    };
    let opt_string = |i: usize, what: &str| -> Result<Option<String>, String> {
        match parse(i, what)? {
            serde_json::Value::String(s) => Ok(Some(s)),
            serde_json::Value::Null => Ok(None),
            _ => Err(format!("{what} must be a string or null")),
        }
    };
    let payload = |i: usize| match elements.get(i) {
        Some(raw) => Payload::json(text.slice_ref(raw.get().as_bytes())),
        None => Payload::nil(),
    };
    let kind = uint(0, "the kind").map_err(DecodeError::Envelope)?;
    match kind {
        kind::CALL | kind::SUBSCRIBE | kind::PUBLISH => {
            let id = uint(1, "the call id").map_err(DecodeError::Envelope)?;
            let path = string(2, "the path").map_err(|message| DecodeError::BadCall { id, message })?;
            let payload = payload(3);
            Ok(match kind {
                kind::CALL => Incoming::Call { id, path, payload },
                kind::SUBSCRIBE => Incoming::Subscribe { id, pattern: path, options: payload },
                _ => Incoming::Publish { id, topic: path, payload },
            })
        }
        kind::EVENT => {
            Ok(Incoming::Event { topic: string(1, "the topic").map_err(DecodeError::Envelope)?, payload: payload(2) })
        }
        kind::UNSUBSCRIBE => {
            Ok(Incoming::Unsubscribe { id: uint(1, "the subscription id").map_err(DecodeError::Envelope)? })
        }
        kind::LAGGED => Ok(Incoming::Lagged {
            id: uint(1, "the subscription id").map_err(DecodeError::Envelope)?,
            missed: uint(2, "the missed count").map_err(DecodeError::Envelope)?,
        }),
        kind::EMIT => {
            Ok(Incoming::Emit { path: string(1, "the path").map_err(DecodeError::Envelope)?, payload: payload(2) })
        }
        kind::PUSH => {
            Ok(Incoming::Push { path: string(1, "the path").map_err(DecodeError::Envelope)?, payload: payload(2) })
        }
        kind::WILL => {
            let id = uint(1, "the call id").map_err(DecodeError::Envelope)?;
            let bad = |message| DecodeError::BadCall { id, message };
            let session = opt_string(2, "the session").map_err(bad)?;
            let topic = opt_string(3, "the topic").map_err(bad)?;
            let delay_ms = match get(4) {
                Some(_) => uint(4, "the delay").map_err(bad)?,
                None => 0,
            };
            Ok(Incoming::Will { id, session, topic, delay_ms, payload: payload(5) })
        }
        kind::REPLY => {
            Ok(Incoming::Reply { id: uint(1, "the call id").map_err(DecodeError::Envelope)?, payload: payload(2) })
        }
        kind::ERROR => {
            let id = uint(1, "the call id").map_err(DecodeError::Envelope)?;
            let code = string(2, "the error code").map_err(DecodeError::Envelope)?;
            let message = string(3, "the error message").map_err(DecodeError::Envelope)?;
            let mut error = CallError::new(code, message);
            if let Ok(data) = parse(4, "data") {
                if !data.is_null() {
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
    fn call_round_trip_and_payload_is_borrowed() {
        let frame = encode(&Envelope::Call { id: 3, path: "/echo", data: &serde_json::json!({"blop": 56}) }).unwrap();
        let Frame::Text(text) = frame else { panic!("json is text") };
        assert_eq!(&text[..], br#"[1,3,"/echo",{"blop":56}]"#);
        match decode(text).unwrap() {
            Incoming::Call { id: 3, path, payload } => {
                assert_eq!(path, "/echo");
                assert_eq!(format!("{payload:?}"), r#"Payload::Json({"blop":56})"#);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = format!("[1,1,\"/p\",{}{}]", "[".repeat(100_000), "]".repeat(100_000));
        // The envelope only skips over the payload; decoding it hits serde_json's depth limit.
        let Incoming::Call { payload, .. } = decode(Bytes::from(deep)).unwrap() else { panic!() };
        assert!(payload.deserialize::<serde_json::Value>().is_err());
    }
}
