//! What the mesh's NATS messages carry (PROTOCOL.md, "The mesh over NATS").
//!
//! - A call, on a route's subject or a node's own: `[path, identity, data]`
//!   (identity nil unless the mesh forwards identities), the data last.
//!   Its answer, on the request's reply subject: `[0, value]`, or
//!   `[1, code, message, data]` for an error.
//! - An event, on its topic's subject: a 17-byte header (flags, the
//!   publishing node's origin number, the event's sequence number from that
//!   origin, big-endian), then the event's data as MessagePack. A node
//!   whose subscriptions overlap receives an event once per subscription:
//!   the origin and sequence let it deliver the event once. Flag bit 0
//!   says the origin dropped events before this one.

use std::collections::HashMap;
use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use serde::de::{DeserializeOwned, SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::handler::{Reply, ReplyKind};
use crate::{CallError, Error, Payload};

/// The flag of an event sent after its origin dropped others.
pub(crate) const GAP: u8 = 1;

/// The length of an event's header.
pub(crate) const EVENT_HEADER: usize = 17;

/// A call as sent: the fields of a FORWARD, its data not yet a value.
pub(crate) struct CallOut<'a, T: ?Sized> {
    pub(crate) path: &'a str,
    pub(crate) data: &'a T,
    pub(crate) identity: Option<&'a rmpv::Value>,
}

/// Encodes a call: `[path, identity or nil, data]`, the data last so that
/// the node running it takes the rest of the message as it is.
pub(crate) fn call<T: Serialize + ?Sized>(call: &CallOut<'_, T>) -> Result<Bytes, Error> {
    let mut buf = Vec::with_capacity(64);
    // Structs travel as maps, as in every webmesh message.
    let mut ser = rmp_serde::Serializer::new(&mut buf).with_struct_map();
    (call.path, call.identity, call.data).serialize(&mut ser).map_err(|e| Error::Protocol(e.to_string()))?;
    Ok(buf.into())
}

/// Encodes a call whose data is one MessagePack value, already encoded:
/// the bytes [`call`] makes of the value it holds.
pub(crate) fn call_encoded(path: &str, identity: Option<&rmpv::Value>, data: &[u8]) -> Result<Bytes, Error> {
    let mut buf = Vec::with_capacity(path.len() + data.len() + 8);
    buf.push(0x93);
    // Infallible into a Vec.
    let _ = rmp::encode::write_str(&mut buf, path);
    match identity {
        None => buf.push(NIL),
        Some(identity) => {
            let mut ser = rmp_serde::Serializer::new(&mut buf).with_struct_map();
            identity.serialize(&mut ser).map_err(|e| Error::Protocol(e.to_string()))?;
        }
    }
    buf.extend_from_slice(data);
    Ok(buf.into())
}

/// The value of an answer `[0, value]`, as its bytes, if it is one that
/// decodes as it is (see [`crate::protocol::value_len`]); `None` for an
/// error, or an answer that must be decoded to be known.
pub(crate) fn answered_value(answer: &Bytes) -> Option<Bytes> {
    let rest = answer.strip_prefix(&[0x92, 0x00])?;
    let len = crate::protocol::value_len(rest)?;
    Some(answer.slice(2..2 + len))
}

/// A call as received: its data still encoded, a slice of the message.
pub(crate) struct CallIn {
    pub(crate) path: String,
    pub(crate) identity: Option<rmpv::Value>,
    pub(crate) data: Payload,
}

/// Decodes a call.
pub(crate) fn read_call(message: &Bytes) -> Result<CallIn, String> {
    let mut rest: &[u8] = message;
    let len = rmp::decode::read_array_len(&mut rest).map_err(|e| format!("a call is an array ({e})"))?;
    if len != 3 {
        return Err(format!("a call is [path, identity, data], not {len} elements"));
    }
    let path_len = rmp::decode::read_str_len(&mut rest).map_err(|e| format!("the path must be a string ({e})"))?;
    let (path, after) = rest.split_at_checked(path_len as usize).ok_or("the path is cut short")?;
    let path = std::str::from_utf8(path).map_err(|_| "the path is not UTF-8")?.to_owned();
    rest = after;
    let identity = match rest.first() {
        Some(&NIL) => {
            rest = &rest[1..];
            None
        }
        Some(_) => Some(rmpv::decode::read_value(&mut rest).map_err(|e| format!("the identity: {e}"))?),
        None => return Err("a call without its identity".into()),
    };
    if rest.is_empty() {
        return Err("a call without its data".into());
    }
    let data = Payload::msgpack(message.slice(message.len() - rest.len()..));
    Ok(CallIn { path, identity, data })
}

