//! A user codec (CBOR, through ciborium) negotiated as a subprotocol.

mod common;

use common::{within, TestServer};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use webmesh::{Client, Codec, CodecError, Connection, Error, IncomingMessage, OutgoingMessage, Router, Server};

struct Cbor;

impl Codec for Cbor {
    fn name(&self) -> &'static str {
        "cbor"
    }

    fn encode(&self, message: OutgoingMessage<'_>) -> Result<Vec<u8>, CodecError> {
        let mut bytes = Vec::new();
        ciborium::into_writer(&message, &mut bytes)?;
        Ok(bytes)
    }

    fn decode(&self, bytes: &[u8]) -> Result<IncomingMessage, CodecError> {
        Ok(ciborium::from_reader(bytes)?)
    }
}

fn router() -> Router {
    Router::new()
        .on("/echo", |data: Value| async move { data })
        .on("/fail", || async { Err::<(), _>(webmesh::CallError::new("nope", "always fails")) })
        .on("/push", |conn: Connection| async move { conn.emit("/pushed", &json!({"via": "cbor"})).await.is_ok() })
}

async fn server() -> TestServer {
    TestServer::start(Server::builder().registered_handlers(false).router(router()).codec(Cbor)).await
}

#[tokio::test]
async fn a_client_and_server_agree_on_a_user_codec() {
    let server = server().await;
    let client = Client::builder(server.url()).codec(Cbor).connect().await.unwrap();
    let value = json!({"blop": 56, "list": [1, 2.5, "three", null]});
    assert_eq!(client.call::<Value>("/echo", &value).await.unwrap(), value);
    assert!(matches!(client.call::<()>("/fail", &()).await, Err(Error::Handler(e)) if e.code() == "nope"));
    assert!(matches!(client.call::<()>("/missing", &()).await, Err(Error::NotFound { .. })));
    let mut pushes = client.pushes();
    assert!(client.call::<bool>("/push", &()).await.unwrap());
    let push = within(10, pushes.next()).await.unwrap();
    assert_eq!(push.deserialize::<Value>().unwrap(), json!({"via": "cbor"}));
    // Built-in formats still work on the same endpoint.
    assert_eq!(server.json_client().await.call::<Value>("/echo", &1).await.unwrap(), json!(1));
}

#[tokio::test]
async fn the_frames_really_are_cbor() {
    let server = server().await;
    let mut request = server.url().into_client_request().unwrap();
    request.headers_mut().insert("sec-websocket-protocol", "webmesh.cbor".parse().unwrap());
    let (mut socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "webmesh.cbor");
    let mut call = Vec::new();
    ciborium::into_writer(&json!([1, 5, "/echo", {"a": 1}]), &mut call).unwrap();
    socket.send(Message::binary(call)).await.unwrap();
    let Some(Ok(Message::Binary(reply))) = within(10, socket.next()).await else { panic!("a binary reply") };
    let reply: Value = ciborium::from_reader(reply.as_ref()).unwrap();
    assert_eq!(reply, json!([3, 5, {"a": 1}]));
}

#[tokio::test]
async fn a_server_without_the_codec_refuses_the_client_clearly() {
    let server = TestServer::with_router(router()).await;
    let err = Client::builder(server.url()).codec(Cbor).connect().await.unwrap_err();
    assert!(err.to_string().to_lowercase().contains("subprotocol"), "{err}");
}

/// JSON that counts what it encodes.
struct Counting(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Codec for Counting {
    fn name(&self) -> &'static str {
        "counting"
    }

    fn is_binary(&self) -> bool {
        false
    }

    fn encode(&self, message: OutgoingMessage<'_>) -> Result<Vec<u8>, CodecError> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(serde_json::to_vec(&message)?)
    }

    fn decode(&self, bytes: &[u8]) -> Result<IncomingMessage, CodecError> {
        Ok(serde_json::from_slice(bytes)?)
    }
}

#[tokio::test]
async fn an_event_is_encoded_once_per_format_not_per_subscriber() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let server_encodes = Arc::new(AtomicUsize::new(0));
    let mut builder = Server::builder().registered_handlers(false).codec(Counting(server_encodes.clone()));
    let hub = builder.hub();
    let server = TestServer::start(builder).await;
    let mut subscriptions = Vec::new();
    for _ in 0..50 {
        let client =
            Client::builder(server.url()).codec(Counting(Arc::new(AtomicUsize::new(0)))).connect().await.unwrap();
        subscriptions.push(client.subscribe::<Value>("/fan/out").await.unwrap());
    }
    let before = server_encodes.load(Ordering::SeqCst);
    assert_eq!(hub.publish("/fan/out", &json!({"big": "x".repeat(1000)})).unwrap(), 50);
    assert_eq!(server_encodes.load(Ordering::SeqCst) - before, 1, "one encoding for 50 subscribers");
    for subscription in &mut subscriptions {
        let event = within(10, subscription.recv()).await.unwrap().unwrap();
        assert_eq!(event.topic, "/fan/out");
    }
}
