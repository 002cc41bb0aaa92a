//! The request/response path end to end, over real sockets: handlers,
//! extractors, return types, errors, pushes, hooks, codecs and the clients.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{within, TestServer};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::Barrier;
use webmesh::{CallError, Client, Connection, DisconnectReason, Error, IntoCallError, Router, Server, State};

#[derive(Clone, Default)]
struct Counter(Arc<AtomicU64>);

fn counter_router() -> Router {
    Router::new()
        .on("/inc", |State(counter): State<Counter>| async move {
            counter.0.fetch_add(1, Ordering::SeqCst);
        })
        .on("/getinc", |State(counter): State<Counter>| async move { counter.0.load(Ordering::SeqCst) })
        .on("/echo", |data: Value| async move { data })
}

async fn counter_server() -> TestServer {
    TestServer::start(Server::builder().registered_handlers(false).router(counter_router()).state(Counter::default()))
        .await
}

// The original test suite of webmesh 0.1.2, ported.

#[tokio::test]
async fn emit_then_call_sees_the_emit() {
    let server = counter_server().await;
    for client in [server.client().await, server.json_client().await] {
        let before: u64 = client.call("/getinc", &()).await.unwrap();
        client.emit("/inc", &()).await.unwrap();
        // Handlers start in arrival order, and /inc never waits: it is done
        // before /getinc is read.
        let after: u64 = client.call("/getinc", &()).await.unwrap();
        assert_eq!(after, before + 1);
    }
}

#[tokio::test]
async fn call_echo() {
    let server = counter_server().await;
    for client in [server.client().await, server.json_client().await] {
        let reply: Value = client.call("/echo", &json!({"blop": 56})).await.unwrap();
        assert_eq!(reply, json!({"blop": 56}));
    }
}

#[tokio::test]
async fn non_blocking_call_with_future_and_callback() {
    let server = counter_server().await;
    let client = server.client().await;
    // A future, polled later.
    let pending = tokio::spawn({
        let client = client.clone();
        async move { client.call::<Value>("/echo", &json!({"blop": 56})).await }
    });
    // A callback, as 0.1.2's `call_async(target, data, callback)`.
    let (tx, rx) = std::sync::mpsc::channel();
    let callback = move |result: Result<Value, Error>| tx.send(result.unwrap()).unwrap();
    let url = server.url();
    std::thread::spawn(move || {
        let blocking = webmesh::blocking::Client::connect(&url).unwrap();
        callback(blocking.call("/echo", &json!([1, 2])));
    });
    assert_eq!(pending.await.unwrap().unwrap(), json!({"blop": 56}));
    let from_callback = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(10)).unwrap()).await;
    assert_eq!(from_callback.unwrap(), json!([1, 2]));
}

#[tokio::test]
async fn emits_and_calls_are_handled_in_order() {
    let server = counter_server().await;
    let client = server.client().await;
    for expected in 1..=200u64 {
        client.emit("/inc", &()).await.unwrap();
        if expected % 20 == 0 {
            assert_eq!(client.call::<u64>("/getinc", &()).await.unwrap(), expected);
        }
    }
}

#[tokio::test]
async fn calls_on_one_connection_run_concurrently() {
    // Each call waits until all three are inside the handler: if the server
    // ran them one after the other, the first would wait forever.
    let barrier = Arc::new(Barrier::new(3));
    let router = Router::new().on("/meet", |State(barrier): State<Arc<Barrier>>, n: u32| async move {
        barrier.wait().await;
        n
    });
    let server = TestServer::start(Server::builder().registered_handlers(false).router(router).state(barrier)).await;
    let client = server.client().await;
    let calls = [0u32, 1, 2].map(|n| {
        let client = client.clone();
        async move { client.call_with_timeout::<u32>("/meet", &n, Duration::from_secs(20)).await }
    });
    let replies = within(30, futures_util::future::join_all(calls)).await;
    let replies: Vec<u32> = replies.into_iter().map(Result::unwrap).collect();
    assert_eq!(replies, vec![0, 1, 2]);
}