/// MessagePack's nil.
const NIL: u8 = 0xc0;

/// The answer to a call, as sent.
pub(crate) fn answer(reply: &Reply) -> Bytes {
    if let ReplyKind::Encoded(value) = &reply.0 {
        let mut buf = Vec::with_capacity(value.0.len() + 2);
        buf.extend_from_slice(&[0x92, 0x00]);
        buf.extend_from_slice(&value.0);
        return buf.into();
    }
    struct Out<'a>(&'a Reply);
    impl Serialize for Out<'_> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            match &(self.0).0 {
                ReplyKind::Value(value) => {
                    let mut seq = serializer.serialize_seq(Some(2))?;
                    seq.serialize_element(&0u8)?;
                    seq.serialize_element(value.as_ref())?;
                    seq.end()
                }
                ReplyKind::Encoded(value) => (0u8, value).serialize(serializer),
                ReplyKind::Error(error) => error_fields(error).serialize(serializer),
            }
        }
    }
    rmp_serde::to_vec_named(&Out(reply)).map(Bytes::from).unwrap_or_else(|e| {
        let error = CallError::internal(format!("the answer did not encode: {e}"));
        rmp_serde::to_vec_named(&error_fields(&error)).map(Bytes::from).unwrap_or_default()
    })
}

fn error_fields(error: &CallError) -> (u8, &str, &str, Option<&serde_json::Value>) {
    (1, error.code(), error.message(), error.data())
}

/// The answer to a call, as received: its value, or the error to return.
pub(crate) fn read_answer<R: DeserializeOwned>(path: &str, bytes: &[u8]) -> Result<R, Error> {
    read_answered(bytes)?.map_err(|error| Error::from_reply(path, error))
}

/// The answer to a call, as received: its value, or its error as the node
/// that ran it gave it.
pub(crate) fn read_answered<R: DeserializeOwned>(bytes: &[u8]) -> Result<Result<R, CallError>, Error> {
    let answer: Answer<R> = rmp_serde::from_slice(bytes)
        .map_err(|e| Error::Decode { field: ".".into(), message: format!("the answer of a node over NATS: {e}") })?;
    Ok(match answer {
        Answer::Value(value) => Ok(value),
        Answer::Error { code, message, data } => {
            let error = CallError::new(code, message);
            Err(match data {
                Some(data) => error.with_data(data),
                None => error,
            })
        }
    })
}

enum Answer<R> {
    Value(R),
    Error { code: String, message: String, data: Option<serde_json::Value> },
}

impl<'de, R: Deserialize<'de>> Deserialize<'de> for Answer<R> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Seq<R>(std::marker::PhantomData<R>);
        impl<'de, R: Deserialize<'de>> Visitor<'de> for Seq<R> {
            type Value = Answer<R>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("[0, value] or [1, code, message, data]")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let missing = || serde::de::Error::custom("a short answer");
                match seq.next_element::<u8>()?.ok_or_else(missing)? {
                    0 => Ok(Answer::Value(seq.next_element()?.ok_or_else(missing)?)),
                    1 => Ok(Answer::Error {
                        code: seq.next_element()?.ok_or_else(missing)?,
                        message: seq.next_element()?.ok_or_else(missing)?,
                        data: seq.next_element()?.flatten(),
                    }),
                    other => Err(serde::de::Error::custom(format!("an answer of kind {other}"))),
                }
            }
        }
        deserializer.deserialize_seq(Seq(std::marker::PhantomData))
    }
}

/// An event as sent: its header, then `data`.
pub(crate) fn event(flags: u8, origin: u64, seq: u64, data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(EVENT_HEADER + data.len());
    out.put_u8(flags);
    out.put_u64(origin);
    out.put_u64(seq);
    out.put_slice(data);
    out.freeze()
}

