//! Subscriptions: matching, authorisation, ordering, lag and clean-up.

mod common;

use std::time::Duration;

use common::{within, TestServer};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;
use webmesh::extract::Path;
use webmesh::{
    CallError, Client, Connection, DisconnectReason, Error, Hub, LagPolicy, Router, Server, SubscribeOptions,
};

fn router() -> Router {
    Router::new()
        .on("/say", |hub: Hub, text: String| async move { hub.publish("/chat/lobby", &text) })
        .subscribe("/chat/{room}", |conn: Connection, Path(room): Path<String>| async move {
            match (room.as_str(), conn.extension::<String>()) {
                ("staff", None) => Err(CallError::new("forbidden", "staff only: log in first")),
                _ => Ok(()),
            }
        })
        .publish("/news/{*rest}", || async {})
        .publish("/checked/{n}", |Path(n): Path<u32>, data: Value| async move {
            if data.is_string() && n < 10 {
                Ok(())
            } else {
                Err(CallError::new("invalid", "only strings, on /checked/0 to /checked/9"))
            }
        })
}

async fn server() -> (TestServer, Hub) {
    let mut builder = Server::builder().registered_handlers(false).router(router());
    let hub = builder.hub();
    (TestServer::start(builder).await, hub)
}

async fn next<T: serde::de::DeserializeOwned>(sub: &mut webmesh::Subscription<T>) -> webmesh::Event<T> {
    within(10, sub.recv()).await.expect("an event").expect("not an error")
}

#[tokio::test]
async fn subscribers_get_the_events_their_patterns_match() {
    let (server, hub) = server().await;
    let client = server.client().await;
    let json = server.json_client().await;
    let mut lobby = client.subscribe::<String>("/chat/lobby").await.unwrap();
    let mut rooms = json.subscribe::<String>("/chat/*").await.unwrap();
    let mut all = client.subscribe::<String>("/{*all}").await.unwrap();
    assert_eq!(hub.subscription_count(), 3);

    assert_eq!(hub.publish("/chat/lobby", "hello").unwrap(), 2, "two connections");
    hub.publish("/chat/kitchen", "soup").unwrap();
    hub.publish("/weather", "rain").unwrap();

    assert_eq!(next(&mut lobby).await, webmesh::Event { topic: "/chat/lobby".into(), data: "hello".to_owned() });
    assert_eq!(next(&mut rooms).await.data, "hello");
    assert_eq!(next(&mut rooms).await.topic, "/chat/kitchen");
    let topics: Vec<String> =
        [next(&mut all).await, next(&mut all).await, next(&mut all).await].into_iter().map(|e| e.topic).collect();
    assert_eq!(topics, ["/chat/lobby", "/chat/kitchen", "/weather"]);
    // The lobby subscriber got nothing else.
    assert!(tokio::time::timeout(Duration::from_millis(100), lobby.recv()).await.is_err());
}

#[tokio::test]
async fn events_from_one_publisher_arrive_in_order() {
    let (server, hub) = server().await;
    let client = server.client().await;
    let mut sub = client.subscribe::<u32>("/seq").await.unwrap();
    let publisher = tokio::spawn(async move {
        for n in 0..1000u32 {
            hub.publish("/seq", &n).unwrap();
            if n % 100 == 0 {
                tokio::task::yield_now().await;
            }
        }
    });
    for expected in 0..1000u32 {
        assert_eq!(next(&mut sub).await.data, expected);
    }
    publisher.await.unwrap();
}

#[tokio::test]
async fn refused_subscriptions_tell_the_client_why() {
    let (server, hub) = server().await;
    let client = server.client().await;
    match client.subscribe::<Value>("/chat/staff").await {
        Err(Error::Handler(e)) => assert_eq!((e.code(), e.message()), ("forbidden", "staff only: log in first")),
        other => panic!("{other:?}"),
    }
    assert!(matches!(client.subscribe::<Value>("/bad/{x").await, Err(Error::Config(_))));
    assert_eq!(hub.subscription_count(), 0);
    // Other rooms are open.
    client.subscribe::<Value>("/chat/garden").await.unwrap();
}