// Typed payloads and return types.

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Order {
    item: String,
    quantity: u32,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Receipt {
    total: u64,
    lines: Vec<String>,
}

#[derive(Debug)]
enum ShopError {
    OutOfStock(String),
}

impl IntoCallError for ShopError {
    fn into_call_error(self) -> CallError {
        match self {
            ShopError::OutOfStock(item) => {
                CallError::new("out_of_stock", format!("no {item} left")).with_data(json!({"item": item}))
            }
        }
    }
}

fn shop() -> Router {
    Router::new()
        .on("/buy", |order: Order| async move {
            if order.item == "unicorn" {
                return Err(ShopError::OutOfStock(order.item));
            }
            Ok(Receipt { total: u64::from(order.quantity) * 3, lines: vec![order.item] })
        })
        .on("/maybe", |n: u32| async move { (n % 2 == 0).then_some(n) })
        .on("/nothing", || async {})
        .on("/sync", |n: i64| n * 2)
        .on("/panic", |_: ()| -> u8 { panic!("boom") })
        .on("/slow", |ms: u64| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            ms
        })
}

#[tokio::test]
async fn typed_request_and_reply() {
    let server = TestServer::with_router(shop()).await;
    for client in [server.client().await, server.json_client().await] {
        let receipt: Receipt = client.call("/buy", &Order { item: "tea".into(), quantity: 4 }).await.unwrap();
        assert_eq!(receipt, Receipt { total: 12, lines: vec!["tea".into()] });
        assert_eq!(client.call::<i64>("/sync", &21).await.unwrap(), 42);
        assert_eq!(client.call::<Option<u32>>("/maybe", &4).await.unwrap(), Some(4));
        assert_eq!(client.call::<Option<u32>>("/maybe", &3).await.unwrap(), None);
        client.call::<()>("/nothing", &()).await.unwrap();
    }
}

#[tokio::test]
async fn handler_errors_reach_the_caller_with_code_message_and_data() {
    let server = TestServer::with_router(shop()).await;
    for client in [server.client().await, server.json_client().await] {
        let err = client.call::<Receipt>("/buy", &Order { item: "unicorn".into(), quantity: 1 }).await.unwrap_err();
        let Error::Handler(err) = err else { panic!("expected a handler error, got {err:?}") };
        assert_eq!(err.code(), "out_of_stock");
        assert_eq!(err.message(), "no unicorn left");
        assert_eq!(err.data(), Some(&json!({"item": "unicorn"})));
    }
}

