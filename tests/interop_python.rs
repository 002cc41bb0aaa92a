//! Interoperability with the real Python package webmesh 0.1.2, both ways.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::python::{run_client, start_server};
use common::TestServer;
use serde_json::{json, Value};
use webmesh::{Client, Error, LegacyFormat, Router, Server, State};

async fn rust_server() -> TestServer {
    let router = Router::new()
        .on("/", |data: Value| async move { data })
        .on("/echo", |data: Value| async move { data })
        .on("/inc", |State(n): State<Arc<AtomicU64>>, hub: webmesh::Hub| async move {
            let count = n.fetch_add(1, Ordering::SeqCst) + 1;
            // Native subscribers watch the counter; 0.1.2 clients never subscribe.
            let _ = hub.publish("/counter", &count);
        })
        .on("/getinc", |State(n): State<Arc<AtomicU64>>| async move { n.load(Ordering::SeqCst) })
        // A native-only feature must not disturb 0.1.2 clients.
        .on("/typed", |(a, b): (u8, u8)| async move { a + b });
    let builder = Server::builder().registered_handlers(false).router(router).state(Arc::new(AtomicU64::new(0)));
    TestServer::start(builder).await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_python_client_calls_a_rust_server_in_both_codecs() {
    let server = rust_server().await;
    let watcher = server.client().await;
    let mut counter = watcher.subscribe::<u64>("/counter").await.unwrap();
    for codec in ["msgpack", "json"] {
        let port = server.addr.port();
        let seen = tokio::task::spawn_blocking(move || run_client(port, codec)).await.unwrap();
        assert_eq!(seen["echo"], json!({"blop": 56}), "{codec}");
        assert_eq!(seen["root"], json!([1, "two", null, 3.5]), "{codec}");
        assert_eq!(seen["unknown"], json!("Path not found"), "{codec}");
        assert_eq!(seen["inc"], json!(1), "{codec}: emit /inc then call /getinc");
        assert_eq!(seen["call_async"], json!(["async"]), "{codec}");
    }
    // The subscriber saw both emits of the Python clients.
    for expected in [1, 2] {
        let event = tokio::time::timeout(Duration::from_secs(10), counter.recv()).await.unwrap().unwrap().unwrap();
        assert_eq!(event.data, expected);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_rust_client_in_legacy_mode_calls_a_python_server() {
    for (codec, format) in [("msgpack", LegacyFormat::MsgPack), ("json", LegacyFormat::Json)] {
        let (_server, port) = tokio::task::spawn_blocking(move || start_server(codec)).await.unwrap();
        let client = Client::builder(format!("ws://127.0.0.1:{port}"))
            .legacy(format)
            .timeout(Duration::from_secs(10))
            .connect()
            .await
            .unwrap();
        let echoed: Value = client.call("/echo", &json!({"blop": 56})).await.unwrap();
        assert_eq!(echoed, json!({"blop": 56}), "{codec}");
        match client.call::<Value>("/nope", &1).await {
            Err(Error::NotFound { path }) => assert_eq!(path, "/nope"),
            other => panic!("{codec}: expected not found, got {other:?}"),
        }
        client.emit("/inc", &()).await.unwrap();
        let mut n = 0u64;
        for _ in 0..200 {
            n = client.call("/getinc", &()).await.unwrap();
            if n == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(n, 1, "{codec}: emit /inc then call /getinc");
        // Calls from many tasks are made one at a time, each getting its own answer.
        let calls = (0..10).map(|i| {
            let client = client.clone();
            async move { client.call::<u32>("/echo", &i).await.unwrap() }
        });
        assert_eq!(futures_util::future::join_all(calls).await, (0..10).collect::<Vec<u32>>(), "{codec}");
        // The blocking client too.
        let url = format!("ws://127.0.0.1:{port}");
        let echoed = tokio::task::spawn_blocking(move || {
            let client = webmesh::blocking::Client::connect_with(Client::builder(url).legacy(format)).unwrap();
            client.call::<String>("/echo", "blocking").unwrap()
        });
        assert_eq!(echoed.await.unwrap(), "blocking");
    }
}

/// A 0.1.2 server sends no call ids: a late answer to a call that timed out
/// would look like the answer to the next call on that path. The client
/// drops such a connection, so no later call ever gets another's answer.
#[tokio::test(flavor = "multi_thread")]
async fn legacy_mode_never_gives_a_call_another_calls_answer() {
    for (codec, format) in [("msgpack", LegacyFormat::MsgPack), ("json", LegacyFormat::Json)] {
        let (_server, port) = tokio::task::spawn_blocking(move || start_server(codec)).await.unwrap();
        let client = Client::builder(format!("ws://127.0.0.1:{port}"))
            .legacy(format)
            .reconnect(webmesh::Reconnect {
                initial_delay: Duration::from_millis(10),
                max_delay: Duration::from_millis(100),
            })
            .timeout(Duration::from_secs(10))
            .connect()
            .await
            .unwrap();
        for round in 0..3 {
            // Answered after 150 ms, after the caller gave up, while the
            // quick calls below are under way.
            let started = std::time::Instant::now();
            let late = client
                .call_with_timeout::<i64>("/delay", &json!({"n": -1, "sleep": 0.15}), Duration::from_millis(50))
                .await;
            assert!(matches!(late, Err(Error::Timeout(_))), "{codec}: {late:?}");
            let mut n = 0i64;
            while n < 200 || started.elapsed() < Duration::from_millis(600) {
                let got: i64 = client.call("/delay", &json!({"n": n, "sleep": 0})).await.unwrap();
                assert_eq!(got, n, "{codec}, round {round}: call {n} got another call's answer");
                n += 1;
            }
        }
    }
}
