//! Heartbeats: silent peers are found out on both sides, live ones are kept.

mod common;

use std::time::Duration;

use common::{within, TestServer};
use webmesh::{Client, DisconnectReason, Error, Router, Server};

fn quick() -> (Duration, Duration) {
    (Duration::from_millis(150), Duration::from_millis(150))
}

#[tokio::test]
async fn the_server_closes_a_peer_that_stops_answering() {
    let (tx, mut reasons) = tokio::sync::mpsc::unbounded_channel();
    let (interval, timeout) = quick();
    let builder = Server::builder()
        .registered_handlers(false)
        .heartbeat(interval, timeout)
        .on_disconnect(move |_, reason| tx.send(reason.clone()).unwrap());
    let server = TestServer::start(builder).await;
    // Never polled again, so it never answers the server's pings.
    let (_silent, _) = tokio_tungstenite::connect_async(server.url()).await.unwrap();
    let reason = within(10, reasons.recv()).await.unwrap();
    assert_eq!(reason, DisconnectReason::TimedOut);
}

#[tokio::test]
async fn a_live_but_quiet_client_is_kept() {
    let (tx, mut reasons) = tokio::sync::mpsc::unbounded_channel();
    let (interval, timeout) = quick();
    let builder = Server::builder()
        .registered_handlers(false)
        .router(Router::new().on("/ping", || async { "pong" }))
        .heartbeat(interval, timeout)
        .on_disconnect(move |_, reason| tx.send(reason.clone()).unwrap());
    let server = TestServer::start(builder).await;
    // The client's own pings off: only the server's keep it honest.
    let client = Client::builder(server.url()).no_heartbeat().connect().await.unwrap();
    tokio::time::sleep(interval * 10).await;
    assert_eq!(client.call::<String>("/ping", &()).await.unwrap(), "pong");
    assert!(reasons.try_recv().is_err(), "the quiet client was dropped");
}

#[tokio::test]
async fn the_client_gives_up_on_a_server_that_stops_answering() {
    // A server that completes the handshake, then never reads again.
    let stuck = common::Silent::start().await;
    let (interval, timeout) = quick();
    let client = Client::builder(stuck.url())
        .heartbeat(interval, timeout)
        .timeout(Duration::from_secs(60))
        .connect()
        .await
        .unwrap();
    // Without heartbeats this call would wait its full minute.
    match within(10, client.call::<String>("/anything", &())).await {
        Err(Error::Closed(Some(reason))) => assert!(reason.contains("the server stopped answering pings"), "{reason}"),
        other => panic!("{other:?}"),
    }
    drop(stuck);
}
