//! The client under backpressure, panics, cancellation and reconnection:
//! each test reproduces a defect found by probing the client, over real
//! sockets (and real processes where the defect needs one).

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{within, Restartable, Silent, TestServer};
use serde_json::{json, Value};
use webmesh::{Client, Connection, ConnectionState, Error, Reconnect, Router, Server, WhileDisconnected};

fn fast() -> Reconnect {
    Reconnect { initial_delay: Duration::from_millis(20), max_delay: Duration::from_millis(200) }
}

/// Random printable characters: zlib cannot shrink them.
fn incompressible(len: usize) -> String {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..len)
        .map(|_| {
            // xorshift64: fast, and random enough to defeat zlib.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(b'!' + (state % 94) as u8)
        })
        .collect()
}

/// A server on `addr` that counts the calls it ran, and can be stopped.
async fn counting(addr: &str, ran: Arc<AtomicU64>) -> Restartable {
    let router = Router::new()
        .on("/count", move || {
            let n = ran.fetch_add(1, Ordering::SeqCst) + 1;
            async move { n }
        })
        .on("/echo", |v: Value| async move { v })
        .on("/slow", || async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            "slow"
        });
    Restartable::start(addr, router).await
}

async fn wait_for_state(client: &Client, wanted: impl FnMut(&ConnectionState) -> bool) {
    let mut states = client.state_changes();
    within(20, states.wait_for(wanted)).await.unwrap();
}

/// 1. The client's reading never waits on its writing: replies are read
/// while requests are written, so the server (which stops reading at its
/// in-flight limit until its replies are read) is never stuck.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_large_calls_never_deadlock_the_connection() {
    let server = TestServer::with_router(Router::new().on("/echo", |s: String| async move { s })).await;
    let client = Client::builder(server.url()).compression_threshold(usize::MAX).connect().await.unwrap();
    let payload = Arc::new(incompressible(32 << 10));
    // 2,500 x 32 KiB = 80 MB each way: far more than both sockets' buffers
    // and more than the server's 1,024 calls in flight.
    let calls: Vec<_> = (0..2_500)
        .map(|_| {
            let (client, payload) = (client.clone(), payload.clone());
            tokio::spawn(async move { client.call::<String>("/echo", payload.as_str()).await })
        })
        .collect();
    let mut answered = 0;
    for call in calls {
        let reply = within(120, call).await.unwrap().unwrap();
        assert_eq!(reply.len(), payload.len());
        answered += 1;
    }
    assert_eq!(answered, 2_500);
    assert_eq!(within(10, client.call::<String>("/echo", "small")).await.unwrap(), "small");
    assert_eq!(client.state(), ConnectionState::Connected);
    within(10, client.close()).await;
}

/// 1. A full outbound buffer makes callers wait instead of growing: with a
/// server that never reads, emits stop returning once the buffer is full.
#[tokio::test]
async fn a_full_outbound_buffer_makes_emits_wait() {
    let never_reads = Silent::start().await;
    let client = Client::builder(never_reads.url())
        .outbound_buffer(256 << 10)
        .compression_threshold(usize::MAX)
        .no_reconnect()
        .connect()
        .await
        .unwrap();
    let payload = incompressible(16 << 10);
    let mut queued = 0usize;
    // Socket buffers take some megabytes; then the 256 KiB buffer fills.
    while queued < 10_000 {
        match tokio::time::timeout(Duration::from_millis(500), client.emit("/x", payload.as_str())).await {
            Ok(result) => {
                result.unwrap();
                queued += 1;
            }
            Err(_) => break,
        }
    }
    assert!(queued < 10_000, "emits never waited: {queued} queued to a server that never reads");
    drop(never_reads);
}