#[tokio::test]
async fn unknown_path_is_not_found() {
    let server = TestServer::with_router(shop()).await;
    for client in [server.client().await, server.json_client().await] {
        match client.call::<Value>("/nowhere", &1).await {
            Err(Error::NotFound { path }) => assert_eq!(path, "/nowhere"),
            other => panic!("expected not found, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn bad_payload_names_the_field() {
    let server = TestServer::with_router(shop()).await;
    for client in [server.client().await, server.json_client().await] {
        match client.call::<Receipt>("/buy", &json!({"item": "tea", "quantity": "four"})).await {
            Err(err @ Error::BadPayload { .. }) => {
                let Error::BadPayload { field, message } = &err else { unreachable!() };
                assert_eq!(field, "quantity");
                assert!(!message.is_empty());
                assert!(err.to_string().starts_with("invalid payload at `quantity`: "), "{err}");
            }
            other => panic!("expected a bad payload, got {other:?}"),
        }
        // A reply that does not fit the caller's type is another error: the
        // handler ran.
        match client.call::<u32>("/buy", &Order { item: "tea".into(), quantity: 1 }).await {
            Err(Error::Decode { field, .. }) => assert_eq!(field, "."),
            other => panic!("expected a reply that does not decode, got {other:?}"),
        }
        // The connection is still fine.
        assert_eq!(client.call::<i64>("/sync", &1).await.unwrap(), 2);
    }
}

#[tokio::test]
async fn bad_payloads_read_the_same_over_msgpack_and_json() {
    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Job {
        kind: Kind,
        attempts: u32,
        items: Vec<Line>,
    }
    #[derive(Deserialize)]
    #[allow(dead_code)]
    enum Kind {
        Resize,
        Encode,
    }
    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Line {
        price: u32,
    }
    let router = Router::new().on("/jobs", |job: Job| async move { job.attempts });
    let server = TestServer::with_router(router).await;
    let (msgpack, json) = (server.client().await, server.json_client().await);
    let valid = json!({"kind": "Resize", "attempts": 1, "items": [{"price": 1}]});
    assert_eq!(msgpack.call::<u32>("/jobs", &valid).await.unwrap(), 1);
    let cases = [
        (
            json!({"kind": "Resize", "attempts": "2", "items": []}),
            "attempts",
            r#"invalid type: string "2", expected u32"#,
        ),
        (json!({"kind": "Resize", "items": []}), ".", "missing field `attempts`"),
        (
            json!({"kind": "Crop", "attempts": 1, "items": []}),
            "kind",
            "unknown variant `Crop`, expected `Resize` or `Encode`",
        ),
        (
            json!({"kind": "Encode", "attempts": 1, "items": [{"price": 1}, {"price": 2}, {"price": "3"}]}),
            "items[2].price",
            r#"invalid type: string "3", expected u32"#,
        ),
        (
            json!({"kind": "Encode", "attempts": -1, "items": []}),
            "attempts",
            "invalid value: integer `-1`, expected u32",
        ),
        (json!({"kind": "Encode", "attempts": null, "items": []}), "attempts", "invalid type: null, expected u32"),
    ];
    for (payload, field, message) in cases {
        for client in [&msgpack, &json] {
            match client.call::<u32>("/jobs", &payload).await {
                Err(Error::BadPayload { field: got_field, message: got_message }) => {
                    assert_eq!((got_field.as_str(), got_message.as_str()), (field, message), "{payload}");
                }
                other => panic!("expected a bad payload for {payload}, got {other:?}"),
            }
        }
    }
}

/// What webmesh logs at ERROR level in this test binary.
fn error_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: std::sync::OnceLock<Arc<Mutex<Vec<u8>>>> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let writer = logs.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::ERROR)
            .with_ansi(false)
            .with_writer(move || Capture(writer.clone()))
            .init();
        logs
    })
    .clone()
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn failing_router() -> Router {
    Router::new()
        .on("/config", |name: String| async move {
            let path = format!("/nonexistent-webmesh-test/{name}.toml");
            std::fs::read_to_string(&path).map_err(|e| std::io::Error::new(e.kind(), format!("{path}: {e}")))
        })
        .on("/boxed", |name: String| async move {
            let failed: Result<u32, Box<dyn std::error::Error + Send + Sync>> =
                Err(format!("the {name} replica did not answer").into());
            failed
        })
        .on("/panic", |name: String| -> u8 { panic!("{name} exploded") })
}

#[tokio::test]
async fn internal_errors_are_logged_and_not_sent_unless_exposed() {
    let logs = error_logs();
    let hidden = TestServer::with_router(failing_router()).await;
    let exposed = TestServer::start(
        Server::builder().registered_handlers(false).router(failing_router()).expose_internal_errors(true),
    )
    .await;
    for (path, name, detail, message) in [
        ("/config", "orders-hidden", "No such file or directory", "internal error"),
        ("/boxed", "billing-hidden", "the billing-hidden replica did not answer", "internal error"),
        ("/panic", "pricing-hidden", "pricing-hidden exploded", "the handler panicked"),
    ] {
        for client in [hidden.client().await, hidden.json_client().await] {
            let err = client.call::<Value>(path, &name).await.unwrap_err();
            let Error::Handler(err) = err else { panic!("expected a handler error, got {err:?}") };
            assert_eq!((err.code(), err.message(), err.detail()), ("internal", message, None), "{path}");
        }
        let logged = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
        let line =
            logged.lines().find(|line| line.contains(name)).unwrap_or_else(|| panic!("{path} not logged: {logged}"));
        assert!(line.contains("ERROR") && line.contains(detail) && line.contains(path), "{line}");

        let exposed_name = name.replace("hidden", "exposed");
        let err = exposed.client().await.call::<Value>(path, &exposed_name).await.unwrap_err();
        let Error::Handler(err) = err else { panic!("expected a handler error, got {err:?}") };
        assert_eq!(err.code(), "internal");
        let sent = err.message();
        assert!(
            sent.starts_with(&format!("{message}: ")) && sent.contains(&detail.replace("hidden", "exposed")),
            "{sent}"
        );
    }
}

