//! Envelopes: the messages of the native protocol, in and out.

use serde::ser::{Serialize, SerializeTuple, Serializer};

use super::kind;
use super::payload::Payload;
use crate::CallError;

/// An outgoing message, borrowed from its parts; serialises as the array of
/// PROTOCOL.md (`[kind, ...]`).
pub(crate) enum Envelope<'a, T: ?Sized> {
    Call {
        id: u64,
        path: &'a str,
        data: &'a T,
    },
    Emit {
        path: &'a str,
        data: &'a T,
    },
    Reply {
        id: u64,
        data: &'a T,
    },
    Error {
        id: u64,
        error: &'a CallError,
    },
    Push {
        path: &'a str,
        data: &'a T,
    },
    Subscribe {
        id: u64,
        pattern: &'a str,
        data: &'a T,
    },
    Unsubscribe {
        id: u64,
    },
    Publish {
        id: u64,
        path: &'a str,
        data: &'a T,
    },
    Event {
        path: &'a str,
        data: &'a T,
    },
    Lagged {
        id: u64,
        missed: u64,
    },
    /// Sets (`topic` is `Some`) or withdraws the sender's will.
    Will {
        id: u64,
        session: Option<&'a str>,
        topic: Option<&'a str>,
        delay_ms: u64,
        data: &'a T,
    },
}

impl<'a> Envelope<'a, ()> {
    /// The error reply to call `id`.
    pub(crate) fn error(id: u64, error: &'a CallError) -> Self {
        Envelope::Error { id, error }
    }

    /// The notice that subscription `id` lost `missed` events.
    pub(crate) fn lagged(id: u64, missed: u64) -> Self {
        Envelope::Lagged { id, missed }
    }

    /// The end of subscription `id`.
    pub(crate) fn unsubscribe(id: u64) -> Self {
        Envelope::Unsubscribe { id }
    }
}

/// The error of an error envelope, as it travels (`code`, `message`, `data`).
pub(crate) type WireError = CallError;

impl<T: Serialize + ?Sized> Serialize for Envelope<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Envelope::Call { id, path, data } => with_id_and_path(serializer, kind::CALL, *id, path, data),
            Envelope::Subscribe { id, pattern, data } => {
                with_id_and_path(serializer, kind::SUBSCRIBE, *id, pattern, data)
            }
            Envelope::Publish { id, path, data } => with_id_and_path(serializer, kind::PUBLISH, *id, path, data),
            Envelope::Emit { path, data } => with_path(serializer, kind::EMIT, path, data),
            Envelope::Push { path, data } => with_path(serializer, kind::PUSH, path, data),
            Envelope::Event { path, data } => with_path(serializer, kind::EVENT, path, data),
            Envelope::Unsubscribe { id } => {
                let mut t = serializer.serialize_tuple(2)?;
                t.serialize_element(&kind::UNSUBSCRIBE)?;
                t.serialize_element(id)?;
                t.end()
            }
            Envelope::Lagged { id, missed } => {
                let mut t = serializer.serialize_tuple(3)?;
                t.serialize_element(&kind::LAGGED)?;
                t.serialize_element(id)?;
                t.serialize_element(missed)?;
                t.end()
            }
            Envelope::Will { id, session, topic, delay_ms, data } => {
                let mut t = serializer.serialize_tuple(6)?;
                t.serialize_element(&kind::WILL)?;
                t.serialize_element(id)?;
                t.serialize_element(session)?;
                t.serialize_element(topic)?;
                t.serialize_element(delay_ms)?;
                t.serialize_element(data)?;
                t.end()
            }
            Envelope::Reply { id, data } => {
                let mut t = serializer.serialize_tuple(3)?;
                t.serialize_element(&kind::REPLY)?;
                t.serialize_element(id)?;
                t.serialize_element(data)?;
                t.end()
            }
            Envelope::Error { id, error } => {
                let mut t = serializer.serialize_tuple(5)?;
                t.serialize_element(&kind::ERROR)?;
                t.serialize_element(id)?;
                t.serialize_element(error.code())?;
                t.serialize_element(error.message())?;
                t.serialize_element(&error.data())?;
                t.end()
            }
        }
    }
}

fn with_id_and_path<S: Serializer, T: Serialize + ?Sized>(
    serializer: S,
    kind: u64,
    id: u64,
    path: &str,
    data: &T,
) -> Result<S::Ok, S::Error> {
    let mut t = serializer.serialize_tuple(4)?;
    t.serialize_element(&kind)?;
    t.serialize_element(&id)?;
    t.serialize_element(path)?;
    t.serialize_element(data)?;
    t.end()
}

fn with_path<S: Serializer, T: Serialize + ?Sized>(
    serializer: S,
    kind: u64,
    path: &str,
    data: &T,
) -> Result<S::Ok, S::Error> {
    let mut t = serializer.serialize_tuple(3)?;
    t.serialize_element(&kind)?;
    t.serialize_element(path)?;
    t.serialize_element(data)?;
    t.end()
}

/// A decoded incoming message; the payload is left encoded until a handler
/// asks for it with the type it wants.
#[derive(Debug)]
pub(crate) enum Incoming {
    Call {
        id: u64,
        path: String,
        payload: Payload,
    },
    Emit {
        path: String,
        payload: Payload,
    },
    Reply {
        id: u64,
        payload: Payload,
    },
    Error {
        id: u64,
        error: WireError,
    },
    Push {
        path: String,
        payload: Payload,
    },
    /// A `{path, data}` message of webmesh 0.1.2.
    Legacy {
        path: String,
        payload: Payload,
    },
    Subscribe {
        id: u64,
        pattern: String,
        options: Payload,
    },
    Unsubscribe {
        id: u64,
    },
    Publish {
        id: u64,
        topic: String,
        payload: Payload,
    },
    Event {
        topic: String,
        payload: Payload,
    },
    Lagged {
        id: u64,
        missed: u64,
    },
    /// A client's will: set or replaced when `topic` is `Some`, withdrawn
    /// when it is `None`.
    Will {
        id: u64,
        session: Option<String>,
        topic: Option<String>,
        delay_ms: u64,
        payload: Payload,
    },
}
