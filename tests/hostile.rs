//! Found by attacking the server's bounds (issue 14): clients that read
//! normally are never closed as slow, decisions follow logins and logouts,
//! and what a connection or the server holds stays within its bounds.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{raw, within, zlib, TestServer};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use webmesh::{DisconnectReason, Router, Server};

#[derive(Clone)]
struct User;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// Writes take a batch at a time: a reader that takes them is making
/// progress, however long the batches go on.
async fn a_reader_taking_a_busy_topic_is_not_closed_by_the_write_timeout() {
    let (gone_tx, mut gone) = tokio::sync::mpsc::unbounded_channel();
    let mut builder = Server::builder()
        .registered_handlers(false)
        .write_timeout(Duration::from_secs(2))
        .on_disconnect(move |_, reason| gone_tx.send(reason.clone()).unwrap());
    let hub = builder.hub();
    let server = TestServer::start(builder).await;
    let mut ws = raw(server.addr.port()).await;
    ws.send(Message::text(r#"[6,1,"/feed",null]"#)).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap().to_text().unwrap(), "[3,1,null]");
    let received = Arc::new(AtomicUsize::new(0));
    let counter = received.clone();
    let reader = tokio::spawn(async move {
        let r = async {
            while let Some(Ok(msg)) = ws.next().await {
                if let Message::Close(c) = msg {
                    return format!("closed {c:?}");
                }
                counter.fetch_add(1, Ordering::Relaxed);
            }
            "ended".to_owned()
        };
        r.await
    });
    let event = "e".repeat(16 << 10);
    let started = Instant::now();
    let mut published = 0usize;
    let reason = loop {
        let per_ms = 16;
        for _ in 0..per_ms {
            hub.publish("/feed", &event).unwrap();
            published += 1;
        }
        if let Ok(reason) = gone.try_recv() {
            break Some(reason);
        }
        if started.elapsed() > Duration::from_secs(6) {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let got = received.load(Ordering::Relaxed);
    println!(
        "after {:.1} s: published {published}, the reader got {got} ({:.0}%), reason {reason:?}",
        started.elapsed().as_secs_f64(),
        100.0 * got as f64 / published as f64
    );
    reader.abort();
    assert!(reason.is_none(), "a reader taking everything was closed: {reason:?}");
}

/// Reads a raw JSON connection until it ends: (frames, the reply to call 1, close).
async fn read_all<S>(mut ws: S) -> (usize, Option<String>, Option<String>)
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let mut n = 0;
    while let Some(Ok(msg)) = ws.next().await {
        match msg {
            Message::Close(c) => return (n, None, c.map(|c| format!("{} {}", u16::from(c.code), c.reason))),
            Message::Text(t) if t.starts_with("[3,1,") || t.starts_with("[4,1,") => {
                return (n, Some(t.to_string()), None);
            }
            _ => {
                n += 1;
                // The subscriber does some work per event (e.g. renders it).
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    (n, None, None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// Events past the bound are dropped by the lag policy: they never make a
/// reply close the connection as a slow consumer.
async fn a_call_during_a_burst_of_events_is_answered() {
    let (gone_tx, mut gone) = tokio::sync::mpsc::unbounded_channel();
    let mut builder = Server::builder()
        .registered_handlers(false)
        .router(Router::new().on("/ping", || async { "pong" }).on("/report", || async { "r".repeat(512 << 10) }))
        .on_disconnect(move |_, reason| gone_tx.send(reason.clone()).unwrap());
    let hub = builder.hub();
    let server = TestServer::start(builder).await;
    let mut ws = raw(server.addr.port()).await;
    ws.send(Message::text(r#"[6,7,"/feed",null]"#)).await.unwrap();
    ws.next().await.unwrap().unwrap();
    let (mut tx, rx) = ws.split();
    // The client reads everything, at once.
    let reader = tokio::spawn(read_all(rx));
    // A burst: 20 JSON events whose frames are 1 MiB each (DropOldest keeps the newest 16).
    let size: usize = 1 << 20;
    let event = "e".repeat(size - r#"[9,"/feed",""]"#.len());
    // Pre-serialized, so that the burst is as fast as in a release build.
    let event = serde_json::value::RawValue::from_string(format!("\"{event}\"")).unwrap();
    for _ in 0..60 {
        hub.publish("/feed", &event).unwrap();
    }
    let call = "/ping";
    tx.send(Message::text(format!(r#"[1,1,"{call}",null]"#))).await.unwrap();
    let (events, reply, close) = within(20, reader).await.unwrap();
    println!("events read {events}, reply {reply:?}, close {close:?}, reason {:?}", gone.try_recv());
    assert_eq!(reply.as_deref(), Some(r#"[3,1,"pong"]"#), "closed: {close:?}");
}
// B2. The same with a slow subscribe handler: the events waiting for a
//     wildcard's decision count as waiting to be written, and the client's
//     next reply closes it, though it reads everything.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// Events waiting for their topic's decision are events too.
async fn events_waiting_for_a_slow_subscribe_handler_close_nobody() {
    let (gone_tx, mut gone) = tokio::sync::mpsc::unbounded_channel();
    let router = Router::new()
        .on("/ping", || async { "pong" })
        // A database lookup of 300 ms.
        .subscribe("/rooms/{room}", || async { tokio::time::sleep(Duration::from_millis(300)).await });
    let mut builder = Server::builder()
        .registered_handlers(false)
        .router(router)
        .on_disconnect(move |_, reason| gone_tx.send(reason.clone()).unwrap());
    let hub = builder.hub();
    let server = TestServer::start(builder).await;
    let mut ws = raw(server.addr.port()).await;
    ws.send(Message::text(r#"[6,7,"/rooms/*",null]"#)).await.unwrap();
    ws.next().await.unwrap().unwrap();
    let (mut tx, rx) = ws.split();
    let reader = tokio::spawn(read_all(rx));
    // 16 JSON events of exactly 1 MiB on a room nobody asked about yet.
    let event = "e".repeat((1 << 20) - r#"[9,"/rooms/lobby",""]"#.len());
    let event = serde_json::value::RawValue::from_string(format!("\"{event}\"")).unwrap();
    for _ in 0..16 {
        hub.publish("/rooms/lobby", &event).unwrap();
    }
    tx.send(Message::text(r#"[1,1,"/ping",null]"#)).await.unwrap();
    let (events, reply, close) = within(20, reader).await.unwrap();
    println!("events read {events}, reply {reply:?}, close {close:?}, reason {:?}", gone.try_recv());
    assert_eq!(reply.as_deref(), Some(r#"[3,1,"pong"]"#), "closed: {close:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// A decision asked for while logged in never delivers what was published
/// after the logout.
async fn an_event_published_after_logout_waits_for_a_decision_of_its_own() {
    use webmesh::{CallError, Connection};
    let router = Router::new()
        .on("/login", |conn: Connection| async move {
            conn.insert_extension(User);
        })
        .on("/logout", |conn: Connection| async move {
            conn.remove_extension::<User>();
        })
        .subscribe("/rooms/{room}", |conn: Connection| async move {
            let user = conn.extension::<User>();
            // A database lookup of the user's rights.
            tokio::time::sleep(Duration::from_millis(300)).await;
            user.map(|_| ()).ok_or_else(|| CallError::new("forbidden", "log in"))
        });
    let mut builder = Server::builder().registered_handlers(false).router(router);
    let hub = builder.hub();
    let server = TestServer::start(builder).await;
    let mut ws = raw(server.addr.port()).await;
    for msg in [r#"[1,1,"/login",null]"#, r#"[6,2,"/rooms/*",null]"#] {
        ws.send(Message::text(msg)).await.unwrap();
        println!("{msg} -> {}", ws.next().await.unwrap().unwrap());
    }
    hub.publish("/rooms/vip", "before logout").unwrap();
    ws.send(Message::text(r#"[1,3,"/logout",null]"#)).await.unwrap();
    println!("logout -> {}", ws.next().await.unwrap().unwrap());
    hub.publish("/rooms/vip", "AFTER logout").unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    hub.publish("/rooms/vip", "after logout, decided again").unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut got = Vec::new();
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_millis(200), ws.next()).await {
        got.push(msg.to_string());
    }
    println!("received: {got:?}");
    assert!(got.iter().any(|m| m.contains("before logout")), "allowed when published and decided: {got:?}");
    assert!(!got.iter().any(|m| m.contains("AFTER logout")), "an event published after the logout was delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// Slow handlers do not keep a shed connection's bytes, and readers wait
/// for room rather than the server growing.
async fn slow_handlers_do_not_carry_the_server_past_its_budget() {
    let router = Router::new().on("/slow", |s: String| async move {
        // A slow downstream call, keeping its argument.
        tokio::time::sleep(Duration::from_secs(30)).await;
        s.len()
    });
    let (gone_tx, mut gone) = tokio::sync::mpsc::unbounded_channel();
    let mut builder =
        Server::builder().registered_handlers(false).router(router).memory_budget(64 << 20).on_disconnect(
            move |_, reason| {
                let _ = gone_tx.send(reason.clone());
            },
        );
    let _hub = builder.hub();
    let server = builder.addr("127.0.0.1:0").bind().await.unwrap();
    let stats = server.stats();
    let server = TestServer::serve(server);
    let port = server.addr.port();
    // 8 MiB of one letter: ~8 KB compressed.
    let message = zlib(&rmp_serde::to_vec(&(1, 1, "/slow", "x".repeat((8 << 20) - 100))).unwrap());
    let mut wire = 0;
    let mut conns = Vec::new();
    for _ in 0..30 {
        let mut ws = raw(port).await;
        ws.send(Message::binary(message.clone())).await.unwrap();
        wire += message.len();
        conns.push(ws);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut shed = 0;
    while let Ok(reason) = gone.try_recv() {
        if matches!(reason, DisconnectReason::OverBudget(_)) {
            shed += 1;
        }
    }
    println!(
        "{wire} bytes sent on 30 connections: {shed} shed, memory_held {} MiB (budget 64)",
        stats.memory_held() >> 20
    );
    assert!(shed > 0);
    assert!(stats.memory_held() <= 64 << 20, "{} bytes held", stats.memory_held());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// Events of topics being decided count against the connection's bound.
async fn events_of_undecided_topics_stay_within_the_connection_bound() {
    let router = Router::new().subscribe("/t/{x}", || async { tokio::time::sleep(Duration::from_secs(10)).await });
    let mut builder = Server::builder().registered_handlers(false).router(router);
    let hub = builder.hub();
    let server = builder.addr("127.0.0.1:0").bind().await.unwrap();
    let stats = server.stats();
    let server = TestServer::serve(server);
    let mut ws = raw(server.addr.port()).await;
    ws.send(Message::text(r#"[6,1,"/t/*",null]"#)).await.unwrap();
    ws.next().await.unwrap().unwrap();
    let event = "e".repeat(1 << 20);
    let event = serde_json::value::RawValue::from_string(format!("\"{event}\"")).unwrap();
    for i in 0..100 {
        hub.publish(&format!("/t/{i}"), &event).unwrap();
    }
    let held = stats.memory_held();
    assert!(held <= 16 << 20, "100 topics x 1 MiB: the subscriber's connection holds {} MiB (limit 16)", held >> 20);
}

// E2. A subscribe handler that caches the user's rights in an extension
//     (insert_extension) invalidates its own decision: every delivery asks again.

/// Subscribes with 1 KiB wildcard patterns until the server ends the
/// connection; returns how many were made.
async fn subscribe_until_closed(port: u16) -> usize {
    let (mut sink, mut stream) = raw(port).await.split();
    let padding = "p".repeat(1000);
    let reader = tokio::spawn(async move {
        let mut made = 0;
        while let Some(Ok(message)) = stream.next().await {
            if let Message::Text(text) = message {
                made += usize::from(text.starts_with("[3,"));
            }
        }
        made
    });
    for n in 0..5000 {
        let subscribe = format!(r#"[6,{n},"/{padding}/{n}/*",null]"#);
        if within(10, sink.send(Message::text(subscribe))).await.is_err() {
            break;
        }
    }
    within(10, reader).await.unwrap()
}

/// A server with a 4 MiB budget whose connect hook keeps every `Connection`.
fn keeping_every_connection(kept: &Arc<std::sync::Mutex<Vec<webmesh::Connection>>>) -> webmesh::ServerBuilder {
    let keep = kept.clone();
    Server::builder()
        .registered_handlers(false)
        .router(Router::new().on("/ping", || async { "pong" }))
        .memory_budget(4 << 20)
        .on_connect(move |conn| keep.lock().unwrap().push(conn.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// The docs suggest keeping `Connection`s (a map of online users): one kept
/// after its session ended must not blind the budget, which would then shed
/// nobody while every reader waits for room.
async fn connections_kept_by_user_code_do_not_stall_shedding() {
    let kept = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (gone_tx, mut gone) = tokio::sync::mpsc::unbounded_channel();
    let builder = keeping_every_connection(&kept).on_disconnect(move |_, reason| {
        let _ = gone_tx.send(reason.clone());
    });
    let server = TestServer::start(builder).await;
    let port = server.addr.port();
    // Each greedy client holds about 6 KB per subscription: 4 MiB takes
    // about 700. Three in turn must each be shed.
    for round in 0..3 {
        let made = subscribe_until_closed(port).await;
        let reason = within(10, gone.recv()).await.unwrap();
        assert!(matches!(reason, DisconnectReason::OverBudget(_)), "round {round}: {reason:?} after {made}");
    }
    let client = webmesh::Client::connect(&server.url()).await.unwrap();
    assert_eq!(within(10, client.call::<String>("/ping", &())).await.unwrap(), "pong");
    assert!(kept.lock().unwrap().len() >= 4, "the hook kept every connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// A disconnect hook that panics (user code) still lets go of what the
/// connection held: shedding goes on, others are served.
async fn a_panicking_disconnect_hook_does_not_stall_shedding() {
    let kept = Arc::new(std::sync::Mutex::new(Vec::new()));
    let shed = Arc::new(AtomicUsize::new(0));
    let count = shed.clone();
    let builder = keeping_every_connection(&kept).on_disconnect(move |_, reason| {
        if matches!(reason, DisconnectReason::OverBudget(_)) {
            count.fetch_add(1, Ordering::SeqCst);
        }
        panic!("a bug in the hook");
    });
    let server = TestServer::start(builder).await;
    let port = server.addr.port();
    for round in 1..=3 {
        subscribe_until_closed(port).await;
        let shed_so_far = || shed.load(Ordering::SeqCst);
        within(10, async {
            while shed_so_far() < round {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
    }
    let client = webmesh::Client::connect(&server.url()).await.unwrap();
    assert_eq!(within(10, client.call::<String>("/ping", &())).await.unwrap(), "pong");
}
