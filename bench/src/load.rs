//! Starting servers, connecting to them, and the call benchmark.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::system::System;
use crate::{proc, wire, Options};

pub(crate) type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A server process pinned to core 0, killed when dropped.
pub(crate) struct ServerProcess {
    child: Child,
    pub(crate) pid: u32,
    pub(crate) port: u16,
}

impl ServerProcess {
    pub(crate) fn start(system: System) -> ServerProcess {
        let exe = std::env::current_exe().expect("own path");
        let mut child = Command::new("taskset")
            .args(["-c", "0"])
            .arg(exe)
            .args(["server", system.name()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("read");
        let port = line.trim().strip_prefix("READY ").and_then(|p| p.parse().ok()).expect("READY line");
        // `taskset` execs the server, so the pid is the server's.
        ServerProcess::from_child(child, port)
    }

    /// A server started otherwise, whose `child` is the server itself.
    pub(crate) fn from_child(child: Child, port: u16) -> ServerProcess {
        ServerProcess { pid: child.id(), child, port }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Opens a WebSocket to the system, with socket.io's handshake where needed.
pub(crate) async fn connect(system: System, port: u16) -> Socket {
    let url = format!("ws://127.0.0.1:{port}{}", system.path());
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.expect("connect");
    if system == System::Socketioxide {
        // Engine.IO open packet, then connect to the main namespace.
        expect_text(&mut socket, "0").await;
        socket.send(Message::text("40")).await.expect("send");
        expect_text(&mut socket, "40").await;
    }
    socket
}

async fn expect_text(socket: &mut Socket, prefix: &str) {
    while let Some(Ok(message)) = socket.next().await {
        if let Message::Text(text) = message {
            if text.starts_with(prefix) {
                return;
            }
        }
    }
    panic!("the server closed during the handshake");
}

/// Answers socket.io's pings; `true` if `message` was one.
pub(crate) async fn answer_ping(system: System, socket: &mut Socket, message: &Message) -> bool {
    match (system, message) {
        (System::Socketioxide, Message::Text(text)) if text.as_str() == "2" => {
            let _ = socket.send(Message::text("3")).await;
            true
        }
        _ => false,
    }
}

/// What one run of the call benchmark measured.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallResult {
    pub(crate) calls_per_second: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub(crate) cpu_us_per_call: f64,
}

pub(crate) async fn calls(system: System, server: &ServerProcess, options: &Options) -> CallResult {
    let measuring = Arc::new(AtomicBool::new(false));
    let stopping = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let request = wire::request(system);
    let mut tasks = Vec::new();
    for _ in 0..options.connections {
        let mut socket = connect(system, server.port).await;
        let (measuring, stopping, count, request) =
            (measuring.clone(), stopping.clone(), count.clone(), request.clone());
        let in_flight = options.in_flight;
        tasks.push(tokio::spawn(async move {
            let mut sent = VecDeque::with_capacity(in_flight);
            let mut latencies = Vec::new();
            for _ in 0..in_flight {
                sent.push_back(Instant::now());
                socket.send(request.clone()).await.expect("send");
            }
            while let Some(Ok(message)) = socket.next().await {
                if answer_ping(system, &mut socket, &message).await || !wire::is_reply(system, &message) {
                    continue;
                }
                let started = sent.pop_front().expect("a call in flight");
                if measuring.load(Ordering::Relaxed) {
                    latencies.push(started.elapsed().as_micros() as u32);
                    count.fetch_add(1, Ordering::Relaxed);
                }
                if stopping.load(Ordering::Relaxed) {
                    if sent.is_empty() {
                        break;
                    }
                    continue;
                }
                sent.push_back(Instant::now());
                socket.send(request.clone()).await.expect("send");
            }
            latencies
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (cpu_before, started) = (proc::cpu_seconds(server.pid), Instant::now());
    measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(options.measure()).await;
    measuring.store(false, Ordering::Relaxed);
    let (cpu_after, elapsed) = (proc::cpu_seconds(server.pid), started.elapsed());
    stopping.store(true, Ordering::Relaxed);
    let calls = count.load(Ordering::Relaxed);
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("load task"));
    }
    latencies.sort_unstable();
    let percentile = |p: f64| latencies.get(((latencies.len() as f64 - 1.0) * p) as usize).copied().unwrap_or(0) as f64;
    CallResult {
        calls_per_second: calls as f64 / elapsed.as_secs_f64(),
        p50_us: percentile(0.50),
        p99_us: percentile(0.99),
        cpu_us_per_call: (cpu_after - cpu_before) * 1e6 / calls.max(1) as f64,
    }
}
