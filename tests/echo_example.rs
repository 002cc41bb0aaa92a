//! What the README promises, as a new user would try it: the echo example
//! serves, the CLI calls it, and the Python 0.1.2 client calls it in both codecs.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::python::{run_client_with, Killed};

/// `target/debug`, where cargo put the example and the CLI.
fn build_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(|deps| deps.parent()).unwrap().to_path_buf()
}

fn start_echo() -> (Killed, u16) {
    let example = build_dir().join("examples/echo");
    assert!(example.exists(), "{} is missing: cargo test builds it", example.display());
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(example)
        .env("WEBMESH_ADDR", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed() < Duration::from_secs(20), "the echo example did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    (Killed(child), port)
}

fn cli(args: &[&str]) -> std::process::Output {
    let cli = build_dir().join("webmesh");
    assert!(cli.exists(), "{} is missing: run `cargo test --workspace --all-features`", cli.display());
    Command::new(cli).args(args).output().unwrap()
}

#[test]
fn the_echo_example_serves_the_cli_and_the_python_client() {
    let (_echo, port) = start_echo();
    let url = format!("ws://127.0.0.1:{port}");

    for codec in ["msgpack", "json"] {
        let out = cli(&["call", "--codec", codec, &url, "/echo", r#"{"blop": 56}"#]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "{\"blop\":56}\n");
        let out = cli(&["call", "--legacy", codec, &url, "/", "[1,2]"]);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "[1,2]\n", "{}", String::from_utf8_lossy(&out.stderr));
    }
    let out = cli(&["emit", &url, "/echo", "1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout.is_empty());

    let out = cli(&["call", &url, "/missing"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "error: no handler for `/missing`\n");
    let out = cli(&["call", &url, "/echo", "{not json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error: the payload is not JSON"));

    for codec in ["msgpack", "json"] {
        let seen = run_client_with(port, codec, &["echo-only"]);
        assert_eq!(seen["echo"], serde_json::json!({"blop": 56}), "{codec}");
        assert_eq!(seen["root"], serde_json::json!([1, "two", null, 3.5]), "{codec}");
        assert_eq!(seen["unknown"], "Path not found", "{codec}");
    }
}

#[test]
fn the_cli_fails_cleanly_when_nothing_listens() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = cli(&["call", "--timeout", "5", &format!("ws://127.0.0.1:{port}"), "/echo"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with("error: could not connect"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
