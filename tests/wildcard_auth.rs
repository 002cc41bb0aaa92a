//! Wildcard subscriptions receive only the topics their connection's
//! subscribe authorisation allows, topic by topic.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{start_example, within, TestServer};
use futures_util::FutureExt;
use serde_json::{json, Value};
use webmesh::extract::{CallPath, Path};
use webmesh::{CallError, Client, Connection, Error, Router, Server};

async fn next(sub: &mut webmesh::Subscription<Value>) -> webmesh::Event<Value> {
    within(10, sub.recv()).await.expect("an event").expect("not an error")
}

async fn say(client: &Client, room: &str, text: &str) -> Result<usize, Error> {
    client.call(&format!("/rooms/{room}/say"), &json!({"from": "x", "text": text})).await
}

/// The chat example: `/rooms/vip` needs a login, to read or to write.
#[tokio::test]
async fn no_wildcard_reaches_the_vip_room_without_a_login() {
    let (_chat, port) = start_example("chat");
    let url = format!("ws://127.0.0.1:{port}");
    let ada = Client::connect(&url).await.unwrap();
    ada.call::<()>("/login", "ada").await.unwrap();
    let mut anonymous = Vec::new();
    for pattern in ["/rooms/*", "/rooms/{*rest}", "/*/vip", "/{*all}"] {
        let client = Client::connect(&url).await.unwrap();
        let sub = client.subscribe::<Value>(pattern).await.unwrap();
        anonymous.push((pattern, client, sub));
    }
    let logged_in = Client::connect(&url).await.unwrap();
    logged_in.call::<()>("/login", "bob").await.unwrap();
    let mut bob = logged_in.subscribe::<Value>("/rooms/*").await.unwrap();

    // Published in this order: secret, then hello, then bye.
    say(&ada, "vip", "secret").await.unwrap();
    say(&ada, "lobby", "hello").await.unwrap();
    say(&ada, "lobby", "bye").await.unwrap();
    for (pattern, _client, sub) in &mut anonymous {
        if *pattern == "/*/vip" {
            continue;
        }
        // The first event after the secret is the hello: the secret never came.
        let first = next(sub).await;
        assert_eq!((first.topic.as_str(), &first.data["text"]), ("/rooms/lobby", &json!("hello")), "{pattern}");
        assert_eq!(next(sub).await.data["text"], "bye", "{pattern}");
    }
    let (_, _, vip_only) = anonymous.iter_mut().find(|(p, _, _)| *p == "/*/vip").unwrap();
    assert!(vip_only.recv().now_or_never().is_none(), "/*/vip received something");

    // A logged-in wildcard subscriber hears every room.
    let heard: Vec<(String, Value)> = vec![next(&mut bob).await, next(&mut bob).await, next(&mut bob).await]
        .into_iter()
        .map(|e| (e.topic, e.data["text"].clone()))
        .collect();
    assert_eq!(
        heard,
        [
            ("/rooms/vip".to_owned(), json!("secret")),
            ("/rooms/lobby".to_owned(), json!("hello")),
            ("/rooms/lobby".to_owned(), json!("bye"))
        ]
    );
}

#[tokio::test]
async fn a_login_opens_the_rooms_a_wildcard_may_receive() {
    let (_chat, port) = start_example("chat");
    let url = format!("ws://127.0.0.1:{port}");
    let ada = Client::connect(&url).await.unwrap();
    ada.call::<()>("/login", "ada").await.unwrap();
    let carol = Client::connect(&url).await.unwrap();
    let mut rooms = carol.subscribe::<Value>("/rooms/*").await.unwrap();
    say(&ada, "vip", "before").await.unwrap();
    say(&ada, "lobby", "mark").await.unwrap();
    assert_eq!(next(&mut rooms).await.data["text"], "mark", "not logged in: no vip");
    carol.call::<()>("/login", "carol").await.unwrap();
    say(&ada, "vip", "after").await.unwrap();
    let event = next(&mut rooms).await;
    assert_eq!((event.topic.as_str(), &event.data["text"]), ("/rooms/vip", &json!("after")));
}