#[tokio::test]
async fn a_panicking_handler_is_an_internal_error_and_nothing_else_breaks() {
    let server = TestServer::with_router(shop()).await;
    let client = server.client().await;
    match client.call::<u8>("/panic", &()).await {
        Err(Error::Handler(e)) => assert_eq!(e.code(), "internal"),
        other => panic!("expected an internal error, got {other:?}"),
    }
    assert_eq!(client.call::<i64>("/sync", &5).await.unwrap(), 10);
    assert_eq!(server.client().await.call::<i64>("/sync", &6).await.unwrap(), 12);
}

#[tokio::test]
async fn timeouts_are_per_call_and_leave_the_connection_usable() {
    let server = TestServer::with_router(shop()).await;
    let client = Client::builder(server.url()).timeout(Duration::from_secs(20)).connect().await.unwrap();
    match client.call_with_timeout::<u64>("/slow", &3_000, Duration::from_millis(50)).await {
        Err(Error::Timeout(d)) => assert_eq!(d, Duration::from_millis(50)),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_eq!(client.call::<u64>("/slow", &1).await.unwrap(), 1);
}

#[tokio::test]
async fn many_tasks_share_one_connection_and_get_their_own_replies() {
    let server = TestServer::with_router(shop()).await;
    let client = server.client().await;
    let tasks: Vec<_> = (0..32i64)
        .map(|task| {
            let client = client.clone();
            tokio::spawn(async move {
                for i in 0..25 {
                    let n = task * 1000 + i;
                    assert_eq!(client.call::<i64>("/sync", &n).await.unwrap(), n * 2);
                }
            })
        })
        .collect();
    for task in tasks {
        within(60, task).await.unwrap();
    }
}

#[tokio::test]
async fn closing_fails_waiting_calls_and_later_ones() {
    let server = TestServer::with_router(shop()).await;
    let client = server.client().await;
    let waiting = tokio::spawn({
        let client = client.clone();
        async move { client.call::<u64>("/slow", &10_000).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let other = client.clone();
    within(10, client.close()).await;
    assert!(matches!(within(10, waiting).await.unwrap(), Err(Error::Closed(_))));
    assert!(matches!(other.call::<i64>("/sync", &1).await, Err(Error::Closed(_))));
    assert!(other.is_closed());
}

#[tokio::test]
async fn large_payloads_are_compressed_and_round_trip() {
    let server = TestServer::with_router(counter_router()).await;
    let client = server.client().await;
    let big = json!({"text": "webmesh ".repeat(20_000), "numbers": (0..5000).collect::<Vec<u32>>()});
    let reply: Value = client.call("/echo", &big).await.unwrap();
    assert_eq!(reply, big);
}

// State, connections, pushes and hooks.

#[tokio::test]
async fn missing_state_is_an_internal_error_naming_the_type() {
    let server = TestServer::with_router(counter_router()).await; // no Counter given
    match server.client().await.call::<u64>("/getinc", &()).await {
        Err(Error::Handler(e)) => {
            assert_eq!(e.code(), "internal");
            assert!(e.message().contains("Counter"), "{}", e.message());
        }
        other => panic!("expected an internal error, got {other:?}"),
    }
}

#[tokio::test]
async fn the_server_pushes_to_a_client_at_any_time() {
    let router = Router::new().on("/watch", |conn: Connection, ticks: u32| async move {
        tokio::spawn(async move {
            for n in 0..ticks {
                conn.emit("/tick", &n).await.unwrap();
            }
        });
    });
    let server = TestServer::with_router(router).await;
    for client in [server.client().await, server.json_client().await] {
        let seen = Arc::new(Mutex::new(Vec::new()));
        client.on("/tick", {
            let seen = seen.clone();
            move |n: u32| seen.lock().unwrap().push(n)
        });
        let mut pushes = client.pushes();
        client.call::<()>("/watch", &5).await.unwrap();
        for expected in 0..5u32 {
            let push = within(10, pushes.next()).await.unwrap();
            assert_eq!(push.path(), "/tick");
            assert_eq!(push.deserialize::<u32>().unwrap(), expected);
        }
        // Handlers run before the stream sees a push.
        assert_eq!(*seen.lock().unwrap(), vec![0, 1, 2, 3, 4]);
        // Once the connection is closed, the stream ends.
        client.call::<()>("/watch", &1).await.unwrap();
        client.clone().close().await;
        assert_eq!(within(10, pushes.next()).await.map(|p| p.deserialize::<u32>().unwrap()), Some(0));
        assert!(within(10, pushes.next()).await.is_none());
    }
}

#[tokio::test]
async fn connection_extensions_carry_identity_between_calls() {
    let router = Router::new()
        .on("/login", |conn: Connection, name: String| async move {
            conn.insert_extension(name);
        })
        .on("/whoami", |conn: Connection| async move { conn.extension::<String>() })
        .on("/id", |conn: Connection| async move { (conn.id(), conn.peer_addr().map(|a| a.ip().to_string())) });
    let server = TestServer::with_router(router).await;
    let (ada, bob) = (server.client().await, server.client().await);
    ada.call::<()>("/login", "ada").await.unwrap();
    assert_eq!(ada.call::<Option<String>>("/whoami", &()).await.unwrap().as_deref(), Some("ada"));
    assert_eq!(bob.call::<Option<String>>("/whoami", &()).await.unwrap(), None);
    let (ada_id, ip) = ada.call::<(u64, Option<String>)>("/id", &()).await.unwrap();
    let (bob_id, _) = bob.call::<(u64, Option<String>)>("/id", &()).await.unwrap();
    assert_ne!(ada_id, bob_id);
    assert_eq!(ip.as_deref(), Some("127.0.0.1"));
}

#[tokio::test]
async fn hooks_see_connects_and_disconnects_with_the_reason() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let (on_connect, on_disconnect) = (events.clone(), events.clone());
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let builder = Server::builder()
        .registered_handlers(false)
        .router(counter_router())
        .on_connect(move |conn| on_connect.lock().unwrap().push(format!("connect {}", conn.id())))
        .on_disconnect(move |conn, reason| {
            on_disconnect.lock().unwrap().push(format!("disconnect {}: {reason:?}", conn.id()));
            done_tx.send(reason.clone()).unwrap();
        });
    let server = TestServer::start(builder).await;
    let client = server.client().await;
    client.call::<Value>("/echo", &1).await.unwrap();
    client.close().await;
    let reason = within(10, done_rx.recv()).await.unwrap();
    assert!(
        matches!(reason, DisconnectReason::Closed { code: 1000, .. } | DisconnectReason::Closed { code: 1005, .. }),
        "{reason:?}"
    );
    let events = events.lock().unwrap();
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events[0].starts_with("connect "));
    assert!(events[1].starts_with("disconnect "));
}

#[tokio::test]
async fn a_custom_not_found_handler_answers_unknown_paths() {
    let builder = Server::builder().registered_handlers(false).not_found(
        |webmesh::extract::CallPath(path): webmesh::extract::CallPath| async move {
            Err::<(), _>(CallError::new("no_such_service", format!("try /help instead of {path}")))
        },
    );
    let server = TestServer::start(builder).await;
    match server.client().await.call::<Value>("/x", &()).await {
        Err(Error::Handler(e)) => assert_eq!((e.code(), e.message()), ("no_such_service", "try /help instead of /x")),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn two_handlers_on_one_path_fail_start_up_naming_both() {
    let router = Router::new().on("/same", || async { 1 }).on("/same", || async { 2 });
    let err = Server::builder().registered_handlers(false).router(router).addr("127.0.0.1:0").bind().await.unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, Error::Config(_)));
    assert!(message.contains("two handlers on `/same`"), "{message}");
    assert_eq!(message.matches("tests/core.rs:").count(), 2, "both locations: {message}");
}

#[tokio::test]
async fn webmesh_mounts_in_an_axum_app_beside_http_routes() {
    use axum::routing::get;
    let mesh = Server::builder().registered_handlers(false).router(counter_router()).into_router().unwrap();
    let app = axum::Router::new().route("/health", get(|| async { "ok" })).nest("/mesh", mesh);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let client = Client::connect(&format!("ws://{addr}/mesh")).await.unwrap();
    assert_eq!(client.call::<Value>("/echo", &json!("hi")).await.unwrap(), json!("hi"));
    // A wrong path is refused with 404, and the error says what to check.
    match Client::connect(&format!("ws://{addr}/wrong")).await {
        Err(Error::Refused { status: 404, message }) => assert!(message.contains("check the URL's path"), "{message}"),
        other => panic!("expected a 404, got {other:?}"),
    }

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut http = tokio::net::TcpStream::connect(addr).await.unwrap();
    http.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await.unwrap();
    let mut response = String::new();
    http.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("ok"), "{response}");
}

/// An axum application with webmesh mounted at `/mesh`, stopped with `stop`;
/// it drains the WebSocket sessions once axum has returned and `drain` is
/// sent. `served` tells when axum has returned.
struct Mounted {
    url: String,
    shutdown: webmesh::Shutdown,
    stop: tokio::sync::oneshot::Sender<()>,
    served: tokio::sync::oneshot::Receiver<()>,
    drain: tokio::sync::oneshot::Sender<()>,
    drained: tokio::task::JoinHandle<()>,
}

async fn mounted(router: Router) -> Mounted {
    let builder = Server::builder().registered_handlers(false).router(router);
    let (mesh, shutdown) = builder.into_router_with_shutdown().unwrap();
    let app = axum::Router::new().nest("/mesh", mesh);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/mesh", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (served_tx, served) = tokio::sync::oneshot::channel();
    let (drain, drain_now) = tokio::sync::oneshot::channel::<()>();
    let signal = shutdown.on(async move {
        let _ = stopped.await;
    });
    let drained = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            axum::serve(listener, app).with_graceful_shutdown(signal).await.unwrap();
            let _ = served_tx.send(());
            let _ = drain_now.await;
            shutdown.drain().await;
        }
    });
    Mounted { url, shutdown, stop, served, drain, drained }
}