#[tokio::test]
async fn clients_publish_only_where_allowed() {
    let (server, _hub) = server().await;
    let publisher = server.client().await;
    let subscriber = server.json_client().await;
    let mut news = subscriber.subscribe::<Value>("/news/{*rest}").await.unwrap();
    let mut checked = subscriber.subscribe::<Value>("/checked/*").await.unwrap();

    publisher.publish("/news/rust/2026", &json!({"title": "webmesh 0.2"})).await.unwrap();
    let event = next(&mut news).await;
    assert_eq!((event.topic.as_str(), event.data), ("/news/rust/2026", json!({"title": "webmesh 0.2"})));

    match publisher.publish("/chat/lobby", "hi").await {
        Err(Error::Handler(e)) => {
            assert_eq!(e.code(), "forbidden");
            assert_eq!(e.message(), "clients may not publish to `/chat/lobby`");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(publisher.publish("/checked/3", &5).await, Err(Error::Handler(e)) if e.code() == "invalid"));
    assert!(matches!(publisher.publish("/checked/x", "s").await, Err(Error::BadPayload { .. })));
    assert!(matches!(publisher.publish("/news/*", "s").await, Err(Error::Handler(e)) if e.code() == "bad_request"));
    publisher.publish("/checked/3", "ok").await.unwrap();
    assert_eq!(next(&mut checked).await.data, json!("ok"));
}

#[tokio::test]
async fn unsubscribing_or_dropping_stops_delivery_and_the_server_learns_of_it() {
    let (server, hub) = server().await;
    let client = server.client().await;
    let mut kept = client.subscribe::<u32>("/n").await.unwrap();
    let dropped = client.subscribe::<u32>("/n").await.unwrap();
    let unsubscribed = client.subscribe::<u32>("/n/{x}").await.unwrap();
    assert_eq!(hub.subscription_count(), 3);
    drop(dropped);
    unsubscribed.unsubscribe().await;
    // A call after the unsubscriptions is answered after they were handled.
    client.call::<Value>("/say", "flush").await.ok();
    assert_eq!(hub.subscription_count(), 1);
    assert_eq!(hub.publish("/n/1", &1).unwrap(), 0);
    hub.publish("/n", &2).unwrap();
    assert_eq!(next(&mut kept).await.data, 2);
}

#[tokio::test]
async fn ten_thousand_subscriptions_come_and_go_and_leave_nothing() {
    let (server, hub) = server().await;
    let client = server.client().await;
    for n in 0..10_000u32 {
        let sub = client.subscribe::<Value>(&format!("/load/{}", n % 50)).await.unwrap();
        if n % 2 == 0 {
            sub.unsubscribe().await;
        } else {
            drop(sub);
        }
    }
    client.call::<Value>("/say", "flush").await.ok();
    assert_eq!(hub.subscription_count(), 0);
    // Disconnecting releases what a connection still holds.
    let other = server.client().await;
    let _subs = (other.subscribe::<Value>("/a").await.unwrap(), other.subscribe::<Value>("/b/*").await.unwrap());
    assert_eq!(hub.subscription_count(), 2);
    other.clone().close().await;
    let released = async {
        while hub.subscription_count() != 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    within(10, released).await;
}

/// A raw JSON client that subscribes and then does not read.
async fn stalled_subscriber(server: &TestServer, topic: &str, lag: &str) -> common::Raw {
    let (mut socket, _) = tokio_tungstenite::connect_async(server.url()).await.unwrap();
    let subscribe = json!([6, 1, topic, {"lag": lag}]).to_string();
    socket.send(Message::text(subscribe)).await.unwrap();
    assert_eq!(within(10, socket.next()).await.unwrap().unwrap(), Message::text("[3,1,null]"));
    socket
}

#[tokio::test]
async fn a_stalled_subscriber_loses_events_not_others_and_memory_stays_bounded() {
    let mut builder = Server::builder().registered_handlers(false).event_queue(256);
    let hub = builder.hub();
    let bound = builder.addr("127.0.0.1:0").bind().await.unwrap();
    let stats = bound.stats();
    let server = TestServer::serve(bound);
    let mut stalled = stalled_subscriber(&server, "/ticks", "drop_oldest").await;
    let client = server.client().await;
    let mut fast = client.subscribe::<(u32, String)>("/ticks").await.unwrap();

    // 10,000 events of 4 KiB: far more than socket buffers hold.
    let filler = "x".repeat(4096);
    let mut longest = 0;
    for n in 0..10_000u32 {
        hub.publish("/ticks", &(n, &filler)).unwrap();
        longest = longest.max(stats.memory_held());
        if n % 64 == 63 {
            // Pace the publisher to the fast subscriber, which must miss nothing.
            for expected in n - 63..=n {
                assert_eq!(next(&mut fast).await.data.0, expected);
            }
        }
    }
    for expected in 9_984..10_000 {
        assert_eq!(next(&mut fast).await.data.0, expected);
    }
    // 256 events of 4 KiB for the stalled subscriber, a few for the fast one:
    // not the 40 MB published, nor the 16 MiB a connection may hold.
    assert!(longest < 2 << 20, "the server came to hold {longest} bytes");

    // Now the stalled subscriber reads: every event is either delivered or
    // counted as missed, in order.
    let (mut seen, mut missed, mut last) = (0u64, 0u64, None::<u64>);
    while seen + missed < 10_000 {
        let Message::Text(text) = within(10, stalled.next()).await.unwrap().unwrap() else { panic!("text") };
        let message: Value = serde_json::from_str(&text).unwrap();
        match message[0].as_u64() {
            Some(9) => {
                let n = message[2][0].as_u64().unwrap();
                assert!(last.is_none_or(|l| n > l), "in order");
                last = Some(n);
                seen += 1;
            }
            Some(12) => {
                assert_eq!(message[1], 1, "the lag is reported for the subscription");
                missed += message[2].as_u64().unwrap();
            }
            other => panic!("unexpected {other:?}: {text}"),
        }
    }
    assert_eq!(seen + missed, 10_000);
    assert!(missed > 0, "the stalled subscriber lost events");
    assert_eq!(last, Some(9_999), "with drop_oldest the newest events survive");
}

#[tokio::test]
async fn the_disconnect_policy_closes_a_stalled_subscriber() {
    let (tx, mut reasons) = tokio::sync::mpsc::unbounded_channel();
    let mut builder = Server::builder()
        .registered_handlers(false)
        .event_queue(16)
        .on_disconnect(move |_, reason| tx.send(reason.clone()).unwrap());
    let hub = builder.hub();
    let server = TestServer::start(builder).await;
    let _stalled = stalled_subscriber(&server, "/ticks", "disconnect").await;
    let filler = "x".repeat(4096);
    let published = async {
        let mut n = 0u32;
        while hub.subscription_count() > 0 {
            hub.publish("/ticks", &(n, &filler)).unwrap();
            n += 1;
            if n % 16 == 0 {
                tokio::task::yield_now().await;
            }
        }
    };
    within(30, published).await;
    let reason = within(10, reasons.recv()).await.unwrap();
    assert!(matches!(reason, DisconnectReason::TooSlow(_)), "{reason:?}");
    // A client's own subscription can ask for the same.
    let client = server.client().await;
    let options = SubscribeOptions::default().lag(LagPolicy::Disconnect);
    client.subscribe_with::<Value>("/ticks", options).await.unwrap();
}

#[tokio::test]
async fn a_subscription_ends_when_the_connection_closes() {
    let (server, _hub) = server().await;
    let client = server.client().await;
    let mut sub = client.subscribe::<Value>("/x").await.unwrap();
    let closer = Client::clone(&client);
    closer.close().await;
    assert!(within(10, sub.recv()).await.is_none());
}

#[tokio::test]
async fn subscription_limits_refuse_with_limit_and_keep_the_connection() {
    let mut builder = Server::builder()
        .registered_handlers(false)
        .router(Router::new().on("/ping", || async { "pong" }))
        .max_subscriptions_per_connection(3)
        .max_subscriptions(5);
    let hub = builder.hub();
    let server = TestServer::start(builder).await;
    let first = server.client().await;
    let mut kept = Vec::new();
    for n in 0..3 {
        kept.push(first.subscribe::<Value>(&format!("/a/{n}")).await.unwrap());
    }
    match first.subscribe::<Value>("/a/3").await {
        Err(Error::Handler(e)) => {
            assert_eq!(e.code(), "limit");
            let message =
                "the limit of 3 subscriptions on one connection (max_subscriptions_per_connection) is reached";
            assert_eq!(e.message(), message);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(hub.subscription_count(), 3, "nothing half-registered");
    assert_eq!(first.call::<String>("/ping", &()).await.unwrap(), "pong", "the connection goes on");
    // A place freed is a place to take.
    kept.pop().unwrap().unsubscribe().await;
    kept.push(first.subscribe::<Value>("/a/3").await.unwrap());

    let second = server.client().await;
    kept.push(second.subscribe::<Value>("/b/0").await.unwrap());
    kept.push(second.subscribe::<Value>("/b/1").await.unwrap());
    match second.subscribe::<Value>("/b/2").await {
        Err(Error::Handler(e)) => {
            let message = "the limit of 5 subscriptions on the server (max_subscriptions) is reached";
            assert_eq!((e.code(), e.message()), ("limit", message));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(hub.subscription_count(), 5);
}

/// A limit of 0 refuses the first; the bytes a connection's subscriptions
/// hold count against its memory, whatever their number.
#[tokio::test]
async fn a_limit_of_zero_and_the_connection_memory_bound_subscriptions() {
    let builder = Server::builder().registered_handlers(false).max_subscriptions_per_connection(0);
    let server = TestServer::start(builder).await;
    let refused = server.client().await.subscribe::<Value>("/a").await;
    assert!(matches!(refused, Err(Error::Handler(e)) if e.code() == "limit"));

    let mut builder = Server::builder().registered_handlers(false).connection_memory(64 * 1024);
    let hub = builder.hub();
    let server = TestServer::start(builder).await;
    let client = server.client().await;
    let deep = "/s".repeat(30);
    let mut kept = Vec::new();
    let message = loop {
        match client.subscribe::<Value>(&format!("{deep}/{}/*", kept.len())).await {
            Ok(subscription) => kept.push(subscription),
            Err(Error::Handler(e)) if e.code() == "limit" => break e.message().to_owned(),
            Err(other) => panic!("{other:?}"),
        }
    };
    assert!(message.contains("(connection_memory)"), "{message}");
    // About 3.5 KiB each: far fewer than the 2048 the count allows.
    assert!((10..40).contains(&kept.len()), "{} subscriptions fit in 64 KiB", kept.len());
    assert_eq!(hub.subscription_count(), kept.len(), "nothing half-registered");
    // Room freed is room to take.
    kept.pop().unwrap().unsubscribe().await;
    kept.push(client.subscribe::<Value>(&format!("{deep}/again/*")).await.unwrap());
}

#[tokio::test]
async fn patterns_and_topics_over_the_length_and_segment_limits_get_limit() {
    let router = Router::new().on("/ping", || async { "pong" }).publish("/{*topic}", || async {});
    let mut builder =
        Server::builder().registered_handlers(false).router(router).max_topic_length(64).max_topic_segments(4);
    let hub = builder.hub();
    let server = TestServer::start(builder).await;
    let client = server.client().await;
    let refusal = |result: Result<(), Error>| match result {
        Err(Error::Handler(e)) => (e.code().to_owned(), e.message().to_owned()),
        other => panic!("{other:?}"),
    };
    let long = format!("/{}", "x".repeat(64));
    let deep = "/a/b/c/d/e";
    for (topic, limit) in [(long.as_str(), "max_topic_length"), (deep, "max_topic_segments")] {
        let (code, message) = refusal(client.subscribe::<Value>(topic).await.map(drop));
        assert_eq!(code, "limit", "{message}");
        assert!(message.contains(limit), "{message}");
        let (code, message) = refusal(client.publish(topic, &1).await);
        assert_eq!(code, "limit", "{message}");
        assert!(message.contains(limit), "{message}");
        assert!(matches!(hub.publish(topic, &1), Err(Error::Config(m)) if m.contains(limit)));
    }
    // Within the limits all is as usual.
    let mut sub = client.subscribe::<u32>("/a/b/c/{d}").await.unwrap();
    client.publish(&format!("/a/b/c/{}", "y".repeat(56)), &7).await.unwrap();
    assert_eq!(next(&mut sub).await.data, 7);
    assert_eq!(hub.subscription_count(), 1, "nothing half-registered");
    assert_eq!(client.call::<String>("/ping", &()).await.unwrap(), "pong", "the connection goes on");
}
