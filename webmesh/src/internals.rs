//! Entry points for the crate's own micro-benchmarks (`benches/`) and fuzz
//! targets (`fuzz/`), behind the feature `__internals`. Not public API.

use bytes::Bytes;
use serde::Serialize;

use crate::protocol::{self, Compression, Envelope, Frame, WireFormat};

/// A built-in wire format.
pub struct Format(WireFormat);

/// A built-in wire format, by name.
pub fn format(name: &str) -> Format {
    Format(match name {
        "json" => WireFormat::Json,
        _ => WireFormat::MsgPack,
    })
}

/// Encodes a call as it goes on the wire; `true` if the frame is text.
pub fn encode_call<T: Serialize>(format: &Format, id: u64, path: &str, data: &T) -> (bool, Bytes) {
    let frame = format.0.encode(&Envelope::Call { id, path, data }, Compression::default()).expect("encode");
    match frame {
        Frame::Text(b) => (true, b),
        Frame::Binary(b) => (false, b),
    }
}

/// Decodes a frame into an envelope and its payload into `T`.
pub fn decode_call<T: serde::de::DeserializeOwned>(text: bool, bytes: Bytes) -> T {
    let frame = if text { Frame::Text(bytes) } else { Frame::Binary(bytes) };
    let format = WireFormat::detect(&frame).expect("format");
    match format.decode(frame, usize::MAX).expect("decode") {
        protocol::Incoming::Call { payload, .. } => payload.deserialize().expect("payload"),
        _ => panic!("not a call"),
    }
}

/// Decodes any frame the way the server does, then its payload: what the
/// fuzz targets drive. Never panics, whatever the input.
pub fn decode_anything(text: bool, bytes: &[u8], max_size: usize) {
    let frame = if text {
        match std::str::from_utf8(bytes) {
            Ok(text) => Frame::text(text.to_owned()),
            // The WebSocket layer rejects such text frames before webmesh.
            Err(_) => return,
        }
    } else {
        Frame::Binary(Bytes::copy_from_slice(bytes))
    };
    let Ok(format) = WireFormat::detect(&frame) else { return };
    if let Ok(incoming) = format.decode(frame, max_size) {
        use protocol::Incoming::*;
        let payload = match incoming {
            Call { payload, .. } | Emit { payload, .. } | Reply { payload, .. } | Push { payload, .. } => payload,
            Legacy { payload, .. } | Publish { payload, .. } | Event { payload, .. } | Will { payload, .. } => payload,
            Subscribe { options, .. } => options,
            Error { .. } | Unsubscribe { .. } | Lagged { .. } => return,
        };
        let _ = payload.deserialize::<serde_json::Value>();
    }
}

/// zlib with the reused per-thread state.
pub fn compress(bytes: &[u8]) -> Vec<u8> {
    protocol::compress(bytes)
}

/// Inflates with the reused per-thread state.
pub fn decompress(bytes: &[u8]) -> Vec<u8> {
    protocol::decompress(bytes, usize::MAX).expect("inflate")
}

/// A route table of `router`'s calls, for lookups.
pub struct Routes(crate::routing::RouteTable);

impl Routes {
    /// Builds the table.
    pub fn new(router: crate::Router) -> Self {
        Routes(crate::routing::RouteTable::build(crate::routing::RouteKind::Call, &router.routes).expect("routes"))
    }

    /// Whether `path` has a handler.
    pub fn has(&self, path: &str) -> bool {
        self.0.at(path).is_some()
    }
}

/// A hub whose subscribers are connections to no one (their events wait in
/// queues that drop the oldest): publishing without sockets.
pub struct Subscriptions {
    hub: crate::Hub,
    connections: Vec<crate::Connection>,
}

impl Subscriptions {
    /// A hub and `connections` detached connections.
    pub fn new(connections: usize) -> Self {
        let connections = (0..connections as u64).map(|id| crate::Connection::detached(id, 64)).collect();
        Subscriptions { hub: crate::Hub::new(Compression::default()), connections }
    }

    /// The hub, to publish with.
    pub fn hub(&self) -> &crate::Hub {
        &self.hub
    }

    /// Subscription `id` of connection number `connection` to `pattern`.
    pub fn subscribe(&self, connection: usize, id: u64, pattern: &str) {
        let parsed = crate::pubsub::TopicPattern::parse(pattern).expect("pattern");
        self.hub.subscribe(&self.connections[connection], id, parsed, pattern, Default::default()).expect("subscribe");
    }

    /// Removes subscription `id` of connection number `connection`.
    pub fn unsubscribe(&self, connection: usize, id: u64) {
        self.hub.unsubscribe(self.connections[connection].id(), id);
    }
}

/// The NATS subject of `topic` in a mesh whose subjects start with `prefix`.
pub fn nats_subject(prefix: &str, topic: &str) -> String {
    crate::mesh::nats::subject::Subjects::new(prefix).of_topic(topic)
}

/// The NATS subject filter of `pattern`, or why it is no pattern.
pub fn nats_filter(prefix: &str, pattern: &str) -> Result<String, String> {
    let pattern = crate::pubsub::TopicPattern::parse(pattern).map_err(|e| e.to_string())?;
    Ok(crate::mesh::nats::subject::Subjects::new(prefix).of_pattern(&pattern))
}

/// The topic whose NATS subject is `subject`, if it is one of the mesh's.
pub fn nats_topic(prefix: &str, subject: &str) -> Option<String> {
    crate::mesh::nats::subject::Subjects::new(prefix).to_topic(subject)
}