#[tokio::test]
async fn mounted_in_axum_a_shutdown_answers_calls_under_way_then_closes_with_1001() {
    let (entered, mut inside) = tokio::sync::mpsc::unbounded_channel::<()>();
    let release = Arc::new(tokio::sync::Notify::new());
    let router = Router::new().on("/slow", {
        let release = release.clone();
        move |n: u64| {
            let (entered, release) = (entered.clone(), release.clone());
            async move {
                entered.send(()).unwrap();
                release.notified().await;
                n
            }
        }
    });
    let server = mounted(router).await;
    let client = Client::builder(&server.url).no_reconnect().connect().await.unwrap();
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.call::<u64>("/slow", &7).await }
    });
    within(10, inside.recv()).await.unwrap();

    // axum's signal: axum returns at once (it does not track upgraded
    // connections), and the session is closing, waiting for its call.
    server.stop.send(()).unwrap();
    within(10, server.served).await.unwrap();
    release.notify_one();
    assert_eq!(within(10, call).await.unwrap().unwrap(), 7);
    match within(10, client.call::<u64>("/slow", &1)).await {
        Err(Error::Closed(Some(reason))) => assert!(reason.contains("1001"), "{reason}"),
        other => panic!("expected the session closed with 1001, got {other:?}"),
    }
    server.drain.send(()).unwrap();
    within(10, server.drained).await.unwrap();
}

