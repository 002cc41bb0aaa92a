//! Who may connect, and how much they may ask: authentication, origins,
//! connection and in-flight limits, floods and abrupt disconnects.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::{raw, within, zlib, TestServer};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use webmesh::extract::Authenticated;
use webmesh::{AuthError, Client, DisconnectReason, Error, Handshake, Router, Server};

/// Everything webmesh logs in this test binary, at every level.
fn logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let writer = logs.clone();
        let make_writer = move || Capture(writer.clone());
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(make_writer)
            .init();
        logs
    })
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq)]
struct Service(String);

const TOKEN: &str = "tok-3f9a-very-secret";

async fn authenticated_server() -> TestServer {
    let router = Router::new().on("/whoami", |Authenticated(service): Authenticated<Service>| async move { service.0 });
    let builder =
        Server::builder().registered_handlers(false).router(router).authenticate(|handshake: Handshake| async move {
            match (handshake.bearer_token(), handshake.query("service")) {
                (Some(TOKEN), Some(name)) => Ok(Service(name)),
                (Some(TOKEN), None) => Err(AuthError::forbidden("say which service you are: ?service=")),
                (Some(_), _) => Err(AuthError::forbidden("unknown token")),
                (None, _) => Err(AuthError::unauthorized("send Authorization: Bearer <token>")),
            }
        });
    TestServer::start(builder).await
}

#[tokio::test]
async fn authentication_refuses_before_the_upgrade_and_gives_handlers_the_identity() {
    logs();
    let server = authenticated_server().await;
    let url = format!("{}/?service=billing", server.url());
    match Client::connect(&url).await {
        Err(Error::Refused { status: 401, message }) => assert_eq!(message, "send Authorization: Bearer <token>"),
        other => panic!("{other:?}"),
    }
    match Client::builder(&url).bearer_token("wrong").connect().await {
        Err(Error::Refused { status: 403, message }) => assert_eq!(message, "unknown token"),
        other => panic!("{other:?}"),
    }
    let client = Client::builder(&url).bearer_token(TOKEN).connect().await.unwrap();
    assert_eq!(client.call::<String>("/whoami", &()).await.unwrap(), "billing");
    // Without an authentication hook, the extractor refuses the call.
    let open = TestServer::with_router(
        Router::new().on("/whoami", |Authenticated(service): Authenticated<Service>| async move { service.0 }),
    )
    .await;
    match open.client().await.call::<String>("/whoami", &()).await {
        Err(Error::Handler(e)) => assert_eq!(e.code(), "unauthenticated"),
        other => panic!("{other:?}"),
    }
    let logged = String::from_utf8_lossy(&logs().lock().unwrap()).into_owned();
    assert!(logged.contains("refused a connection"), "the refusals are logged");
    // tungstenite's client logs its whole handshake request at TRACE: a
    // dependency's choice, documented on `ClientBuilder::bearer_token`.
    let leaks: Vec<&str> = logged
        .lines()
        .filter(|l| !l.contains("tungstenite::handshake::client"))
        .filter(|l| l.contains(TOKEN) || l.contains("Bearer wrong"))
        .collect();
    assert!(leaks.is_empty(), "a token was logged: {leaks:#?}");
}