/// 2. A panicking push handler is logged and skipped: the connection, the
/// calls, the other handlers and the streams carry on.
#[tokio::test]
async fn a_panicking_push_handler_does_not_kill_the_client() {
    let router = Router::new().on("/tick", |conn: Connection, n: u64| async move {
        let _ = conn.emit("/tick", &n).await;
        n
    });
    let server = TestServer::with_router(router).await;
    let client = server.client().await;
    let seen = Arc::new(AtomicU64::new(0));
    client.on("/tick", |_: u64| panic!("a user's bug"));
    let counter = seen.clone();
    client.on("/tick", move |n: u64| {
        counter.fetch_add(n, Ordering::SeqCst);
    });
    let mut pushes = client.pushes();
    for n in 1..=3u64 {
        assert_eq!(within(10, client.call::<u64>("/tick", &n)).await.unwrap(), n);
        assert_eq!(within(10, pushes.next()).await.unwrap().deserialize::<u64>().unwrap(), n);
    }
    assert_eq!(seen.load(Ordering::SeqCst), 6);
    assert_eq!(client.state(), ConnectionState::Connected);
    assert!(!client.is_closed());
    within(10, client.close()).await;
    assert!(within(10, pushes.next()).await.is_none(), "the stream ends with the client");
}

/// 2. The blocking client runs push handlers on a thread of their own,
/// where they may use the client: an `emit` from a handler works.
#[tokio::test]
async fn a_blocking_push_handler_may_emit() {
    let ran = Arc::new(AtomicU64::new(0));
    let count = ran.clone();
    let router = Router::new()
        .on("/poke", |conn: Connection| async move {
            let _ = conn.emit("/poked", &()).await;
        })
        .on("/answer", move || {
            count.fetch_add(1, Ordering::SeqCst);
            async {}
        });
    let server = TestServer::with_router(router).await;
    let url = server.url();
    let blocking = std::thread::spawn(move || {
        let client = webmesh::blocking::Client::connect(&url).unwrap();
        let answering = client.clone();
        client.on("/poked", move |(): ()| answering.emit("/answer", &()).unwrap());
        client.on("/poked", |(): ()| panic!("a user's bug"));
        for _ in 0..3 {
            client.emit("/poke", &()).unwrap();
        }
        client
    });
    within(20, loop_until_finished(&blocking)).await;
    let client = blocking.join().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while ran.load(Ordering::SeqCst) < 3 {
        assert!(tokio::time::Instant::now() < deadline, "the handlers emitted {} of 3", ran.load(Ordering::SeqCst));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Closing lets the handler's clone go too (dropped here, off the runtime).
    let closing = std::thread::spawn(move || client.close());
    within(20, loop_until_finished(&closing)).await;
}

async fn loop_until_finished<T>(thread: &std::thread::JoinHandle<T>) {
    while !thread.is_finished() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// 2 and 6. Durations that mean "no limit" neither panic nor overflow.
#[tokio::test]
async fn durations_that_mean_no_limit_work() {
    let server = TestServer::with_router(Router::new().on("/echo", |v: Value| async move { v })).await;
    let client = Client::builder(server.url())
        .timeout(Duration::MAX)
        .heartbeat(Duration::MAX, Duration::MAX)
        .connect_timeout(Duration::MAX)
        .connect()
        .await
        .unwrap();
    assert_eq!(client.call::<u32>("/echo", &1).await.unwrap(), 1);
    assert_eq!(client.call_with_timeout::<u32>("/echo", &2, Duration::MAX).await.unwrap(), 2);
    assert_eq!(client.state(), ConnectionState::Connected);
}

/// 3. A call whose caller gave up (timeout, or dropping the future) while
/// the server was down is never sent: the restarted server runs none.
#[tokio::test]
async fn calls_given_up_while_disconnected_are_never_run() {
    let ran = Arc::new(AtomicU64::new(0));
    let first = counting("127.0.0.1:0", ran.clone()).await;
    let client = Client::builder(format!("ws://{}", first.addr))
        .reconnect(Reconnect { initial_delay: Duration::from_millis(50), max_delay: Duration::from_millis(100) })
        .connect()
        .await
        .unwrap();
    assert_eq!(client.call::<u64>("/count", &()).await.unwrap(), 1);
    let addr = first.stop().await;
    wait_for_state(&client, |s| matches!(s, ConnectionState::Reconnecting { .. })).await;
    // 2,000 timeouts: more than the queue ever held in frames.
    let calls: Vec<_> = (0..2_000)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(
                async move { client.call_with_timeout::<u64>("/count", &(), Duration::from_millis(300)).await },
            )
        })
        .collect();
    for call in calls {
        assert!(matches!(within(20, call).await.unwrap(), Err(Error::Timeout(_))));
    }
    // And calls dropped by their callers.
    for _ in 0..100 {
        let _ = tokio::time::timeout(Duration::from_millis(1), client.call::<u64>("/count", &())).await;
    }
    // Emits made meanwhile are still sent once reconnected.
    let second = counting(&addr.to_string(), ran.clone()).await;
    wait_for_state(&client, |s| *s == ConnectionState::Connected).await;
    assert_eq!(
        within(10, client.call::<u64>("/count", &())).await.unwrap(),
        2,
        "the restarted server ran a stale call"
    );
    assert_eq!(ran.load(Ordering::SeqCst), 2);
    second.stop().await;
}

