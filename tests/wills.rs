//! Last wills of clients: published when a connection ends without a clean
//! close (a killed process, a reset socket, a silent client), never after a
//! clean one, and not when the client is back within the delay. Real
//! sockets on 127.0.0.1, and client processes killed for real.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{python, until, TestServer};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use webmesh::extract::Path;
use webmesh::{CallError, Client, Error, Hub, Router, Server, ServerBuilder, ServerStats, Subscription};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Workers may leave wills on `/workers/{id}/gone`, except for
/// `/workers/boss/gone`; on `/slow/{id}` the authorisation takes 300 ms.
fn router() -> Router {
    Router::new()
        .publish("/workers/{id}/gone", |Path(id): Path<String>| async move {
            match id.as_str() {
                "boss" => Err(CallError::new("forbidden", "only the boss speaks for the boss")),
                _ => Ok(()),
            }
        })
        .publish("/slow/{id}", || async {
            tokio::time::sleep(ms(300)).await;
        })
}

struct Setup {
    server: TestServer,
    hub: Hub,
    stats: ServerStats,
}

async fn server_with(builder: impl FnOnce(ServerBuilder) -> ServerBuilder) -> Setup {
    let mut builder = builder(Server::builder().registered_handlers(false).router(router()));
    let hub = builder.hub();
    let server = builder.addr("127.0.0.1:0").bind().await.unwrap();
    let stats = server.stats();
    Setup { server: TestServer::serve(server), hub, stats }
}

async fn server() -> Setup {
    server_with(|b| b).await
}

/// A supervisor: subscribed to every worker's will.
async fn supervisor(setup: &Setup) -> (Client, Subscription<Value>) {
    let client = setup.server.client().await;
    let wills = client.subscribe::<Value>("/workers/*/gone").await.unwrap();
    (client, wills)
}

/// The wills `wills` receives until the marker event (published now, after
/// whatever was due), so that a will published twice is seen twice.
async fn received_until_marker(hub: &Hub, wills: &mut Subscription<Value>) -> Vec<Value> {
    hub.publish("/workers/marker/gone", &"marker").unwrap();
    let mut got = Vec::new();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), wills.recv()).await.expect("the marker");
        let event = event.expect("open").expect("an event");
        if event.topic == "/workers/marker/gone" {
            return got;
        }
        got.push(json!({"topic": event.topic, "data": event.data}));
    }
}

/// The next will `wills` receives.
async fn next_will(wills: &mut Subscription<Value>) -> Value {
    let event = tokio::time::timeout(Duration::from_secs(10), wills.recv()).await.expect("a will in time");
    let event = event.expect("open").expect("an event");
    json!({"topic": event.topic, "data": event.data})
}

// Client processes, killed for real.

/// Not a test: a client with a will that the tests below run as a child
/// process (this test binary, run again), and kill or stop.
#[tokio::test]
#[ignore = "a child process of the tests that kill clients"]
async fn child_client() {
    let Ok(url) = std::env::var("WILL_CHILD_URL") else { return };
    let topic = std::env::var("WILL_CHILD_TOPIC").unwrap();
    let client = Client::builder(url).will(&topic, &json!({"pid": std::process::id()})).connect().await.unwrap();
    println!("ready");
    std::future::pending::<()>().await;
    drop(client);
}

struct ChildClient(python::Killed);

impl ChildClient {
    fn start(url: &str, topic: &str) -> Self {
        Self(common::child_test("child_client", &[("WILL_CHILD_URL", url), ("WILL_CHILD_TOPIC", topic)]).0)
    }

