//! The requests each system is sent, pre-encoded once, and how to tell a
//! reply from other traffic.

use std::io::Write;

use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::system::System;

/// The small payload: about 100 bytes as JSON.
pub(crate) fn small_payload() -> Value {
    json!({"id": 12345, "name": "webmesh benchmark", "tags": ["alpha", "beta", "gamma"], "score": 0.75, "active": true})
}

/// A 16 KiB payload that compresses well, like real JSON-ish data.
pub(crate) fn large_payload() -> Value {
    let rows: Vec<Value> = (0..160)
        .map(|i| json!({"row": i, "label": format!("item number {i}"), "price": 10.5, "in_stock": i % 3 == 0}))
        .collect();
    json!({ "rows": rows })
}

fn msgpack(value: &Value) -> Vec<u8> {
    rmp_serde::to_vec_named(value).expect("encode")
}

fn zlib(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).expect("compress");
    encoder.finish().expect("compress")
}

/// The request frame of one call.
pub(crate) fn request(system: System) -> Message {
    let payload = small_payload();
    match system {
        System::AxumEcho | System::WebmeshMsgpack | System::WebmeshGuarded | System::WebmeshScaling => {
            Message::binary(msgpack(&json!([1, 1, "/echo", payload])))
        }
        System::WebmeshJson => Message::text(json!([1, 1, "/echo", payload]).to_string()),
        System::WebmeshLargeZlib => Message::binary(zlib(&msgpack(&json!([1, 1, "/echo", large_payload()])))),
        System::WebmeshLargeRaw => Message::binary(msgpack(&json!([1, 1, "/echo", large_payload()]))),
        System::Jsonrpsee => {
            Message::text(json!({"jsonrpc": "2.0", "id": 1, "method": "echo", "params": [payload]}).to_string())
        }
        // Event `echo` with ack id 1: `421["echo", payload]`.
        System::Socketioxide => Message::text(format!("421{}", json!(["echo", payload]))),
        System::NatsServer => unreachable!("nats-server answers no calls here: it is measured in fan-out only"),
    }
}

/// Whether a frame from the server answers a call (rather than being a ping
/// or a handshake message).
pub(crate) fn is_reply(system: System, message: &Message) -> bool {
    match (system, message) {
        (System::Socketioxide, Message::Text(text)) => text.starts_with("43"),
        (System::Socketioxide, _) => false,
        (_, Message::Binary(_) | Message::Text(_)) => true,
        _ => false,
    }
}