/// 3. Under `FailFast`, calls still queued when the connection drops fail
/// at once, saying they were not sent, and are never run.
#[tokio::test]
async fn fail_fast_fails_queued_calls_at_once_and_never_sends_them() {
    // A server that never reads, then vanishes.
    let never_reads = Silent::start().await;
    let addr = never_reads.addr;
    let client = Client::builder(never_reads.url())
        .outbound_buffer(64 << 10)
        .compression_threshold(usize::MAX)
        .reconnect(Reconnect { initial_delay: Duration::from_millis(300), max_delay: Duration::from_millis(300) })
        .while_disconnected(WhileDisconnected::FailFast)
        .timeout(Duration::from_secs(120))
        .connect()
        .await
        .unwrap();
    let payload = Arc::new(incompressible(16 << 10));
    let calls: Vec<_> = (0..400)
        .map(|_| {
            let (client, payload) = (client.clone(), payload.clone());
            tokio::spawn(async move { client.call::<Value>("/count", payload.as_str()).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    never_reads.vanish().await;
    let mut not_sent = 0;
    for call in calls {
        // Within seconds, not the calls' 120 s timeout.
        match within(20, call).await.unwrap() {
            Err(Error::Closed(Some(reason))) if reason.contains("not sent") => not_sent += 1,
            Err(Error::Closed(Some(reason))) if reason.contains("may have run") => {}
            other => panic!("expected a closed error, got {other:?}"),
        }
    }
    assert!(not_sent > 100, "only {not_sent} of 400 were still queued");
    // The server comes back: it runs none of the calls that failed unsent.
    let ran = Arc::new(AtomicU64::new(0));
    let server = counting(&addr.to_string(), ran.clone()).await;
    wait_for_state(&client, |s| *s == ConnectionState::Connected).await;
    assert_eq!(within(10, client.call::<u64>("/count", &())).await.unwrap(), 1);
    server.stop().await;
}

fn pid_signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status().unwrap();
    assert!(status.success());
}

/// 4. Reconnecting to a stopped process (SIGSTOP: it accepts TCP, never
/// answers) gives up each dial in time, says why in the state, and
/// `close()` wins over a dial in progress.
#[tokio::test]
async fn close_interrupts_reconnecting_to_a_stopped_server() {
    let (echo, port) = common::start_example("echo");
    let pid = echo.0.id();
    let client = Client::builder(format!("ws://127.0.0.1:{port}"))
        .heartbeat(Duration::from_millis(300), Duration::from_millis(300))
        .connect_timeout(Duration::from_millis(500))
        .reconnect(Reconnect { initial_delay: Duration::from_millis(20), max_delay: Duration::from_millis(50) })
        .connect()
        .await
        .unwrap();
    assert_eq!(client.call::<String>("/echo", "hi").await.unwrap(), "hi");
    pid_signal(pid, "STOP");
    let mut states = client.state_changes();
    let state = within(
        20,
        states
            .wait_for(|s| matches!(s, ConnectionState::Reconnecting { attempt, last_error: Some(_) } if *attempt >= 2)),
    )
    .await
    .unwrap()
    .clone();
    let ConnectionState::Reconnecting { last_error: Some(why), .. } = state else { unreachable!() };
    assert!(why.contains("could not connect within"), "{why}");
    // Dropping every handle ends the task too: the state becomes Closed.
    let dropped = client.clone();
    let mut dropped_states = dropped.state_changes();
    within(10, client.close()).await;
    assert!(dropped.is_closed());
    assert!(
        matches!(dropped.call::<String>("/echo", "x").await, Err(Error::Closed(Some(r))) if r == "closed by the client")
    );
    within(10, dropped_states.wait_for(|s| *s == ConnectionState::Closed)).await.unwrap();
    pid_signal(pid, "CONT");
    drop(echo);
}

/// 4. Dropping the last handle while a dial hangs ends the connection task.
#[tokio::test]
async fn dropping_the_client_while_reconnecting_ends_it() {
    let ran = Arc::new(AtomicU64::new(0));
    let server = counting("127.0.0.1:0", ran).await;
    let client = Client::builder(format!("ws://{}", server.addr)).reconnect(fast()).connect().await.unwrap();
    let mut states = client.state_changes();
    let addr = server.stop().await;
    // Something that accepts TCP and never answers, on the same port.
    let _silent = tokio::net::TcpListener::bind(addr).await.unwrap();
    within(10, states.wait_for(|s| matches!(s, ConnectionState::Reconnecting { .. }))).await.unwrap();
    drop(client);
    within(10, states.wait_for(|s| *s == ConnectionState::Closed)).await.unwrap();
}

/// 5. The blocking client writes what was queued before it is dropped.
#[tokio::test]
async fn blocking_emits_before_drop_all_run() {
    let ran = Arc::new(AtomicU64::new(0));
    let server = counting("127.0.0.1:0", ran.clone()).await;
    let url = format!("ws://{}", server.addr);
    let emitting = std::thread::spawn(move || {
        let client = webmesh::blocking::Client::connect(&url).unwrap();
        for _ in 0..1_000 {
            client.emit("/count", &()).unwrap();
        }
        drop(client);
    });
    within(30, loop_until_finished(&emitting)).await;
    emitting.join().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while ran.load(Ordering::SeqCst) < 1_000 {
        assert!(tokio::time::Instant::now() < deadline, "the server ran {} of 1,000", ran.load(Ordering::SeqCst));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop().await;
}

/// 5. On a thread with a Tokio context (async code, `spawn_blocking`), the
/// blocking client neither panics nor refuses: it drives its runtime from
/// a thread of its own; and dropping it there does not panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_blocking_client_works_and_drops_inside_a_runtime() {
    let ran = Arc::new(AtomicU64::new(0));
    let server = counting("127.0.0.1:0", ran.clone()).await;
    let url = format!("ws://{}", server.addr);
    let client = webmesh::blocking::Client::connect(&url).unwrap();
    assert_eq!(client.call::<u64>("/count", &()).unwrap(), 1);
    client.emit("/count", &()).unwrap();
    drop(client);
    let in_blocking_task = tokio::task::spawn_blocking(move || {
        let client = webmesh::blocking::Client::connect(&url).unwrap();
        let n = client.call::<u64>("/count", &()).unwrap();
        drop(client);
        n
    });
    assert_eq!(within(20, in_blocking_task).await.unwrap(), 3, "the emit ran before the drop finished");
    server.stop().await;
}

/// 5. The blocking client subscribes (an `Iterator`), publishes and closes.
#[tokio::test]
async fn the_blocking_client_subscribes_publishes_and_closes() {
    let router = Router::new();
    let mut builder = Server::builder().registered_handlers(false).router(router);
    let hub = builder.hub();
    let server = TestServer::start(builder).await;
    let url = server.url();
    let subscriber = std::thread::spawn(move || {
        let client = webmesh::blocking::Client::connect(&url).unwrap();
        let news = client.subscribe::<u32>("/news/{*rest}").unwrap();
        assert!(matches!(client.publish("/news/a", &1), Err(Error::Handler(e)) if e.code() == "forbidden"));
        let received: Vec<u32> = news.take(3).map(|e| e.unwrap().data).collect();
        client.close();
        received
    });
    for n in 0.. {
        if subscriber.is_finished() {
            break;
        }
        let _ = hub.publish("/news/x", &(n % 3 + 1));
        assert!(n < 2_000, "the blocking subscriber got nothing");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let received = subscriber.join().unwrap();
    assert_eq!(received.len(), 3);
}

/// 7. Events published while the client reconnects are reported as a gap
/// (count unknown), in order, before the first event of the new connection.
#[tokio::test]
async fn a_reconnect_reports_a_gap_before_the_next_event() {
    let ran = Arc::new(AtomicU64::new(0));
    let first = counting("127.0.0.1:0", ran.clone()).await;
    let client = Client::builder(format!("ws://{}", first.addr)).reconnect(fast()).connect().await.unwrap();
    let mut news = client.subscribe::<u32>("/news").await.unwrap();
    let _ = first.hub.publish("/news", &1);
    let _ = first.hub.publish("/news", &2);
    for n in [1, 2] {
        assert_eq!(within(10, news.recv()).await.unwrap().unwrap().data, n);
    }
    let addr = first.stop().await;
    wait_for_state(&client, |s| matches!(s, ConnectionState::Reconnecting { .. })).await;
    let second = counting(&addr.to_string(), ran).await;
    wait_for_state(&client, |s| *s == ConnectionState::Connected).await;
    // The resubscription may not be registered yet: publish until it is.
    let publishing = tokio::spawn({
        let hub = second.hub.clone();
        async move {
            loop {
                let _ = hub.publish("/news", &3);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    match within(10, news.recv()).await {
        Some(Err(Error::Lagged { missed: None })) => {}
        other => panic!("expected a gap of unknown size first, got {other:?}"),
    }
    assert_eq!(within(10, news.recv()).await.unwrap().unwrap().data, 3);
    publishing.abort();
    second.stop().await;
}

/// 8. A call over the server's message limit is refused here, unsent, and
/// the connection and the calls on it are unharmed.
#[tokio::test]
async fn an_oversized_call_is_refused_locally_and_harms_no_other_call() {
    let ran = Arc::new(AtomicU64::new(0));
    let server = counting("127.0.0.1:0", ran).await;
    let client = Client::connect(&format!("ws://{}", server.addr)).await.unwrap();
    let slow = tokio::spawn({
        let client = client.clone();
        async move { client.call::<String>("/slow", &()).await }
    });
    let big = incompressible(9 << 20);
    match client.call::<String>("/echo", &big).await {
        Err(Error::TooLarge { size, limit }) => {
            assert!(size > limit);
            assert_eq!(limit, webmesh::DEFAULT_MAX_MESSAGE_SIZE);
        }
        other => panic!("expected too large, got {:?}", other.map(|s| s.len())),
    }
    assert!(matches!(client.emit("/echo", &big).await, Err(Error::TooLarge { .. })));
    assert_eq!(within(10, slow).await.unwrap().unwrap(), "slow");
    assert_eq!(client.call::<u64>("/count", &()).await.unwrap(), 1);
    assert_eq!(client.state(), ConnectionState::Connected);
    server.stop().await;
}

/// Smaller: a URL with a query but no path works; a wrong path says what
/// to check; closing sends 1000.
#[tokio::test]
async fn urls_and_close_codes() {
    let (close_code, got_code) = tokio::sync::oneshot::channel();
    let close_code = std::sync::Mutex::new(Some(close_code));
    let router = Router::new().on("/echo", |v: Value| async move { v });
    let builder = Server::builder().registered_handlers(false).router(router).on_disconnect(move |_conn, reason| {
        if let Some(tx) = close_code.lock().unwrap().take() {
            let _ = tx.send(format!("{reason:?}"));
        }
    });
    let server = TestServer::start(builder).await;
    let client = Client::connect(&format!("ws://{}?token=x", server.addr)).await.unwrap();
    assert_eq!(client.call::<Value>("/echo", &json!(1)).await.unwrap(), json!(1));
    client.close().await;
    let reason = within(10, got_code).await.unwrap();
    assert!(reason.contains("1000"), "{reason}");
}

/// Smaller: a refused reconnection says why in the state, and credentials
/// computed for each dial let a renewed token in.
#[tokio::test]
async fn a_refused_reconnection_says_why_and_renewed_credentials_get_in() {
    use std::sync::Mutex;
    use webmesh::{AuthError, Handshake};

    async fn start_with(
        addr: String,
        accepted: &'static str,
    ) -> Option<(SocketAddr, tokio::sync::oneshot::Sender<()>)> {
        let server = Server::builder()
            .registered_handlers(false)
            .router(Router::new().on("/echo", |v: Value| async move { v }))
            .authenticate(move |handshake: Handshake| {
                let ok = handshake.bearer_token() == Some(accepted);
                async move {
                    if ok {
                        Ok(())
                    } else {
                        Err(AuthError::forbidden("token expired"))
                    }
                }
            })
            .shutdown_timeout(Duration::ZERO)
            .addr(addr)
            .bind()
            .await
            .ok()?;
        let addr = server.local_addr();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(server.serve_with_shutdown(async move {
            let _ = stopped.await;
        }));
        Some((addr, stop))
    }

    let (addr, stop) = start_with("127.0.0.1:0".into(), "old").await.unwrap();
    let token = Arc::new(Mutex::new("old".to_owned()));
    let current = token.clone();
    let client = Client::builder(format!("ws://{addr}"))
        .reconnect(fast())
        .bearer_token_with(move || current.lock().unwrap().clone())
        .connect()
        .await
        .unwrap();
    assert_eq!(client.call::<u32>("/echo", &1).await.unwrap(), 1);
    // The server restarts and now wants the new token.
    stop.send(()).unwrap();
    wait_for_state(&client, |s| matches!(s, ConnectionState::Reconnecting { .. })).await;
    // The port may linger for a moment after the stop.
    let (_, _stop) = within(10, async {
        loop {
            match start_with(addr.to_string(), "new").await {
                Some(started) => break started,
                None => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await;
    wait_for_state(
        &client,
        |s| matches!(s, ConnectionState::Reconnecting { last_error: Some(why), .. } if why.contains("403")),
    )
    .await;
    *token.lock().unwrap() = "new".to_owned();
    wait_for_state(&client, |s| *s == ConnectionState::Connected).await;
    assert_eq!(client.call::<u32>("/echo", &2).await.unwrap(), 2);
}

/// A blocking call from the blocking client's own runtime thread (a
/// handler registered through `as_async`) would wait for the thread that
/// has to read its answer: it is refused at once, and the client carries on.
#[tokio::test]
async fn a_blocking_call_on_the_clients_own_runtime_is_refused_not_deadlocked() {
    let router = Router::new()
        .on("/poke", |conn: Connection| async move {
            let _ = conn.emit("/poked", &()).await;
        })
        .on("/echo", |v: Value| async move { v });
    let server = TestServer::with_router(router).await;
    let url = server.url();
    let probe = std::thread::spawn(move || {
        let client = webmesh::blocking::Client::connect(&url).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let inside = client.clone();
        client.as_async().on("/poked", move |(): ()| {
            let _ = tx.send(inside.call_with_timeout::<u32>("/echo", &1, Duration::from_secs(1)));
        });
        client.emit("/poke", &()).unwrap();
        let refused = rx.recv_timeout(Duration::from_secs(10)).expect("the handler never returned");
        // The client still works, within its timeouts.
        let after = client.call_with_timeout::<u32>("/echo", &2, Duration::from_secs(5));
        client.close();
        (refused, after)
    });
    within(30, loop_until_finished(&probe)).await;
    let (refused, after) = probe.join().unwrap();
    match refused {
        Err(Error::Config(message)) => assert!(message.contains("own runtime"), "{message}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(after.unwrap(), 2);
}

/// Dropping subscriptions while the outbound buffer is full still ends
/// them on the server: the unsubscribe is never lost to backpressure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_subscriptions_end_on_the_server_even_under_backpressure() {
    let router = Router::new().on("/slow", |s: String| async move {
        tokio::time::sleep(Duration::from_millis(5)).await;
        s.len()
    });
    // Two calls in flight, 5 ms each: the server reads slowly, the socket
    // buffers fill (400 x 32 KiB is more than they hold), then the client's.
    let mut builder = Server::builder().registered_handlers(false).router(router).max_calls_in_flight(2);
    let hub = builder.hub();
    let server = TestServer::start(builder).await;
    let client = Client::builder(server.url())
        .outbound_buffer(64 << 10)
        .compression_threshold(usize::MAX)
        .connect()
        .await
        .unwrap();
    let mut subscriptions = Vec::new();
    for i in 0..50 {
        subscriptions.push(client.subscribe::<u32>(&format!("/t/{i}")).await.unwrap());
    }
    assert_eq!(hub.subscription_count(), 50);
    let payload = Arc::new(incompressible(32 << 10));
    let calls: Vec<_> = (0..400)
        .map(|_| {
            let (client, payload) = (client.clone(), payload.clone());
            tokio::spawn(async move { client.call::<usize>("/slow", payload.as_str()).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(subscriptions);
    for call in calls {
        assert_eq!(within(60, call).await.unwrap().unwrap(), 32 << 10);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while hub.subscription_count() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} subscriptions left on the server",
            hub.subscription_count()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A message from the server that cannot be decoded (here a reply over the
/// client's limit once inflated) breaks the connection at once: the call
/// fails saying why, instead of waiting its whole timeout for an answer
/// that was thrown away.
#[tokio::test]
async fn an_undecodable_reply_fails_the_call_at_once() {
    let router = Router::new().on("/big", || async { "x".repeat(10 << 20) });
    let server =
        TestServer::start(Server::builder().registered_handlers(false).router(router).max_message_size(32 << 20)).await;
    let client =
        Client::builder(server.url()).timeout(Duration::from_secs(120)).no_reconnect().connect().await.unwrap();
    match within(30, client.call::<String>("/big", &())).await {
        Err(Error::Closed(Some(reason))) => {
            assert!(reason.contains("invalid message") && reason.contains("larger than"), "{reason}")
        }
        other => panic!("expected the connection to break, got {:?}", other.map(|s| s.len())),
    }
}

/// A server that reads slowly (each emit costs it a millisecond) and sends
/// nothing is alive: the client's pings wait behind megabytes it has not
/// read yet, but it keeps taking bytes, and that counts.
#[tokio::test]
async fn a_server_busy_reading_is_not_declared_dead() {
    let ran = Arc::new(AtomicU64::new(0));
    let count = ran.clone();
    // On a runtime of its own, as a server in another process would be: its
    // blocking handler must not starve the client's task.
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let router = Router::new().on("/work", move |_: String| {
                std::thread::sleep(Duration::from_millis(1));
                count.fetch_add(1, Ordering::SeqCst);
            });
            let server = TestServer::with_router(router).await;
            addr_tx.send(server.url()).unwrap();
            let _ = stopped.await;
        });
    });
    let client = Client::builder(addr_rx.await.unwrap())
        .heartbeat(Duration::from_secs(1), Duration::from_secs(1))
        .compression_threshold(usize::MAX)
        .connect()
        .await
        .unwrap();
    let states = client.state_changes();
    let payload = incompressible(4 << 10);
    // Megabytes wait in the socket buffers, so a ping waits more than the
    // heartbeat allows; the kernel lets bytes in by bursts of about half a
    // buffer, far more often than that.
    let until = tokio::time::Instant::now() + Duration::from_secs(4);
    while tokio::time::Instant::now() < until {
        within(10, client.emit("/work", payload.as_str())).await.unwrap();
    }
    let changed = states.has_changed().unwrap();
    assert!(!changed, "the connection dropped: {:?}", *states.borrow());
    assert!(ran.load(Ordering::SeqCst) > 0);
    stop.send(()).unwrap();
    within(10, loop_until_finished(&serving)).await;
}

/// Callers waiting for room in the outbound buffer do not each hold an
/// encoded copy of their message: they wait in line before encoding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_waiting_for_room_hold_no_encoded_copies() {
    /// Counts how often it is encoded.
    struct Counted(Arc<AtomicU64>, Arc<String>);
    impl serde::Serialize for Counted {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            self.0.fetch_add(1, Ordering::SeqCst);
            self.1.serialize(serializer)
        }
    }
    let never_reads = Silent::start().await;
    let client = Client::builder(never_reads.url())
        .outbound_buffer(64 << 10)
        .compression_threshold(usize::MAX)
        .no_reconnect()
        .connect()
        .await
        .unwrap();
    let encoded = Arc::new(AtomicU64::new(0));
    let payload = Arc::new(incompressible(256 << 10));
    // 100 x 256 KiB = 25 MiB: the socket buffers take a few MiB, the rest waits.
    let calls: Vec<_> = (0..100)
        .map(|_| {
            let (client, message) = (client.clone(), Counted(encoded.clone(), payload.clone()));
            tokio::spawn(async move { client.call::<Value>("/x", &message).await })
        })
        .collect();
    // However long they wait, the waiting ones stay unencoded.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let encoded = encoded.load(Ordering::SeqCst);
    assert!(encoded < 60, "{encoded} of 100 waiting messages were encoded");
    for call in &calls {
        assert!(!call.is_finished());
    }
    within(20, client.close()).await;
    for call in calls {
        assert!(matches!(within(10, call).await.unwrap(), Err(Error::Closed(_))));
    }
}