async fn connect_with_origin(server: &TestServer, origin: Option<&str>) -> Result<(), u16> {
    let mut request = server.url().into_client_request().unwrap();
    if let Some(origin) = origin {
        request.headers_mut().insert("origin", origin.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => Ok(()),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn browsers_are_refused_unless_their_origin_is_allowed() {
    let default = TestServer::with_router(Router::new()).await;
    assert_eq!(connect_with_origin(&default, None).await, Ok(()), "services send no Origin");
    assert_eq!(connect_with_origin(&default, Some("https://evil.example")).await, Err(403));

    let listed =
        TestServer::start(Server::builder().registered_handlers(false).allowed_origins(["https://app.example"])).await;
    assert_eq!(connect_with_origin(&listed, Some("https://app.example")).await, Ok(()));
    assert_eq!(connect_with_origin(&listed, Some("https://evil.example")).await, Err(403));
    assert_eq!(connect_with_origin(&listed, None).await, Ok(()));

    let any = TestServer::start(Server::builder().registered_handlers(false).allow_any_origin()).await;
    assert_eq!(connect_with_origin(&any, Some("https://evil.example")).await, Ok(()));
}

#[tokio::test]
async fn the_connection_limit_refuses_with_503_and_recovers() {
    let router = Router::new().on("/ping", || async { "pong" });
    let server =
        TestServer::start(Server::builder().registered_handlers(false).router(router).max_connections(2)).await;
    let first = server.client().await;
    let second = server.client().await;
    match Client::connect(&server.url()).await {
        Err(Error::Refused { status: 503, .. }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(second.call::<String>("/ping", &()).await.unwrap(), "pong");
    first.close().await;
    // The slot frees once the server has seen the close.
    let reconnected = async {
        loop {
            match Client::connect(&server.url()).await {
                Ok(client) => return client,
                Err(Error::Refused { status: 503, .. }) => tokio::time::sleep(Duration::from_millis(10)).await,
                Err(e) => panic!("{e}"),
            }
        }
    };
    let third = within(10, reconnected).await;
    assert_eq!(third.call::<String>("/ping", &()).await.unwrap(), "pong");
}

#[tokio::test]
async fn calls_beyond_the_in_flight_limit_wait_unread() {
    let started = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let router = Router::new().on("/hold", {
        let (started, release) = (started.clone(), release.clone());
        move |n: u32| {
            let (started, release) = (started.clone(), release.clone());
            async move {
                started.fetch_add(1, Ordering::SeqCst);
                release.acquire().await.unwrap().forget();
                n
            }
        }
    });
    let builder = Server::builder().registered_handlers(false).router(router).max_calls_in_flight(4);
    let server = TestServer::start(builder).await;
    let client = server.client().await;
    let calls: Vec<_> = (0..10u32)
        .map(|n| {
            let client = client.clone();
            tokio::spawn(async move { client.call::<u32>("/hold", &n).await.unwrap() })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(started.load(Ordering::SeqCst), 4, "only four handlers run at once");
    release.add_permits(10);
    for (n, call) in calls.into_iter().enumerate() {
        assert_eq!(within(10, call).await.unwrap(), n as u32);
    }
    assert_eq!(started.load(Ordering::SeqCst), 10);
}

#[tokio::test]
async fn twenty_thousand_calls_then_an_abrupt_disconnect_leave_the_server_serving() {
    let (gone_tx, mut gone) = tokio::sync::mpsc::unbounded_channel();
    let router = Router::new()
        .on("/slow", || async { tokio::time::sleep(Duration::from_millis(50)).await })
        .on("/ping", || async { "pong" });
    let builder = Server::builder()
        .registered_handlers(false)
        .router(router)
        .on_disconnect(move |_, reason| gone_tx.send(reason.clone()).unwrap());
    let server = TestServer::start(builder).await;
    let (mut socket, _) = tokio_tungstenite::connect_async(server.url()).await.unwrap();
    for id in 1..=20_000u64 {
        let call = rmp_serde::to_vec(&json!([1, id, "/slow", null])).unwrap();
        if socket.feed(Message::binary(call)).await.is_err() {
            break;
        }
    }
    let _ = socket.flush().await;
    // No close frame: the TCP connection just goes away.
    drop(socket);
    within(30, gone.recv()).await.unwrap();
    assert_eq!(server.client().await.call::<String>("/ping", &()).await.unwrap(), "pong");
}

#[tokio::test]
async fn connection_churn_and_half_handshakes_leave_the_server_serving() {
    use tokio::io::AsyncWriteExt;
    let server = TestServer::with_router(Router::new().on("/ping", || async { "pong" })).await;
    for i in 0..200 {
        let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        match i % 4 {
            0 => {}
            1 => tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap(),
            2 => tcp.write_all(b"\x16\x03\x01garbage that is not http\r\n\r\n").await.unwrap(),
            _ => {
                // Reset instead of a clean close: SO_LINGER 0. (Deprecated
                // because a non-zero linger blocks on drop; zero does not.)
                #[allow(deprecated)]
                tcp.set_linger(Some(Duration::ZERO)).unwrap();
            }
        }
        drop(tcp);
    }
    assert_eq!(server.client().await.call::<String>("/ping", &()).await.unwrap(), "pong");
}

#[tokio::test]
async fn calls_are_traced_with_path_connection_outcome_and_duration() {
    logs();
    let router = Router::new()
        .on("/traced/ok", || async { 1 })
        .on("/traced/fails", || async { Err::<(), _>(webmesh::CallError::new("nope", "no")) });
    let server = TestServer::with_router(router).await;
    let client = server.client().await;
    client.call::<u8>("/traced/ok", &()).await.unwrap();
    client.call::<()>("/traced/fails", &()).await.unwrap_err();
    let logged = String::from_utf8_lossy(&logs().lock().unwrap()).into_owned();
    let line = |needle: &str| logged.lines().find(|l| l.contains(needle)).map(str::to_owned);
    let ok = line("path=/traced/ok").expect("a span for the call");
    assert!(ok.contains("connection{id=") && ok.contains("outcome=\"ok\"") && ok.contains("elapsed_us="), "{ok}");
    let failed = line("path=/traced/fails").expect("a span for the failed call");
    assert!(failed.contains("outcome=\"nope\""), "{failed}");
}

#[tokio::test]
async fn a_trickled_upgrade_request_is_dropped_and_delays_nobody() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let builder = Server::builder()
        .registered_handlers(false)
        .router(Router::new().on("/ping", || async { "pong" }))
        .upgrade_timeout(Duration::from_millis(300));
    let server = TestServer::start(builder).await;
    let mut slow = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    // Half a request head, and then nothing (slowloris).
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    assert_eq!(server.client().await.call::<String>("/ping", &()).await.unwrap(), "pong");
    // The server gives up on it: the connection ends (after at most an error status).
    let ended = async {
        let mut buffer = [0u8; 512];
        loop {
            match slow.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    };
    within(5, ended).await;
}

// Floods: each from one client on default settings, bounded in count and
// time, measured by the resident memory of a real server process.

/// The resident memory of process `pid`, in MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<f64>().unwrap() / 1024.0
}

/// How much more than its idle size a flood may leave a server holding.
const FLOOD_BOUND_MIB: f64 = 64.0;

type Raw = common::Raw;

/// Sends `frame(n)` for n in 0.. until the server stops reading (a send
/// waits a second) or `max` are sent; returns how many were sent. The
/// client never reads.
async fn flood(ws: &mut Raw, max: u64, frame: impl Fn(u64) -> Message) -> u64 {
    for n in 0..max {
        match tokio::time::timeout(Duration::from_secs(1), ws.send(frame(n))).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => return n,
        }
    }
    max
}

/// What an attack reports, and the connections it keeps open while the
/// server is measured.
type Attack = (String, Vec<Raw>);

/// Runs `attack` against example `name` and checks that the server grew by
/// less than the bound, with the attacker still connected, and still serves
/// a new client.
async fn survives<F: std::future::Future<Output = Attack>>(name: &str, attack: impl FnOnce(u16) -> F) {
    let (server, port) = common::start_example(name);
    let pid = server.0.id();
    let idle = rss_mib(pid);
    let (report, attackers) = attack(port).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held = rss_mib(pid) - idle;
    println!("{name}: {report}; the server grew by {held:.1} MiB");
    assert!(held < FLOOD_BOUND_MIB, "{name}: {report}; the server grew by {held:.1} MiB");
    let client = Client::connect(&format!("ws://127.0.0.1:{port}")).await.unwrap();
    let _: serde_json::Value =
        within(10, client.call("/echo", &json!({"still": "served"}))).await.unwrap_or(json!(null));
    let other = within(10, client.call::<serde_json::Value>("/login", "someone")).await;
    assert!(name != "chat" || other.is_ok(), "{name} does not serve others after the flood: {other:?}");
    drop(attackers);
}

#[tokio::test]
async fn a_flood_of_refused_subscribes_from_a_client_that_never_reads_is_bounded() {
    survives("chat", |port| async move {
        let mut ws = raw(port).await;
        let sent = flood(&mut ws, 400_000, |n| Message::text(format!(r#"[6,{n},"/rooms/vip",null]"#))).await;
        (format!("{sent} refused SUBSCRIBEs sent"), vec![ws])
    })
    .await;
}

#[tokio::test]
async fn a_flood_of_forbidden_publishes_from_a_client_that_never_reads_is_bounded() {
    survives("echo", |port| async move {
        let mut ws = raw(port).await;
        let sent = flood(&mut ws, 400_000, |n| Message::text(format!(r#"[8,{n},"/forbidden",1]"#))).await;
        (format!("{sent} forbidden PUBLISHes sent"), vec![ws])
    })
    .await;
}

#[tokio::test]
async fn events_for_a_subscriber_that_never_reads_are_bounded_in_bytes() {
    survives("chat", |port| async move {
        // A JSON subscriber gets each event as the full, uncompressed text.
        let mut subscriber = raw(port).await;
        subscriber.send(Message::text(r#"[6,1,"/rooms/lobby",null]"#)).await.unwrap();
        let answer = within(10, subscriber.next()).await.unwrap().unwrap();
        assert_eq!(answer.to_text().unwrap(), "[3,1,null]");
        let publisher = Client::connect(&format!("ws://127.0.0.1:{port}")).await.unwrap();
        // 1 MiB of one letter: about a kilobyte once compressed.
        let text = "a".repeat(1 << 20);
        let mut heard = 0;
        for _ in 0..100 {
            let said: usize = publisher.call("/rooms/lobby/say", &json!({"from": "x", "text": text})).await.unwrap();
            heard += said;
        }
        // Queued at once for the first, then each after dropping the oldest.
        assert_eq!(heard, 100, "every event was queued for the subscriber");
        ("100 events of 1 MiB said to a subscriber that never reads".to_owned(), vec![subscriber])
    })
    .await;
}

#[tokio::test]
async fn a_message_that_decodes_into_far_more_than_its_bytes_is_refused_undecoded() {
    survives("echo", |port| async move {
        let client = Client::connect(&format!("ws://127.0.0.1:{port}")).await.unwrap();
        // 8M nils: 8 MiB, about 8 KiB compressed, 256 MiB as decoded values.
        let nils = vec![(); 8_000_000];
        for _ in 0..5 {
            match client.call::<serde_json::Value>("/echo", &nils).await {
                Err(Error::Handler(e)) => {
                    assert_eq!(e.code(), "too_large");
                    assert!(e.message().contains("more than the 16777216 its connection may hold"), "{e}");
                }
                other => panic!("{other:?}"),
            }
        }
        // One that fits is served.
        let fits = vec![(); 100_000];
        let echoed: Vec<()> = client.call("/echo", &fits).await.unwrap();
        assert_eq!(echoed.len(), 100_000);
        ("5 messages of 8M nils".to_owned(), vec![])
    })
    .await;
}

#[tokio::test]
async fn a_pattern_of_millions_of_segments_is_refused_before_it_is_split() {
    survives("echo", |port| async move {
        let mut ws = raw(port).await;
        let pattern = "/a".repeat(4_000_000);
        let envelope = rmp_serde::to_vec(&(6, 1, pattern, ())).unwrap();
        let compressed = zlib(&envelope);
        let size = compressed.len();
        for _ in 0..5 {
            ws.send(Message::binary(compressed.clone())).await.unwrap();
            let answer = within(10, ws.next()).await.unwrap().unwrap().into_data();
            let answer: serde_json::Value = rmp_serde::from_slice(&answer).unwrap();
            assert_eq!(answer[0], 4, "an ERROR: {answer}");
            assert_eq!(answer[2], "limit");
            assert!(answer[3].as_str().unwrap().contains("more than the limit of 1024 (max_topic_length)"), "{answer}");
        }
        (format!("5 SUBSCRIBEs of 4M segments, {size} bytes each compressed"), vec![ws])
    })
    .await;
}

#[tokio::test]
async fn a_subscribe_whose_options_decode_into_far_more_than_its_bytes_is_refused() {
    let server = TestServer::with_router(Router::new().on("/ping", || async { "pong" })).await;
    let mut ws = raw(server.addr.port()).await;
    // Options of 1M nils: 1 MB, a few KB compressed, 32 MiB decoded.
    let envelope = rmp_serde::to_vec(&(6, 1, "/a", vec![(); 1_000_000])).unwrap();
    ws.send(Message::binary(zlib(&envelope))).await.unwrap();
    let answer = within(10, ws.next()).await.unwrap().unwrap().into_data();
    let answer: serde_json::Value = rmp_serde::from_slice(&answer).unwrap();
    assert_eq!((answer[0].clone(), answer[2].clone()), (json!(4), json!("too_large")), "{answer}");
    // The connection goes on.
    ws.send(Message::binary(rmp_serde::to_vec(&(1, 2, "/ping", ())).unwrap())).await.unwrap();
    let answer = within(10, ws.next()).await.unwrap().unwrap().into_data();
    let answer: serde_json::Value = rmp_serde::from_slice(&answer).unwrap();
    assert_eq!(answer, json!([3, 2, "pong"]));
}

#[tokio::test]
async fn a_stalled_silent_connection_is_closed_within_the_heartbeat_bound() {
    let (gone_tx, mut gone) = tokio::sync::mpsc::unbounded_channel();
    let router = Router::new().on("/big", || async { "b".repeat(64 << 10) });
    let builder = Server::builder()
        .registered_handlers(false)
        .router(router)
        .max_calls_in_flight(8)
        .outbound_queue(4)
        .heartbeat(Duration::from_millis(500), Duration::from_millis(500))
        .on_disconnect(move |_, reason| gone_tx.send(reason.clone()).unwrap());
    let server = TestServer::start(builder).await;
    let mut ws = raw(server.addr.port()).await;
    // Calls with 64 KiB replies, never read: the server stops reading at
    // eight under way, and the client then stays silent.
    // Each call carries a kilobyte, so that the sockets' buffers fill.
    let padding = "p".repeat(1024);
    let sent = flood(&mut ws, 100_000, |n| Message::text(format!(r#"[1,{n},"/big","{padding}"]"#))).await;
    assert!(sent < 100_000, "the server never stopped reading");
    let reason = within(20, gone.recv()).await.unwrap();
    assert_eq!(reason, DisconnectReason::TimedOut, "after {sent} calls");
    drop(ws);
}

#[tokio::test]
async fn a_client_that_talks_but_never_reads_is_closed_by_the_write_timeout() {
    let (gone_tx, mut gone) = tokio::sync::mpsc::unbounded_channel();
    let mut builder = Server::builder()
        .registered_handlers(false)
        .no_heartbeat()
        .write_timeout(Duration::from_millis(500))
        .on_disconnect(move |_, reason| gone_tx.send(reason.clone()).unwrap());
    let hub = builder.hub();
    let server = TestServer::start(builder).await;
    let mut ws = raw(server.addr.port()).await;
    ws.send(Message::text(r#"[6,1,"/feed",null]"#)).await.unwrap();
    let event = "e".repeat(64 << 10);
    // Events it never reads fill its socket; it keeps sending emits.
    let talker = tokio::spawn(async move {
        for _ in 0..600 {
            if ws.send(Message::text(r#"[2,"/nothing",null]"#)).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let reason = within(20, async {
        loop {
            let _ = hub.publish("/feed", &event);
            tokio::select! {
                reason = gone.recv() => return reason.unwrap(),
                () = tokio::time::sleep(Duration::from_millis(5)) => {}
            }
        }
    })
    .await;
    assert!(matches!(&reason, DisconnectReason::TooSlow(why) if why.contains("took nothing written")), "{reason:?}");
    talker.abort();
}

#[tokio::test]
async fn subscriptions_made_while_their_clients_vanish_are_not_kept() {
    let answered = Arc::new(AtomicUsize::new(0));
    let counter = answered.clone();
    let router = Router::new().subscribe("/slow/{x}", move || {
        let answered = counter.clone();
        async move {
            // A database lookup.
            tokio::time::sleep(Duration::from_millis(300)).await;
            answered.fetch_add(1, Ordering::SeqCst);
        }
    });
    let mut builder = Server::builder().registered_handlers(false).router(router);
    let hub = builder.hub();
    let server = TestServer::start(builder).await;
    let port = server.addr.port();
    let mut vanishing = Vec::new();
    for c in 0..200 {
        vanishing.push(tokio::spawn(async move {
            let mut ws = raw(port).await;
            for n in 0..5 {
                ws.send(Message::text(format!(r#"[6,{n},"/slow/{c}",null]"#))).await.unwrap();
            }
            drop(ws); // gone at once, without a close
        }));
    }
    for task in vanishing {
        task.await.unwrap();
    }
    within(30, async {
        while answered.load(Ordering::SeqCst) < 1000 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(hub.subscription_count(), 0);
}

#[tokio::test]
async fn an_unsubscribe_while_the_subscribe_handler_runs_wins() {
    let router = Router::new().subscribe("/slow/{x}", || async {
        tokio::time::sleep(Duration::from_millis(200)).await;
    });
    let mut builder = Server::builder().registered_handlers(false).router(router);
    let hub = builder.hub();
    let server = TestServer::start(builder).await;
    let mut ws = raw(server.addr.port()).await;
    ws.send(Message::text(r#"[6,1,"/slow/x",null]"#)).await.unwrap();
    ws.send(Message::text("[7,1]")).await.unwrap();
    let answer: serde_json::Value =
        serde_json::from_str(within(10, ws.next()).await.unwrap().unwrap().to_text().unwrap()).unwrap();
    assert_eq!((answer[0].clone(), answer[2].clone()), (json!(4), json!("unsubscribed")), "{answer}");
    assert_eq!(hub.subscription_count(), 0);
    // The connection goes on: the same id subscribes for real.
    ws.send(Message::text(r#"[6,1,"/slow/x",null]"#)).await.unwrap();
    let answer = within(10, ws.next()).await.unwrap().unwrap();
    assert_eq!(answer.to_text().unwrap(), "[3,1,null]");
    assert_eq!(hub.subscription_count(), 1);
}

#[tokio::test]
async fn fifty_greedy_connections_stay_under_the_server_memory_budget() {
    const BUDGET: usize = 12 << 20;
    let (gone_tx, mut gone) = tokio::sync::mpsc::unbounded_channel();
    let mut builder = Server::builder()
        .registered_handlers(false)
        .event_queue(100_000)
        .connection_memory(1 << 20)
        .memory_budget(BUDGET)
        .on_disconnect(move |_, reason| gone_tx.send(reason.clone()).unwrap());
    let hub = builder.hub();
    let server = builder.addr("127.0.0.1:0").bind().await.unwrap();
    let stats = server.stats();
    let server = TestServer::serve(server);
    let mut greedy = Vec::new();
    for _ in 0..50 {
        let mut ws = raw(server.addr.port()).await;
        ws.send(Message::text(r#"[6,1,"/big",null]"#)).await.unwrap();
        within(10, ws.next()).await.unwrap().unwrap();
        greedy.push(ws); // and never read again
    }
    let event = "x".repeat(256 << 10);
    let mut peak = 0;
    for _ in 0..200 {
        hub.publish("/big", &event).unwrap();
        peak = peak.max(stats.memory_held());
        tokio::task::yield_now().await;
    }
    let mut shed = 0;
    while let Ok(reason) = gone.try_recv() {
        assert!(matches!(reason, DisconnectReason::OverBudget(_)), "{reason:?}");
        shed += 1;
    }
    println!("peak {} MiB of a {} MiB budget; {shed} connections shed", peak >> 20, BUDGET >> 20);
    assert!(shed > 0, "the budget was never reached");
    // Bytes of connections being closed count until their sessions end: at
    // most the budget again.
    assert!(peak <= 2 * BUDGET, "peak {peak}");
    within(10, async {
        while stats.memory_held() > BUDGET {
            tokio::task::yield_now().await;
        }
    })
    .await;
    // Everyone else is served.
    let client = server.client().await;
    client.emit("/nothing", &()).await.unwrap();
    // Once they are all gone, nothing is held: no count drifted.
    drop(greedy);
    client.close().await;
    within(10, async {
        while stats.memory_held() > 0 || stats.connections() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// 250,000 SUBSCRIBEs of distinct 1 KiB patterns from one connection that
/// reads every answer: the first 2,048 are made, every other one is refused
/// with `limit`, the server stays small, and another client is served
/// throughout.
#[tokio::test]
async fn a_flood_of_distinct_subscriptions_is_bounded_by_the_per_connection_limit() {
    const FLOOD: u64 = 250_000;
    survives("echo", |port| async move {
        let (mut sink, mut stream) = raw(port).await.split();
        let reader = tokio::spawn(async move {
            let (mut made, mut refused) = (0u64, 0u64);
            while made + refused < FLOOD {
                let Message::Text(text) = within(60, stream.next()).await.unwrap().unwrap() else { continue };
                let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
                match answer[0].as_u64() {
                    Some(3) => made += 1,
                    Some(4) if answer[2] == "limit" => refused += 1,
                    _ => panic!("unexpected answer {answer}"),
                }
            }
            (made, refused, stream)
        });
        let bystander = tokio::spawn(async move {
            let client = Client::connect(&format!("ws://127.0.0.1:{port}")).await.unwrap();
            let mut served = 0u32;
            for n in 0..100u32 {
                let answer: serde_json::Value = within(10, client.call("/echo", &json!({"n": n}))).await.unwrap();
                assert_eq!(answer, json!({"n": n}));
                served += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            served
        });
        let padding = "p".repeat(1000);
        for n in 0..FLOOD {
            let subscribe = format!(r#"[6,{n},"/{padding}/{n}",null]"#);
            within(10, sink.send(Message::text(subscribe))).await.unwrap();
        }
        let (made, refused, stream) = reader.await.unwrap();
        assert_eq!((made, refused), (2048, FLOOD - 2048));
        let served = bystander.await.unwrap();
        let ws = sink.reunite(stream).unwrap();
        (
            format!("{FLOOD} SUBSCRIBEs of distinct 1 KiB patterns, {made} made; another client served {served} calls"),
            vec![ws],
        )
    })
    .await;
}