/// An event as received.
pub(crate) struct Event<'a> {
    pub(crate) flags: u8,
    pub(crate) origin: u64,
    pub(crate) seq: u64,
    pub(crate) data: &'a [u8],
}

pub(crate) fn read_event(bytes: &[u8]) -> Option<Event<'_>> {
    let (header, data) = bytes.split_at_checked(EVENT_HEADER)?;
    let number = |range: std::ops::Range<usize>| u64::from_be_bytes(header[range].try_into().unwrap_or_default());
    Some(Event { flags: header[0], origin: number(1..9), seq: number(9..17), data })
}

/// The events of each origin already delivered, among its latest
/// [`WINDOW`] sequence numbers: an event that arrives once per overlapping
/// subscription is delivered once.
#[derive(Default)]
pub(crate) struct Seen {
    origins: HashMap<u64, Window>,
    /// Counts events, to tell the origin used least lately.
    tick: u64,
}

/// The most origins remembered (each window takes 512 bytes); past it, the
/// one heard from least lately is forgotten (a node that stopped long ago).
const MAX_ORIGINS: usize = 1024;

/// How many of an origin's latest sequence numbers are remembered.
pub(crate) const WINDOW: u64 = 4096;

struct Window {
    /// When it was last used, in the events' count.
    used: u64,
    /// The highest sequence number seen.
    top: u64,
    /// Bit `n % WINDOW` is set when `n`, within `WINDOW` of `top`, was seen.
    bits: Box<[u64; (WINDOW / 64) as usize]>,
}

/// Whether an event was seen before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sighting {
    /// Not seen before: deliver it.
    First,
    /// Seen before (another subscription's copy): drop it.
    Again,
    /// Older than the window: whether it was seen is not known any more.
    /// It is dropped, and its subscribers told they may have lost events.
    Unknown,
}

impl Seen {
    /// Whether (`origin`, `seq`) was seen; it is remembered as seen.
    pub(crate) fn sight(&mut self, origin: u64, seq: u64) -> Sighting {
        self.tick += 1;
        if self.origins.len() >= MAX_ORIGINS && !self.origins.contains_key(&origin) {
            let oldest = self.origins.iter().min_by_key(|(_, w)| w.used).map(|(o, _)| *o);
            oldest.map(|o| self.origins.remove(&o));
        }
        let window =
            self.origins.entry(origin).or_insert_with(|| Window { used: 0, top: seq, bits: Box::new([0; 64]) });
        window.used = self.tick;
        if window.top.saturating_sub(seq) >= WINDOW {
            return Sighting::Unknown;
        }
        if seq > window.top {
            // Forget the numbers that fall out of the window.
            let cleared = (seq - window.top).min(WINDOW);
            for n in 1..=cleared {
                window.clear(window.top.wrapping_add(n));
            }
            window.top = seq;
        }
        let new = !window.get(seq);
        window.set(seq);
        match new {
            true => Sighting::First,
            false => Sighting::Again,
        }
    }
}

