//! What the README promises, as a new user would try it: the echo example
//! serves the webmesh client and the Python 0.1.2 client, in every codec.
//! (The CLI's own tests are in `webmesh/tests/cli.rs`.)

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::python::{run_client_with, Killed};

/// `target/debug`, where `cargo test` put the example.
fn build_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(|deps| deps.parent()).unwrap().to_path_buf()
}

fn start_echo() -> (Killed, u16) {
    start_example("echo", &[])
}

fn start_example(name: &str, args: &[&str]) -> (Killed, u16) {
    let example = build_dir().join("examples").join(name);
    assert!(example.exists(), "{} is missing: cargo test builds it", example.display());
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(example)
        .args(args)
        .env("WEBMESH_ADDR", format!("127.0.0.1:{port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed() < Duration::from_secs(20), "the {name} example did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    (Killed(child), port)
}

#[test]
fn the_echo_example_serves_rust_and_python_clients() {
    let (_echo, port) = start_echo();
    let url = format!("ws://127.0.0.1:{port}");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        for client in [
            webmesh::Client::connect(&url).await.unwrap(),
            webmesh::Client::builder(&url).json().connect().await.unwrap(),
        ] {
            let reply: serde_json::Value = client.call("/echo", &serde_json::json!({"blop": 56})).await.unwrap();
            assert_eq!(reply, serde_json::json!({"blop": 56}));
            assert_eq!(client.call::<u8>("/", &7).await.unwrap(), 7);
            assert!(matches!(client.call::<()>("/missing", &()).await, Err(webmesh::Error::NotFound { .. })));
        }
    });

    for codec in ["msgpack", "json"] {
        let seen = run_client_with(port, codec, &["echo-only"]);
        assert_eq!(seen["echo"], serde_json::json!({"blop": 56}), "{codec}");
        assert_eq!(seen["root"], serde_json::json!([1, "two", null, 3.5]), "{codec}");
        assert_eq!(seen["unknown"], "Path not found", "{codec}");
    }
}

#[test]
fn the_chat_example_authorises_joins_and_publishes_to_rooms() {
    use std::io::{BufRead, BufReader};
    let (mut chat, _port) = start_example("chat", &["--demo"]);
    let lines: Vec<String> =
        BufReader::new(chat.0.stdout.take().unwrap()).lines().take(3).map(Result::unwrap).collect();
    assert_eq!(
        lines,
        [
            "bob, not logged in: handler error forbidden: the vip room needs a login: call /login first",
            "1 connection(s) heard bob",
            r#"ada got on /rooms/lobby: Message { from: "bob", text: "hello" }"#,
        ]
    );
}
