//! The wire format byte for byte, and bad input, through a raw WebSocket:
//! what a client written from PROTOCOL.md alone would send and see.

mod common;

use std::io::Write;
use std::time::Duration;

use common::{within, TestServer};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use webmesh::{Router, Server};

type Raw = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn router() -> Router {
    Router::new()
        .on("/echo", |data: Value| async move { data })
        .on("/add", |(a, b): (i64, i64)| async move { a + b })
        .on("/nothing", |_: Value| async {})
}

async fn server() -> TestServer {
    TestServer::start(Server::builder().registered_handlers(false).router(router()).max_message_size(1 << 20)).await
}

async fn raw(server: &TestServer) -> Raw {
    tokio_tungstenite::connect_async(server.url()).await.unwrap().0
}

async fn next(socket: &mut Raw) -> Message {
    within(10, socket.next()).await.expect("a message").expect("no error")
}

fn zlib(bytes: &[u8]) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(bytes).unwrap();
    z.finish().unwrap()
}

fn unzlib(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::write::ZlibDecoder::new(&mut out).write_all(bytes).unwrap();
    out
}

fn msgpack(value: &Value) -> Vec<u8> {
    rmp_serde::to_vec_named(value).unwrap()
}

fn from_msgpack(bytes: &[u8]) -> Value {
    rmp_serde::from_slice(bytes).unwrap()
}

/// Asserts that the server closed the connection with `code`.
async fn assert_closed_with(socket: &mut Raw, code: u16) {
    match next(socket).await {
        Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), code, "reason: {}", frame.reason),
        other => panic!("expected a close with {code}, got {other:?}"),
    }
}

/// Asserts that the server still answers a fresh client.
async fn assert_still_serving(server: &TestServer) {
    let client = server.client().await;
    assert_eq!(client.call::<i64>("/add", &(2, 3)).await.unwrap(), 5);
}

#[tokio::test]
async fn native_msgpack_call_and_reply_bytes() {
    let server = server().await;
    let mut socket = raw(&server).await;
    socket.send(Message::binary(msgpack(&json!([1, 7, "/echo", {"blop": 56}])))).await.unwrap();
    let Message::Binary(reply) = next(&mut socket).await else { panic!("msgpack replies are binary") };
    assert_eq!(reply[0], 0x93, "a fixarray of 3");
    assert_eq!(from_msgpack(&reply), json!([3, 7, {"blop": 56}]));
}