impl Window {
    fn slot(n: u64) -> (usize, u64) {
        let bit = n % WINDOW;
        ((bit / 64) as usize, 1 << (bit % 64))
    }
    fn get(&self, n: u64) -> bool {
        let (word, mask) = Self::slot(n);
        self.bits[word] & mask != 0
    }
    fn set(&mut self, n: u64) {
        let (word, mask) = Self::slot(n);
        self.bits[word] |= mask;
    }
    fn clear(&mut self, n: u64) {
        let (word, mask) = Self::slot(n);
        self.bits[word] &= !mask;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_carries_its_data_last_as_sent_and_bad_calls_are_errors() {
        let data = serde_json::json!({"sku": "tea", "n": [1, 2]});
        let identity = rmpv::Value::from("alice");
        let bytes = call(&CallOut { path: "/orders/place", data: &data, identity: Some(&identity) }).unwrap();
        let read = read_call(&bytes).unwrap();
        assert_eq!(read.path, "/orders/place");
        assert_eq!(read.identity, Some(identity));
        assert_eq!(read.data.deserialize::<serde_json::Value>().unwrap(), data);
        let bytes = call(&CallOut { path: "/p", data: &(), identity: None }).unwrap();
        let read = read_call(&bytes).unwrap();
        assert_eq!((read.path.as_str(), read.identity), ("/p", None));
        assert_eq!(read.data.deserialize::<()>().unwrap(), ());
        for bad in
            [&b""[..], &[0x93, 0xa1, b'/'], &[0x92, 0xa1, b'/', 0xc0], &[0x93, 0x01, 0xc0, 0xc0], &[0x93, 0xa4, b'/']]
        {
            assert!(read_call(&Bytes::copy_from_slice(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_encoded_call_and_answer_are_the_bytes_of_their_values() {
        let data = serde_json::json!({"sku": "tea", "n": [1, 2], "s": "x".repeat(300)});
        let encoded = rmp_serde::to_vec_named(&data).unwrap();
        let identity = rmpv::Value::from("alice");
        for identity in [None, Some(&identity)] {
            let out = CallOut { path: "/orders/place", data: &data, identity };
            assert_eq!(call_encoded("/orders/place", identity, &encoded).unwrap(), call(&out).unwrap());
        }
        let value: rmpv::Value = rmp_serde::from_slice(&encoded).unwrap();
        let answered = answer(&Reply::value(value));
        assert_eq!(answered_value(&answered).as_deref(), Some(&encoded[..]));
        assert_eq!(answer(&Reply::encoded(encoded.clone().into())), answered);
        assert_eq!(answered_value(&answer(&Reply::error(CallError::not_found("/p")))), None);
    }

    #[test]
    fn an_event_is_first_once_and_a_window_apart_is_unknown() {
        use Sighting::*;
        let mut seen = Seen::default();
        assert_eq!(seen.sight(7, 10), First);
        assert_eq!(seen.sight(7, 10), Again);
        assert_eq!(seen.sight(7, 9), First, "an earlier number not seen yet is new");
        assert_eq!(seen.sight(8, 10), First, "origins are apart");
        assert_eq!(seen.sight(7, 10 + WINDOW), First);
        assert_eq!(seen.sight(7, 10), Unknown, "out of the window");
        assert_eq!(seen.sight(7, 11 + WINDOW / 2), First);
        assert_eq!(seen.sight(7, 11 + WINDOW / 2), Again);
        // Far ahead: the whole window is cleared.
        assert_eq!(seen.sight(7, 100 * WINDOW), First);
        assert_eq!(seen.sight(7, 100 * WINDOW - 1), First);
        // The highest numbers neither overflow nor panic.
        assert_eq!(seen.sight(9, u64::MAX - 1), First);
        assert_eq!(seen.sight(9, u64::MAX), First);
        assert_eq!(seen.sight(9, u64::MAX), Again);
        assert_eq!(seen.sight(9, 3), Unknown);
        // Origins beyond the most remembered push out the least used.
        for origin in 100..100 + MAX_ORIGINS as u64 {
            assert_eq!(seen.sight(origin, 1), First);
        }
        assert!(seen.origins.len() <= MAX_ORIGINS);
        assert_eq!(seen.sight(100 + MAX_ORIGINS as u64 - 1, 1), Again, "a recent origin is remembered");
    }

    #[test]
    fn answers_round_trip_with_their_error_codes() {
        let bytes = answer(&Reply::value(vec![1, 2]));
        assert_eq!(read_answer::<Vec<u8>>("/p", &bytes).unwrap(), vec![1, 2]);
        let bytes = answer(&Reply::error(CallError::new("rate_limited", "later")));
        match read_answer::<Vec<u8>>("/p", &bytes) {
            Err(Error::Handler(e)) => assert_eq!((e.code(), e.message()), ("rate_limited", "later")),
            other => panic!("{other:?}"),
        }
        let bytes = answer(&Reply::error(CallError::not_found("/p")));
        assert!(matches!(read_answer::<()>("/p", &bytes), Err(Error::NotFound { .. })));
        let event = event(GAP, 3, 4, b"\x90");
        let read = read_event(&event).unwrap();
        assert_eq!((read.flags, read.origin, read.seq, read.data), (GAP, 3, 4, &b"\x90"[..]));
        assert!(read_event(b"short").is_none());
    }
}
