//! What the README promises, as a new user would try it: the echo example
//! serves the webmesh client and the Python 0.1.2 client, in every codec.
//! (The CLI's own tests are in `webmesh/tests/cli.rs`.)

mod common;

use std::time::Duration;

use common::python::{run_client_with, Killed};
use common::start_example_with as start_example;

fn start_echo() -> (Killed, u16) {
    start_example("echo", &[])
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

#[test]
fn the_echo_example_keeps_serving_python_while_a_hostile_client_attacks() {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let (_echo, port) = start_echo();
    let stop = Arc::new(AtomicBool::new(false));
    let attacker = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            // Raw WebSocket frames, masked as clients must: garbage, lies, bombs.
            let frames: Vec<(u8, Vec<u8>)> = vec![
                (0x82, vec![0xc1, 0xc1, 0xc1]),
                (0x82, vec![0xdd, 0xff, 0xff, 0xff, 0xff, 0x01]),
                (0x81, b"hello there".to_vec()),
                (0x81, b"deadbeef".to_vec()),
                (0x82, vec![0x78, 0x9c, 0xff, 0xff]),
                (0x81, vec![0xff, 0xfe]),
                (0x81, format!("[1,1,\"/echo\",{}{}]", "[".repeat(5000), "]".repeat(5000)).into_bytes()),
            ];
            let mut rounds = 0;
            while !stop.load(Ordering::Relaxed) {
                for (opcode, payload) in &frames {
                    let Ok(mut tcp) = std::net::TcpStream::connect(("127.0.0.1", port)) else { continue };
                    let _ = tcp.set_read_timeout(Some(Duration::from_secs(2)));
                    let handshake = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                                     Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
                    let _ = tcp.write_all(handshake.as_bytes());
                    let mut response = [0u8; 512];
                    let _ = tcp.read(&mut response);
                    let mut frame = vec![*opcode];
                    match payload.len() {
                        n if n < 126 => frame.push(0x80 | n as u8),
                        n => {
                            frame.push(0x80 | 126);
                            frame.extend((n as u16).to_be_bytes());
                        }
                    }
                    frame.extend([0, 0, 0, 0]); // a zero mask leaves the payload as it is
                    frame.extend(payload);
                    let _ = tcp.write_all(&frame);
                    let _ = tcp.read(&mut response);
                }
                rounds += 1;
            }
            rounds
        })
    };
    for codec in ["msgpack", "json"] {
        let seen = run_client_with(port, codec, &["echo-only"]);
        assert_eq!(seen["echo"], serde_json::json!({"blop": 56}), "{codec}");
        assert_eq!(seen["unknown"], "Path not found", "{codec}");
    }
    stop.store(true, Ordering::Relaxed);
    assert!(attacker.join().unwrap() > 0, "the attack ran while the Python client was served");
}