#[tokio::test]
async fn native_json_call_and_reply_text() {
    let server = server().await;
    let mut socket = raw(&server).await;
    socket.send(Message::text(r#"[1, 9, "/add", [40, 2]]"#)).await.unwrap();
    assert_eq!(next(&mut socket).await, Message::text("[3,9,42]"));
    socket.send(Message::text(r#"[1, 10, "/missing", null]"#)).await.unwrap();
    assert_eq!(next(&mut socket).await, Message::text(r#"[4,10,"not_found","no handler for `/missing`",null]"#));
}

#[tokio::test]
async fn emits_get_no_reply_and_unit_calls_get_nil() {
    let server = server().await;
    let mut socket = raw(&server).await;
    socket.send(Message::text(r#"[2, "/echo", "ignored"]"#)).await.unwrap();
    socket.send(Message::text(r#"[2, "/missing", 1]"#)).await.unwrap();
    socket.send(Message::text(r#"[1, 1, "/nothing", 1]"#)).await.unwrap();
    // The first message back is the call's: the emits got nothing.
    assert_eq!(next(&mut socket).await, Message::text("[3,1,null]"));
}

#[tokio::test]
async fn replies_come_back_in_any_order_matched_by_id() {
    let router = Router::new().on("/sleep", |ms: u64| async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    });
    let server = TestServer::with_router(router).await;
    let mut socket = raw(&server).await;
    socket.send(Message::text(r#"[1, 1, "/sleep", 300]"#)).await.unwrap();
    socket.send(Message::text(r#"[1, 2, "/sleep", 0]"#)).await.unwrap();
    assert_eq!(next(&mut socket).await, Message::text("[3,2,0]"));
    assert_eq!(next(&mut socket).await, Message::text("[3,1,300]"));
}

#[tokio::test]
async fn compressed_requests_are_read_and_large_replies_compressed() {
    let server = server().await;
    let mut socket = raw(&server).await;
    let big = json!({"text": "abc".repeat(10_000)});
    let frame = zlib(&msgpack(&json!([1, 3, "/echo", big])));
    assert_eq!(frame[0], 0x78, "a zlib stream starts with 0x78");
    socket.send(Message::binary(frame)).await.unwrap();
    let Message::Binary(reply) = next(&mut socket).await else { panic!() };
    assert_eq!(reply[0], 0x78, "a large reply is compressed");
    assert_eq!(from_msgpack(&unzlib(&reply)), json!([3, 3, big]));
    // Small replies are not.
    socket.send(Message::binary(msgpack(&json!([1, 4, "/add", [1, 1]])))).await.unwrap();
    let Message::Binary(reply) = next(&mut socket).await else { panic!() };
    assert_eq!(reply.as_ref(), msgpack(&json!([3, 4, 2])).as_slice());
}

#[tokio::test]
async fn legacy_frames_get_legacy_answers_only_when_there_is_data() {
    let server = server().await;
    let mut socket = raw(&server).await;
    socket.send(Message::text(r#"{"path": "/nothing", "data": 1}"#)).await.unwrap();
    socket.send(Message::text(r#"{"path": "/echo", "data": {"blop": 56}}"#)).await.unwrap();
    assert_eq!(next(&mut socket).await, Message::text(r#"{"path":"/echo","data":{"blop":56}}"#));
    socket.send(Message::text(r#"{"path": "/missing"}"#)).await.unwrap();
    assert_eq!(next(&mut socket).await, Message::text(r#"{"path":"/missing","data":"Path not found"}"#));

    let hex_request = hex::encode(zlib(&msgpack(&json!({"path": "/add", "data": [20, 22]}))));
    socket.send(Message::text(hex_request)).await.unwrap();
    let Message::Text(reply) = next(&mut socket).await else { panic!("0.1.2 answers in text") };
    assert_eq!(from_msgpack(&unzlib(&hex::decode(reply.as_str()).unwrap())), json!({"path": "/add", "data": 42}));
}

#[tokio::test]
async fn a_payload_of_the_wrong_type_is_a_bad_payload_reply() {
    let server = server().await;
    let mut socket = raw(&server).await;
    socket.send(Message::text(r#"[1, 5, "/add", [1, "two"]]"#)).await.unwrap();
    let Message::Text(reply) = next(&mut socket).await else { panic!() };
    let reply: Value = serde_json::from_str(&reply).unwrap();
    assert_eq!(reply[0], 4);
    assert_eq!(reply[1], 5);
    assert_eq!(reply[2], "bad_payload");
    assert_eq!(reply[4], json!({"field": "[1]"}));
    // The connection goes on.
    socket.send(Message::text(r#"[1, 6, "/add", [1, 2]]"#)).await.unwrap();
    assert_eq!(next(&mut socket).await, Message::text("[3,6,3]"));
}

#[tokio::test]
async fn a_call_with_a_bad_path_is_answered_and_the_connection_goes_on() {
    let server = server().await;
    let mut socket = raw(&server).await;
    socket.send(Message::binary(msgpack(&json!([1, 8, 12345, null])))).await.unwrap();
    let Message::Binary(reply) = next(&mut socket).await else { panic!() };
    let reply = from_msgpack(&reply);
    assert_eq!((reply[0].clone(), reply[1].clone(), reply[2].clone()), (json!(4), json!(8), json!("bad_request")));
    socket.send(Message::binary(msgpack(&json!([1, 9, "/add", [2, 2]])))).await.unwrap();
    let Message::Binary(reply) = next(&mut socket).await else { panic!() };
    assert_eq!(from_msgpack(&reply), json!([3, 9, 4]));
}

#[tokio::test]
async fn bad_frames_close_with_the_right_code_and_the_server_carries_on() {
    let server = server().await;
    let bomb = zlib(&vec![0u8; 64 << 20]);
    let mut truncated = zlib(&msgpack(&json!([1, 1, "/echo", "x".repeat(5000)])));
    truncated.truncate(truncated.len() / 2);
    let cases: Vec<(&str, Message, CloseCode)> = vec![
        ("binary that is not MessagePack", Message::binary(b"\xc1\xc1\xc1".to_vec()), CloseCode::Invalid),
        ("a MessagePack map, not an envelope", Message::binary(msgpack(&json!({"path": "/echo"}))), CloseCode::Invalid),
        ("an unknown kind", Message::binary(msgpack(&json!([99, 1, "/echo", null]))), CloseCode::Protocol),
        ("a reply from a client", Message::text("[3, 1, null]"), CloseCode::Protocol),
        ("text that is no format", Message::text("hello there"), CloseCode::Invalid),
        ("hex that is not zlib", Message::text("deadbeef"), CloseCode::Invalid),
        ("json that is not an envelope", Message::text("[\"a\"]"), CloseCode::Protocol),
        ("truncated zlib", Message::binary(truncated), CloseCode::Invalid),
        ("a zlib bomb", Message::binary(bomb), CloseCode::Size),
        ("a lying length prefix", Message::binary(vec![0xdd, 0xff, 0xff, 0xff, 0xff, 0x01]), CloseCode::Protocol),
    ];
    for (what, frame, code) in cases {
        let mut socket = raw(&server).await;
        socket.send(frame).await.unwrap();
        let got = next(&mut socket).await;
        match got {
            Message::Close(Some(close)) => assert_eq!(close.code, code, "{what}: {}", close.reason),
            other => panic!("{what}: expected a close with {code:?}, got {other:?}"),
        }
        assert_still_serving(&server).await;
    }
}

#[tokio::test]
async fn deep_nesting_is_refused_in_every_codec_without_crashing() {
    let server = server().await;
    let depth = 100_000;
    let mut packed = msgpack(&json!([1, 1, "/echo"]));
    packed[0] = 0x94; // four elements: the payload follows
    packed.extend(std::iter::repeat_n(0x91, depth));
    packed.push(0xc0);
    let json_deep = format!("[1, 1, \"/echo\", {}{}]", "[".repeat(depth), "]".repeat(depth));
    let legacy_deep = format!("{{\"path\": \"/echo\", \"data\": {}{}}}", "[".repeat(depth), "]".repeat(depth));
    for frame in [Message::binary(packed), Message::text(json_deep)] {
        let mut socket = raw(&server).await;
        socket.send(frame).await.unwrap();
        match next(&mut socket).await {
            Message::Binary(b) => assert_eq!(from_msgpack(&b)[2], "bad_payload"),
            Message::Text(t) => assert_eq!(serde_json::from_str::<Value>(&t).unwrap()[2], "bad_payload"),
            other => panic!("{other:?}"),
        }
    }
    let mut socket = raw(&server).await;
    socket.send(Message::text(legacy_deep)).await.unwrap();
    let Message::Text(reply) = next(&mut socket).await else { panic!() };
    assert!(reply.contains("bad_payload"), "{reply}");
    assert_still_serving(&server).await;
}

#[tokio::test]
async fn a_frame_over_the_limit_is_refused_with_1009() {
    let server = server().await; // 1 MiB limit
    let mut socket = raw(&server).await;
    let _ = socket.send(Message::binary(vec![0x90; 2 << 20])).await;
    assert_closed_with(&mut socket, 1009).await;
    assert_still_serving(&server).await;
}

#[tokio::test]
async fn a_text_frame_that_is_not_utf8_is_refused_with_1007() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = server().await;
    // A hand-made handshake and a masked text frame holding 0xff 0xfe, which
    // no WebSocket library would let us send.
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let handshake = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                     Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    tcp.write_all(handshake.as_bytes()).await.unwrap();
    let mut response = [0u8; 1024];
    let n = within(10, tcp.read(&mut response)).await.unwrap();
    assert!(response[..n].starts_with(b"HTTP/1.1 101"));
    let mask = [1u8, 2, 3, 4];
    let body = [0xffu8 ^ mask[0], 0xfe ^ mask[1]];
    tcp.write_all(&[0x81, 0x80 | 2, mask[0], mask[1], mask[2], mask[3], body[0], body[1]]).await.unwrap();
    // The answer is a close frame: 0x88, a length, then the code.
    let mut frame = [0u8; 4];
    within(10, tcp.read_exact(&mut frame)).await.unwrap();
    assert_eq!(frame[0], 0x88, "a close frame");
    assert_eq!(u16::from_be_bytes([frame[2], frame[3]]), 1007);
    assert_still_serving(&server).await;
}