    fn pid(&self) -> u32 {
        self.0 .0.id()
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill").args([signal, &self.pid().to_string()]).status().unwrap();
        assert!(status.success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_process_killed_with_sigkill_has_its_will_published_once() {
    let setup = server().await;
    let (_supervisor, mut wills) = supervisor(&setup).await;
    let child = ChildClient::start(&setup.server.url(), "/workers/7/gone");
    until("the will is in force", 10, || setup.stats.wills() == 1).await;
    child.signal("-KILL");
    let will = next_will(&mut wills).await;
    assert_eq!(will, json!({"topic": "/workers/7/gone", "data": {"pid": child.pid()}}));
    assert_eq!(received_until_marker(&setup.hub, &mut wills).await, Vec::<Value>::new(), "once");
    assert_eq!(setup.stats.wills_published(), 1);
    assert_eq!(setup.stats.wills(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_timed_out_by_the_heartbeat_and_its_will_published() {
    let setup = server_with(|b| b.heartbeat(ms(200), ms(400))).await;
    let (_supervisor, mut wills) = supervisor(&setup).await;
    let child = ChildClient::start(&setup.server.url(), "/workers/8/gone");
    until("the will is in force", 10, || setup.stats.wills() == 1).await;
    child.signal("-STOP");
    let will = next_will(&mut wills).await;
    assert_eq!(will["topic"], "/workers/8/gone");
    assert_eq!(received_until_marker(&setup.hub, &mut wills).await, Vec::<Value>::new(), "once");
    child.signal("-CONT");
}

// Raw sockets: the wire of PROTOCOL.md, and a reset.

type Raw = common::Raw;

async fn next_frame(socket: &mut Raw) -> Message {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), socket.next()).await.expect("an answer") {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(message)) => return message,
            other => panic!("expected a frame, got {other:?}"),
        }
    }
}

/// Ends `socket` with a TCP reset: no close frame, no FIN.
fn reset(socket: Raw) {
    let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = socket.get_ref() else { panic!("plain TCP") };
    tcp.set_zero_linger().unwrap();
    drop(socket);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_will_messages_of_protocol_md_byte_for_byte_and_a_reset_socket_publishes_its_will() {
    let protocol = include_str!("../PROTOCOL.md");
    let setup = server().await;
    let (_supervisor, mut wills) = supervisor(&setup).await;
    let port = setup.server.addr.port();

    // JSON: set, refused, replaced, withdrawn.
    let mut socket = common::raw(port).await;
    let exchanges = [
        (r#"[13, 1, "9f86d081884c7d65", "/workers/7/gone", 0, {"worker": 7}]"#, "[3,1,null]"),
        (
            r#"[13, 2, "9f86d081884c7d65", "/workers/boss/gone", 0, "bye"]"#,
            r#"[4,2,"forbidden","only the boss speaks for the boss",null]"#,
        ),
        (
            r#"[13, 3, "9f86d081884c7d65", "/news", 0, "bye"]"#,
            r#"[4,3,"forbidden","clients may not publish to `/news`",null]"#,
        ),
        (
            r#"[13, 4, "9f86d081884c7d65", "/workers/7/gone", 7200000, "bye"]"#,
            r#"[4,4,"limit","a will's delay may be at most 3600000 ms (max_will_delay); this one is 7200000 ms",null]"#,
        ),
        (r#"[13, 5, "9f86d081884c7d65", null]"#, "[3,5,null]"),
    ];
    for (request, answer) in exchanges {
        assert!(protocol.contains(request), "PROTOCOL.md shows {request}");
        assert!(protocol.contains(answer), "PROTOCOL.md shows {answer}");
        socket.send(Message::text(request)).await.unwrap();
        assert_eq!(next_frame(&mut socket).await, Message::text(answer), "the answer to {request}");
    }
    assert_eq!(setup.stats.wills(), 0, "withdrawn");
    // Set again, then the socket is reset: published.
    socket.send(Message::text(exchanges[0].0)).await.unwrap();
    assert_eq!(next_frame(&mut socket).await, Message::text("[3,1,null]"));
    reset(socket);
    assert_eq!(next_will(&mut wills).await, json!({"topic": "/workers/7/gone", "data": {"worker": 7}}));

    // MessagePack, byte for byte as PROTOCOL.md shows it.
    let request = hex_of(protocol, "[13, 1, nil, \"/workers/7/gone\", 0, \"bye\"]");
    let mut socket = common::raw(port).await;
    socket.send(Message::binary(request)).await.unwrap();
    assert_eq!(next_frame(&mut socket).await, Message::binary(hex_of(protocol, "[3, 1, nil]")));
    reset(socket);
    assert_eq!(next_will(&mut wills).await, json!({"topic": "/workers/7/gone", "data": "bye"}));
    assert_eq!(received_until_marker(&setup.hub, &mut wills).await, Vec::<Value>::new(), "once each");
}

/// The bytes PROTOCOL.md shows under the line naming `message`.
fn hex_of(protocol: &str, message: &str) -> Vec<u8> {
    let at = protocol.find(message).unwrap_or_else(|| panic!("PROTOCOL.md shows {message}"));
    let block = protocol[at..].split("```").nth(1).expect("a block of bytes after it");
    hex::decode(block.split_whitespace().collect::<String>()).expect("hex bytes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_close_or_a_dropped_client_discards_the_will() {
    let setup = server().await;
    let (_supervisor, mut wills) = supervisor(&setup).await;
    let closed = Client::builder(setup.server.url()).will("/workers/1/gone", &1).connect().await.unwrap();
    let dropped = Client::builder(setup.server.url()).will("/workers/2/gone", &2).connect().await.unwrap();
    let mut raw = common::raw(setup.server.addr.port()).await;
    raw.send(Message::text(r#"[13, 1, null, "/workers/3/gone", 0, 3]"#)).await.unwrap();
    assert_eq!(next_frame(&mut raw).await, Message::text("[3,1,null]"));
    assert_eq!(setup.stats.wills(), 3);

    closed.close().await;
    drop(dropped);
    raw.close(None).await.unwrap(); // a close frame of code 1000
    until("the connections are gone", 10, || setup.stats.connections() == 1).await;
    assert_eq!(received_until_marker(&setup.hub, &mut wills).await, Vec::<Value>::new(), "no will published");
    assert_eq!((setup.stats.wills(), setup.stats.wills_pending(), setup.stats.wills_published()), (0, 0, 0));

    // A close of another code is no clean close: the will is published.
    let mut raw = common::raw(setup.server.addr.port()).await;
    raw.send(Message::text(r#"[13, 1, null, "/workers/4/gone", 0, 4]"#)).await.unwrap();
    assert_eq!(next_frame(&mut raw).await, Message::text("[3,1,null]"));
    let frame = tokio_tungstenite::tungstenite::protocol::CloseFrame { code: 1011.into(), reason: "crashed".into() };
    raw.close(Some(frame)).await.unwrap();
    assert_eq!(next_will(&mut wills).await, json!({"topic": "/workers/4/gone", "data": 4}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_will_replaces_the_will_clear_will_withdraws_it_and_a_refused_one_changes_nothing() {
    let setup = server().await;
    let (_supervisor, mut wills) = supervisor(&setup).await;
    let proxy = Proxy::start(setup.server.addr).await;

    let client = Client::builder(proxy.url()).no_reconnect().will("/workers/1/gone", &"first").connect().await.unwrap();
    client.set_will("/workers/1/gone", &"second").await.unwrap();
    // Refused with the handler's reason; the second will stays in force.
    match client.set_will("/workers/boss/gone", &"usurped").await {
        Err(Error::Handler(e)) => {
            assert_eq!((e.code(), e.message()), ("forbidden", "only the boss speaks for the boss"))
        }
        other => panic!("expected the refusal, got {other:?}"),
    }
    assert_eq!(setup.stats.wills(), 1);
    proxy.cut();
    assert_eq!(next_will(&mut wills).await, json!({"topic": "/workers/1/gone", "data": "second"}));

    let client = Client::builder(proxy.url()).no_reconnect().will("/workers/2/gone", &"first").connect().await.unwrap();
    client.clear_will().await.unwrap();
    assert_eq!(setup.stats.wills(), 0);
    proxy.cut();
    until("the client sees the cut", 10, || client.is_closed()).await;
    until("the server sees the cut", 10, || setup.stats.connections() == 1).await;
    assert_eq!(received_until_marker(&setup.hub, &mut wills).await, Vec::<Value>::new(), "withdrawn");
    assert_eq!(setup.stats.wills_published(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_will_the_server_does_not_allow_fails_the_connect_with_the_reason() {
    let setup = server().await;
    let refused = Client::builder(setup.server.url()).will("/workers/boss/gone", &"usurped").connect().await;
    match refused {
        Err(Error::Handler(e)) => {
            assert_eq!((e.code(), e.message()), ("forbidden", "only the boss speaks for the boss"))
        }
        other => panic!("expected the refusal, got {other:?}"),
    }
    let reserved = Client::builder(setup.server.url()).will("/_mesh/nodes/x", &"forged").connect().await;
    assert!(matches!(reserved, Err(Error::Handler(ref e)) if e.code() == "forbidden"), "{reserved:?}");
    let invalid = Client::builder(setup.server.url()).will("/workers/*/gone", &"all").connect().await;
    assert!(matches!(invalid, Err(Error::Handler(ref e)) if e.code() == "bad_request"), "{invalid:?}");
    let too_late = Client::builder(setup.server.url())
        .will("/workers/1/gone", &1)
        .will_delay(Duration::from_secs(7200))
        .connect()
        .await;
    assert!(matches!(too_late, Err(Error::Handler(ref e)) if e.code() == "limit"), "{too_late:?}");
    // A 0.1.2 server has no wills: the client says so before it dials.
    let legacy = Client::builder(setup.server.url()).legacy(webmesh::LegacyFormat::Json).will("/x", &1).connect().await;
    assert!(matches!(legacy, Err(Error::Config(ref m)) if m.contains("0.1.2")), "{legacy:?}");
    let legacy = Client::builder(setup.server.url()).legacy(webmesh::LegacyFormat::Json).connect().await.unwrap();
    assert!(matches!(legacy.set_will("/workers/1/gone", &1).await, Err(Error::Config(_))));
    until("the refused connections are gone", 10, || setup.stats.connections() <= 1).await;
    assert_eq!((setup.stats.wills(), setup.stats.wills_published()), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_back_within_the_delay_cancels_its_will_which_is_then_in_force_again() {
    let setup = server().await;
    let (_supervisor, mut wills) = supervisor(&setup).await;
    let proxy = Proxy::start(setup.server.addr).await;
    let client = Client::builder(proxy.url())
        .heartbeat(ms(100), ms(300))
        .reconnect(webmesh::Reconnect { initial_delay: ms(20), max_delay: ms(100) })
        .will("/workers/5/gone", &"gone")
        .will_delay(ms(1500))
        .connect()
        .await
        .unwrap();
    let mut states = client.state_changes();
    proxy.cut();
    // The will waits out its delay; the client comes back and cancels it.
    common::within(10, states.wait_for(|s| matches!(s, webmesh::ConnectionState::Reconnecting { .. }))).await.unwrap();
    common::within(10, states.wait_for(|s| *s == webmesh::ConnectionState::Connected)).await.unwrap();
    until("the pending will is cancelled", 10, || setup.stats.wills_pending() == 0 && setup.stats.wills() == 1).await;
    tokio::time::sleep(ms(2000)).await; // past the delay
    assert_eq!(received_until_marker(&setup.hub, &mut wills).await, Vec::<Value>::new(), "not published");

    // In force again: gone for good, it is published once the delay passed.
    proxy.stop();
    let cut_at = Instant::now();
    assert_eq!(next_will(&mut wills).await, json!({"topic": "/workers/5/gone", "data": "gone"}));
    assert!(cut_at.elapsed() >= ms(1500), "not before the delay");
    assert_eq!(received_until_marker(&setup.hub, &mut wills).await, Vec::<Value>::new(), "once");
    drop(client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_connection_of_the_same_session_supersedes_the_will_of_the_older() {
    let setup = server().await;
    let (_supervisor, mut wills) = supervisor(&setup).await;
    let port = setup.server.addr.port();
    let will = r#"[13, 1, "session-1", "/workers/6/gone", 60000, 6]"#;
    let mut older = common::raw(port).await;
    older.send(Message::text(will)).await.unwrap();
    assert_eq!(next_frame(&mut older).await, Message::text("[3,1,null]"));
    // The client came back before the server saw the older connection end.
    let mut newer = common::raw(port).await;
    newer.send(Message::text(will)).await.unwrap();
    assert_eq!(next_frame(&mut newer).await, Message::text("[3,1,null]"));
    assert_eq!(setup.stats.wills(), 1, "the older will is superseded");
    reset(older);
    until("the older connection is gone", 10, || setup.stats.connections() == 2).await;
    assert_eq!(setup.stats.wills_pending(), 0);
    // A will without a session, and one over the pending memory, wait
    // nothing: the latter is published at once rather than kept.
    reset(newer);
    until("the newer will waits out its delay", 10, || setup.stats.wills_pending() == 1).await;
    assert_eq!(received_until_marker(&setup.hub, &mut wills).await, Vec::<Value>::new(), "not yet");

    let tight = server_with(|b| b.pending_wills_memory(0)).await;
    let (_supervisor, mut tight_wills) = supervisor(&tight).await;
    let mut raw = common::raw(tight.server.addr.port()).await;
    raw.send(Message::text(will)).await.unwrap();
    assert_eq!(next_frame(&mut raw).await, Message::text("[3,1,null]"));
    reset(raw);
    assert_eq!(next_will(&mut tight_wills).await, json!({"topic": "/workers/6/gone", "data": 6}));
    assert_eq!(tight.stats.wills_pending(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_shutting_down_publishes_the_pending_wills_and_discards_the_live_ones() {
    let mut builder = Server::builder().registered_handlers(false).router(router());
    let hub = builder.hub();
    let server = builder.addr("127.0.0.1:0").bind().await.unwrap();
    let stats = server.stats();
    let url = format!("ws://{}", server.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve_with_shutdown(async move {
        let _ = stopped.await;
    }));
    let port = url.rsplit(':').next().unwrap().parse::<u16>().unwrap();
    let mut gone = common::raw(port).await;
    gone.send(Message::text(r#"[13, 1, "s-gone", "/workers/1/gone", 60000, 1]"#)).await.unwrap();
    assert_eq!(next_frame(&mut gone).await, Message::text("[3,1,null]"));
    let _live = Client::builder(url.clone()).will("/workers/2/gone", &2).connect().await.unwrap();
    reset(gone);
    until("one pending, one live", 10, || stats.wills_pending() == 1 && stats.wills() == 1).await;
    // The subscribers are gone with the sessions; the hub's count tells
    // what was published after them.
    let published_before = stats.events_published();
    stop.send(()).unwrap();
    common::within(20, serving).await.unwrap().unwrap();
    assert_eq!(stats.wills_published(), 1, "the pending will only");
    assert_eq!(stats.events_published(), published_before + 1);
    assert_eq!(stats.wills_pending(), 0);
    drop(hub);
}

/// A TCP proxy to a server, whose connections can be cut at once (as a
/// network failure would) and which can stop accepting.
struct Proxy {
    port: u16,
    accepting: JoinHandle<()>,
    connections: std::sync::Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(target: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = connections.clone();
        let accepting = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let forwarding = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                kept.lock().unwrap().push(forwarding);
            }
        });
        Self { port, accepting, connections }
    }

    fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    /// Drops every connection under way, both ways, without a close frame.
    fn cut(&self) {
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    /// Cuts, and accepts no more connections.
    fn stop(&self) {
        self.accepting.abort();
        self.cut();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_0_1_2_clients_call_a_server_holding_wills_as_before() {
    let echo = Router::new().on("/echo", |v: Value| v).on("/", |v: Value| v);
    let setup = server_with(|b| b.router(echo)).await;
    let (_supervisor, mut wills) = supervisor(&setup).await;
    let _live = Client::builder(setup.server.url()).will("/workers/1/gone", &1).connect().await.unwrap();
    let mut gone = common::raw(setup.server.addr.port()).await;
    gone.send(Message::text(r#"[13, 1, "s-gone", "/workers/2/gone", 60000, 2]"#)).await.unwrap();
    assert_eq!(next_frame(&mut gone).await, Message::text("[3,1,null]"));
    reset(gone);
    until("one will live, one pending", 10, || setup.stats.wills() == 1 && setup.stats.wills_pending() == 1).await;

    let port = setup.server.addr.port();
    for codec in ["msgpack", "json"] {
        let seen =
            tokio::task::spawn_blocking(move || python::run_client_with(port, codec, &["echo-only"])).await.unwrap();
        assert_eq!(seen["echo"], json!({"blop": 56}), "{codec}");
        assert_eq!(seen["root"], json!([1, "two", null, 3.5]), "{codec}");
        assert_eq!(seen["unknown"], "Path not found", "{codec}");
    }
    // The Python clients closed as they do; their connections left no will.
    assert_eq!((setup.stats.wills(), setup.stats.wills_pending()), (1, 1));
    assert_eq!(received_until_marker(&setup.hub, &mut wills).await, Vec::<Value>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_dropped_by_a_panic_has_its_will_published() {
    let setup = server().await;
    let (_supervisor, mut wills) = supervisor(&setup).await;
    let client = Client::builder(setup.server.url()).will("/workers/9/gone", &"panicked").connect().await.unwrap();
    let task = tokio::spawn(async move {
        let _client = client;
        panic!("a worker's bug");
    });
    assert!(task.await.unwrap_err().is_panic());
    assert_eq!(next_will(&mut wills).await, json!({"topic": "/workers/9/gone", "data": "panicked"}));
}

// What an attack found, kept fixed.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_will_sent_on_a_connection_is_the_one_in_force_whichever_is_authorised_first() {
    let setup = server().await;
    let (_supervisor, mut wills) = supervisor(&setup).await;
    let mut socket = common::raw(setup.server.addr.port()).await;
    // A slow set, then a withdrawal answered first: withdrawn.
    socket.send(Message::text(r#"[13, 1, null, "/slow/a", 0, "set first"]"#)).await.unwrap();
    socket.send(Message::text(r#"[13, 2, null, null]"#)).await.unwrap();
    assert_eq!(next_frame(&mut socket).await, Message::text("[3,2,null]"));
    assert_eq!(next_frame(&mut socket).await, Message::text("[3,1,null]"));
    assert_eq!(setup.stats.wills(), 0);
    // A slow set, then a fast one: the fast one, sent last.
    socket.send(Message::text(r#"[13, 3, null, "/slow/a", 0, "older"]"#)).await.unwrap();
    socket.send(Message::text(r#"[13, 4, null, "/workers/1/gone", 0, "newer"]"#)).await.unwrap();
    assert_eq!(next_frame(&mut socket).await, Message::text("[3,4,null]"));
    assert_eq!(next_frame(&mut socket).await, Message::text("[3,3,null]"));
    reset(socket);
    assert_eq!(next_will(&mut wills).await, json!({"topic": "/workers/1/gone", "data": "newer"}));
    assert_eq!(received_until_marker(&setup.hub, &mut wills).await, Vec::<Value>::new());

    // The client's own calls take turns: set then clear, concurrently, ends cleared.
    let client = Client::builder(setup.server.url()).connect().await.unwrap();
    let setting = {
        let client = client.clone();
        tokio::spawn(async move { client.set_will("/slow/b", &"set").await })
    };
    tokio::time::sleep(ms(20)).await;
    client.clear_will().await.unwrap();
    setting.await.unwrap().unwrap();
    assert_eq!(setup.stats.wills(), 0, "cleared, as called last");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_connection_of_a_session_cannot_take_its_will_back_from_a_newer_one() {
    let setup = server().await;
    let (_supervisor, mut wills) = supervisor(&setup).await;
    let port = setup.server.addr.port();
    let mut older = common::raw(port).await;
    older.send(Message::text(r#"[13, 1, "s", "/slow/a", 0, "older"]"#)).await.unwrap();
    tokio::time::sleep(ms(50)).await;
    let mut newer = common::raw(port).await;
    newer.send(Message::text(r#"[13, 1, "s", "/workers/1/gone", 0, "newer"]"#)).await.unwrap();
    assert_eq!(next_frame(&mut newer).await, Message::text("[3,1,null]"));
    assert_eq!(
        next_frame(&mut older).await,
        Message::text(r#"[4,1,"superseded","a newer connection of this session holds its will",null]"#)
    );
    reset(older);
    until("the older connection is gone", 10, || setup.stats.connections() == 2).await;
    assert_eq!(received_until_marker(&setup.hub, &mut wills).await, Vec::<Value>::new(), "the client is alive");
    reset(newer);
    assert_eq!(next_will(&mut wills).await, json!({"topic": "/workers/1/gone", "data": "newer"}));

    // A withdrawal on a newer connection withdraws the older one's will too.
    let mut older = common::raw(port).await;
    older.send(Message::text(r#"[13, 1, "t", "/workers/2/gone", 0, "older"]"#)).await.unwrap();
    assert_eq!(next_frame(&mut older).await, Message::text("[3,1,null]"));
    let mut newer = common::raw(port).await;
    newer.send(Message::text(r#"[13, 1, "t", null]"#)).await.unwrap();
    assert_eq!(next_frame(&mut newer).await, Message::text("[3,1,null]"));
    assert_eq!(setup.stats.wills(), 0);
    reset(older);
    until("the older connection is gone", 10, || setup.stats.connections() == 2).await;
    assert_eq!(received_until_marker(&setup.hub, &mut wills).await, Vec::<Value>::new());

    // Back within the delay, with a will refused this time: still back.
    let mut gone = common::raw(port).await;
    gone.send(Message::text(r#"[13, 1, "u", "/workers/3/gone", 60000, "gone"]"#)).await.unwrap();
    assert_eq!(next_frame(&mut gone).await, Message::text("[3,1,null]"));
    reset(gone);
    until("pending", 10, || setup.stats.wills_pending() == 1).await;
    newer.send(Message::text(r#"[13, 2, "u", "/workers/boss/gone", 60000, "usurped"]"#)).await.unwrap();
    let refused = next_frame(&mut newer).await;
    assert!(refused.to_text().unwrap().starts_with(r#"[4,2,"forbidden""#), "{refused:?}");
    assert_eq!(setup.stats.wills_pending(), 0, "the client is back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_will_replaces_another_within_the_connections_memory_and_short_wills_are_answered() {
    let setup = server_with(|b| b.connection_memory(100_000)).await;
    let client = Client::connect(&setup.server.url()).await.unwrap();
    let big = "x".repeat(60_000);
    client.set_will("/workers/1/gone", &big).await.unwrap();
    client.set_will("/workers/1/gone", &big).await.expect("the old will's bytes go with it");
    let too_big = "x".repeat(120_000);
    assert!(client.set_will("/workers/1/gone", &too_big).await.is_err());

    // `[13, 1]` and `[13, 1, nil]` in MessagePack: answered, as in JSON.
    let mut raw = common::raw(setup.server.addr.port()).await;
    for (frame, what) in [(&[0x92u8, 0x0d, 0x01][..], "the session"), (&[0x93, 0x0d, 0x01, 0xc0][..], "the topic")] {
        raw.send(Message::binary(frame.to_vec())).await.unwrap();
        let Message::Binary(answer) = next_frame(&mut raw).await else { panic!("a binary answer") };
        let answer: Value = rmp_serde::from_slice(&answer).unwrap();
        assert_eq!(answer, json!([4, 1, "bad_request", format!("{what} is missing"), null]));
    }
    raw.send(Message::text(r#"[13, 2]"#)).await.unwrap();
    assert_eq!(next_frame(&mut raw).await, Message::text(r#"[4,2,"bad_request","the session is missing",null]"#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_reads_is_cut_as_a_slow_consumer_and_its_will_published() {
    let setup = server_with(|b| b.connection_memory(256 << 10).event_queue(64)).await;
    let (_supervisor, mut wills) = supervisor(&setup).await;
    let mut stalled = common::raw(setup.server.addr.port()).await;
    stalled.send(Message::text(r#"[13, 1, null, "/workers/3/gone", 0, "stalled"]"#)).await.unwrap();
    stalled.send(Message::text(r#"[6, 2, "/flood", {"lag": "disconnect"}]"#)).await.unwrap();
    assert_eq!(next_frame(&mut stalled).await, Message::text("[3,1,null]"));
    assert_eq!(next_frame(&mut stalled).await, Message::text("[3,2,null]"));
    // From now on it reads nothing: its socket buffers fill, then its queue.
    assert_eq!(setup.stats.connections(), 2, "the supervisor and the stalled peer");
    let chunk = "x".repeat(16 << 10);
    common::within(20, async {
        while setup.stats.connections() == 2 {
            for _ in 0..64 {
                setup.hub.publish("/flood", &chunk).unwrap();
            }
            tokio::time::sleep(ms(5)).await;
        }
    })
    .await;
    assert_eq!(next_will(&mut wills).await, json!({"topic": "/workers/3/gone", "data": "stalled"}));
    drop(stalled);
}