#[tokio::test]
async fn mounted_in_axum_a_started_shutdown_closes_idle_sessions_and_refuses_new_ones() {
    let server = mounted(counter_router()).await;
    let client = Client::builder(&server.url).no_reconnect().connect().await.unwrap();
    let mut events = client.subscribe::<Value>("/news").await.unwrap();
    server.shutdown.start();
    // The idle session closes (its subscription ends) before any drain.
    assert!(within(10, events.recv()).await.is_none());
    match Client::builder(&server.url).no_reconnect().connect().await {
        Err(Error::Refused { status: 503, message }) => assert_eq!(message, "server shutting down"),
        other => panic!("expected a 503, got {other:?}"),
    }
    server.stop.send(()).unwrap();
    server.drain.send(()).unwrap();
    within(10, server.drained).await.unwrap();
}

#[test]
fn the_blocking_client_calls_and_emits() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(counter_server());
    let client = webmesh::blocking::Client::connect(&server.url()).unwrap();
    client.emit("/inc", &()).unwrap();
    assert_eq!(client.call::<u64>("/getinc", &()).unwrap(), 1);
    assert_eq!(client.call::<Value>("/echo", &json!({"blop": 56})).unwrap(), json!({"blop": 56}));
    assert!(matches!(client.call::<Value>("/nope", &()), Err(Error::NotFound { .. })));
    drop(client);
    drop(server);
}

