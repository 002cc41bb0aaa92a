//! Who may connect, and how much they may ask: authentication, origins,
//! connection and in-flight limits, floods and abrupt disconnects.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::{within, TestServer};
use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use webmesh::extract::Authenticated;
use webmesh::{AuthError, Client, Error, Handshake, Router, Server};

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