#[tokio::test]
async fn the_chat_example_guards_writing_and_names() {
    let (_chat, port) = start_example("chat");
    let url = format!("ws://127.0.0.1:{port}");
    let anonymous = Client::connect(&url).await.unwrap();
    match say(&anonymous, "vip", "let me in").await {
        Err(Error::Handler(e)) => assert_eq!(e.code(), "forbidden"),
        other => panic!("an anonymous write into vip: {other:?}"),
    }
    let listener = Client::connect(&url).await.unwrap();
    let mut lobby = listener.subscribe::<Value>("/rooms/lobby").await.unwrap();
    say(&anonymous, "lobby", "hi").await.unwrap();
    assert_eq!(next(&mut lobby).await.data, json!({"from": "anonymous", "text": "hi"}), "no name but its own");

    let ada = Client::connect(&url).await.unwrap();
    ada.call::<()>("/login", "ada").await.unwrap();
    let impostor = Client::connect(&url).await.unwrap();
    match impostor.call::<()>("/login", "ada").await {
        Err(Error::Handler(e)) => assert_eq!(e.code(), "name_taken"),
        other => panic!("a second login as ada: {other:?}"),
    }
    // The name is free again once its connection is gone.
    ada.close().await;
    within(10, async {
        while impostor.call::<()>("/login", "ada").await.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// A handler that waits (a database lookup): the events of its topic wait
/// for the decision, in order, and a refused topic's never come.
#[tokio::test]
async fn events_wait_in_order_for_a_handler_that_takes_time() {
    let asked = Arc::new(AtomicUsize::new(0));
    let counter = asked.clone();
    let router = Router::new().subscribe("/feeds/{feed}", move |Path(feed): Path<String>| {
        let asked = counter.clone();
        async move {
            asked.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
            if feed.starts_with("secret") {
                Err(CallError::new("forbidden", "not yours"))
            } else {
                Ok(())
            }
        }
    });
    let mut builder = Server::builder().registered_handlers(false).router(router);
    let hub = builder.hub();
    let server = TestServer::start(builder).await;
    let client = server.client().await;
    let mut feeds = client.subscribe::<Value>("/feeds/*").await.unwrap();
    hub.publish("/feeds/secret1", &0).unwrap();
    for n in 1..=5 {
        hub.publish("/feeds/a", &n).unwrap();
    }
    hub.publish("/feeds/secret2", &0).unwrap();
    hub.publish("/feeds/b", &6).unwrap();
    let mut seen = Vec::new();
    for _ in 0..6 {
        let event = next(&mut feeds).await;
        seen.push((event.topic, event.data));
    }
    let a: Vec<Value> = seen.iter().filter(|(t, _)| t == "/feeds/a").map(|(_, d)| d.clone()).collect();
    assert_eq!(a, [json!(1), json!(2), json!(3), json!(4), json!(5)], "in order, none lost");
    assert!(seen.iter().any(|(t, d)| t == "/feeds/b" && *d == json!(6)));
    // Decided now, and cached: delivered at once, and nothing was asked again.
    hub.publish("/feeds/a", &7).unwrap();
    assert_eq!(next(&mut feeds).await.data, json!(7), "no secret came before it");
    assert_eq!(asked.load(Ordering::SeqCst), 4, "one question per topic");
}

/// A topic pattern as the test's oracle reads it (the table of PROTOCOL.md
/// section 10); routes use it too, with `{*rest}` matching one or more
/// segments, as matchit does.
fn matches(pattern: &str, topic: &str) -> bool {
    let p: Vec<&str> = pattern.split('/').skip(1).collect();
    let t: Vec<&str> = topic.split('/').skip(1).collect();
    for (i, segment) in p.iter().enumerate() {
        if segment.starts_with("{*") {
            return t.len() > i;
        }
        match t.get(i) {
            None => return false,
            Some(part) if *segment == "*" || segment.starts_with('{') || segment == part => {}
            Some(_) => return false,
        }
    }
    p.len() == t.len()
}

struct Rng(u64);

impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }

    fn path(&mut self, wild: &[&str], last: &[&str]) -> String {
        let depth = 1 + self.next(3);
        let mut path = String::new();
        for i in 0..depth {
            let choices: Vec<&str> =
                ["a", "b", "c"].iter().chain(wild).chain(if i + 1 == depth { last } else { &[] }).copied().collect();
            path = format!("{path}/{}", choices[self.next(choices.len() as u64) as usize]);
        }
        path
    }
}

/// The topics a subscriber of `pattern` must receive, by brute force: those
/// it matches that no route guards, or whose guard allows them.
fn oracle(routes: &[String], pattern: &str, topics: &[String], allowed: impl Fn(&str) -> bool) -> BTreeSet<String> {
    let guarded = |topic: &str| routes.iter().any(|r| matches(r, topic));
    let exact = !pattern.contains(['*', '{']);
    if exact && guarded(pattern) && !allowed(pattern) {
        return BTreeSet::new(); // refused when subscribing
    }
    topics.iter().filter(|t| matches(pattern, t) && (!guarded(t) || allowed(t))).cloned().collect()
}

/// Random guarded routes, patterns and topics against the oracle.
#[tokio::test]
async fn wildcard_deliveries_match_a_brute_force_oracle() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let allowed = |topic: &str| !topic.ends_with("/c");
    let mut cases = 0;
    while cases < 25 {
        let routes: Vec<String> = (0..1 + rng.next(3)).map(|_| rng.path(&["{p}"], &["{*rest}"])).collect();
        let mut router = Router::new();
        for route in &routes {
            router = router.subscribe(route.as_str(), move |CallPath(topic): CallPath| async move {
                if allowed(&topic) {
                    Ok(())
                } else {
                    Err(CallError::new("forbidden", "no /c"))
                }
            });
        }
        let mut builder = Server::builder().registered_handlers(false).router(router);
        let hub = builder.hub();
        // Routes that conflict (two routes on one path) are not a case.
        let Ok(server) = builder.addr("127.0.0.1:0").bind().await else { continue };
        cases += 1;
        let server = TestServer::serve(server);
        let topics: BTreeSet<String> = (0..30).map(|_| rng.path(&[], &[])).collect();
        let topics: Vec<String> = topics.into_iter().collect();
        let client = server.client().await;
        let mut subscriptions = Vec::new();
        for _ in 0..6 {
            let pattern = rng.path(&["*", "{x}"], &["{*all}"]);
            let sub = client.subscribe::<Value>(&pattern).await;
            subscriptions.push((pattern, sub));
        }
        let mut end = client.subscribe::<Value>("/zz/end").await.unwrap();
        for topic in &topics {
            hub.publish(topic, &topic).unwrap();
        }
        hub.publish("/zz/end", &()).unwrap();
        // Events reach a connection in order: once the end is in, all are.
        next(&mut end).await;
        for (pattern, sub) in &mut subscriptions {
            let expected = oracle(&routes, pattern, &topics, allowed);
            let mut received = BTreeSet::new();
            if let Ok(sub) = sub {
                while let Some(Some(event)) = sub.recv().now_or_never() {
                    let event = event.unwrap();
                    if event.topic != "/zz/end" {
                        assert!(received.insert(event.topic), "a duplicate on {pattern}");
                    }
                }
            } else {
                assert!(expected.is_empty(), "{pattern} refused, yet should receive {expected:?}");
            }
            assert_eq!(received, expected, "routes {routes:?}, pattern {pattern}");
        }
    }
}

#[tokio::test]
async fn a_pattern_that_overlaps_no_guarded_route_is_not_checked() {
    let asked = Arc::new(AtomicUsize::new(0));
    let counter = asked.clone();
    let router = Router::new().subscribe("/private/{x}", move |_: Connection| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { Err::<(), _>(CallError::new("forbidden", "no")) }
    });
    let mut builder = Server::builder().registered_handlers(false).router(router);
    let hub = builder.hub();
    let server = TestServer::start(builder).await;
    let client = server.client().await;
    let mut public = client.subscribe::<Value>("/public/*").await.unwrap();
    for n in 0..10 {
        hub.publish(&format!("/public/{n}"), &n).unwrap();
    }
    for n in 0..10 {
        assert_eq!(next(&mut public).await.data, json!(n));
    }
    assert_eq!(asked.load(Ordering::SeqCst), 0);
}