#[tokio::test]
async fn shutdown_lets_calls_finish_then_closes_with_1001_and_releases_subscriptions() {
    let router = Router::new().on("/slow", |ms: u64| async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    });
    let mut builder = Server::builder().registered_handlers(false).router(router);
    let hub = builder.hub();
    let server = builder.addr("127.0.0.1:0").bind().await.unwrap();
    let url = format!("ws://{}", server.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve_with_shutdown(async move {
        let _ = stopped.await;
    }));

    // Without reconnection, the client's subscription ends with the connection.
    let client = Client::builder(&url).no_reconnect().connect().await.unwrap();
    let mut events = client.subscribe::<Value>("/news").await.unwrap();
    assert_eq!(hub.subscription_count(), 1);
    let slow = tokio::spawn({
        let client = client.clone();
        async move { client.call::<u64>("/slow", &300).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.send(()).unwrap();

    // The call under way still gets its reply.
    assert_eq!(within(10, slow).await.unwrap().unwrap(), 300);
    // Then the connection is closed with 1001, ending the subscription.
    assert!(within(10, events.recv()).await.is_none());
    within(10, serving).await.unwrap().unwrap();
    assert_eq!(hub.subscription_count(), 0);
    match client.call::<u64>("/slow", &1).await {
        Err(Error::Closed(Some(reason))) => assert!(reason.contains("1001"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn under_load_shutdown_answers_or_fails_every_call_and_never_hangs() {
    let router = Router::new().on("/work", |ms: u64| async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    });
    let server = Server::builder().registered_handlers(false).router(router).addr("127.0.0.1:0").bind().await.unwrap();
    let url = format!("ws://{}", server.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve_with_shutdown(async move {
        let _ = stopped.await;
    }));
    let mut calls = Vec::new();
    for _ in 0..8 {
        let client = Client::builder(&url).no_reconnect().connect().await.unwrap();
        for i in 0..200u64 {
            let client = client.clone();
            calls.push(tokio::spawn(async move { client.call::<u64>("/work", &(i % 50)).await }));
        }
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    stop.send(()).unwrap();
    let (mut answered, mut failed) = (0, 0);
    for call in calls {
        match within(30, call).await.unwrap() {
            Ok(_) => answered += 1,
            // Sent but not read before the server stopped reading.
            Err(Error::Closed(_)) => failed += 1,
            Err(other) => panic!("an accepted call must be answered or closed, got {other:?}"),
        }
    }
    within(30, serving).await.unwrap().unwrap();
    assert_eq!(answered + failed, 1600);
    assert!(answered > 0, "the calls under way were answered");
}
