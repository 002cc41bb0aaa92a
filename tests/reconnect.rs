//! Reconnection: the client comes back to a restarted server, restores its
//! subscriptions, and never re-sends a call that may have run.

mod common;

use std::time::Duration;

use common::{within, Restartable};
use webmesh::{Client, ConnectionState, Error, Reconnect, Router, WhileDisconnected};

async fn start(addr: &str) -> Restartable {
    let router = Router::new()
        .on("/ping", || async { "pong" })
        .on("/slow", || async { tokio::time::sleep(Duration::from_secs(30)).await });
    Restartable::start(addr, router).await
}

fn fast() -> Reconnect {
    Reconnect { initial_delay: Duration::from_millis(20), max_delay: Duration::from_millis(200) }
}

async fn wait_for_state(client: &Client, wanted: fn(&ConnectionState) -> bool) {
    let mut states = client.state_changes();
    within(15, states.wait_for(wanted)).await.unwrap();
}

#[tokio::test]
async fn the_client_reconnects_restores_subscriptions_and_fails_only_calls_in_flight() {
    let first = start("127.0.0.1:0").await;
    let url = format!("ws://{}", first.addr);
    let client = Client::builder(&url).reconnect(fast()).connect().await.unwrap();
    let mut news = client.subscribe::<u32>("/news").await.unwrap();
    assert_eq!(client.state(), ConnectionState::Connected);
    let slow = tokio::spawn({
        let client = client.clone();
        async move { client.call::<()>("/slow", &()).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;

    let addr = first.stop().await;
    // The call was under way: it fails, and is not sent again.
    match within(10, slow).await.unwrap() {
        Err(Error::Closed(Some(reason))) => assert!(reason.contains("it may have run"), "{reason}"),
        other => panic!("{other:?}"),
    }
    wait_for_state(&client, |s| matches!(s, ConnectionState::Reconnecting { .. })).await;

    let second = start(&addr.to_string()).await;
    wait_for_state(&client, |s| *s == ConnectionState::Connected).await;
    assert_eq!(client.call::<String>("/ping", &()).await.unwrap(), "pong");
    // The subscription was made again on the new server.
    let restored = async {
        while second.hub.subscription_count() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    within(10, restored).await;
    second.hub.publish("/news", &7u32).unwrap();
    // Events published while disconnected are lost: the stream says so first.
    assert!(matches!(within(10, news.recv()).await, Some(Err(Error::Lagged { missed: None }))));
    assert_eq!(within(10, news.recv()).await.unwrap().unwrap().data, 7);
    second.stop().await;
}

#[tokio::test]
async fn calls_made_while_reconnecting_wait_or_fail_fast() {
    let first = start("127.0.0.1:0").await;
    let url = format!("ws://{}", first.addr);
    let waiting = Client::builder(&url).reconnect(fast()).connect().await.unwrap();
    let failing = Client::builder(&url)
        .reconnect(fast())
        .while_disconnected(WhileDisconnected::FailFast)
        .connect()
        .await
        .unwrap();
    let addr = first.stop().await;
    wait_for_state(&waiting, |s| matches!(s, ConnectionState::Reconnecting { .. })).await;
    wait_for_state(&failing, |s| matches!(s, ConnectionState::Reconnecting { .. })).await;

    match failing.call::<String>("/ping", &()).await {
        Err(Error::Closed(Some(reason))) => assert_eq!(reason, "not connected (reconnecting); it was not sent"),
        other => panic!("{other:?}"),
    }
    let pending = tokio::spawn({
        let waiting = waiting.clone();
        async move { waiting.call_with_timeout::<String>("/ping", &(), Duration::from_secs(20)).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = start(&addr.to_string()).await;
    // Sent once the connection is back, within its timeout.
    assert_eq!(within(20, pending).await.unwrap().unwrap(), "pong");
    second.stop().await;
}

#[tokio::test]
async fn without_reconnection_a_drop_closes_the_client() {
    let first = start("127.0.0.1:0").await;
    let client = Client::builder(format!("ws://{}", first.addr)).no_reconnect().connect().await.unwrap();
    first.stop().await;
    wait_for_state(&client, |s| *s == ConnectionState::Closed).await;
    assert!(matches!(client.call::<String>("/ping", &()).await, Err(Error::Closed(_))));
}
