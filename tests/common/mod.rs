//! Helpers shared by the integration tests: a real server on 127.0.0.1:0.
#![allow(dead_code, unreachable_pub)]

pub mod mesh;
pub mod nats;
pub mod python;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use webmesh::{Client, Router, Server, ServerBuilder};

/// A server running on a free loopback port, stopped when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), webmesh::Error>>,
}

impl TestServer {
    /// Serves only `router` (not the handlers declared with the macro).
    pub async fn with_router(router: Router) -> Self {
        Self::start(Server::builder().registered_handlers(false).router(router)).await
    }

    /// Serves what `builder` configures, on a free port.
    pub async fn start(builder: ServerBuilder) -> Self {
        Self::serve(builder.addr("127.0.0.1:0").bind().await.expect("bind"))
    }

    /// Serves a bound server.
    pub fn serve(server: Server) -> Self {
        let addr = server.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve_with_shutdown(async move {
            let _ = stopped.await;
        }));
        Self { addr, stop: Some(stop), task }
    }

    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.url()).await.expect("connect")
    }

    pub async fn json_client(&self) -> Client {
        Client::builder(self.url()).json().connect().await.expect("connect")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

pub type Raw = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A bare WebSocket to the server on `port`, for frames no webmesh client sends.
pub async fn raw(port: u16) -> Raw {
    tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}")).await.unwrap().0
}

/// `bytes` compressed with zlib, as webmesh compresses frames.
pub fn zlib(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// `target/debug`, where `cargo test` put the examples.
fn build_dir() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(|deps| deps.parent()).unwrap().to_path_buf()
}

/// Starts example `name` on a free port and waits until it listens.
pub fn start_example(name: &str) -> (python::Killed, u16) {
    start_example_with(name, &[])
}

/// Starts example `name` with `args` on a free port and waits until it listens.
pub fn start_example_with(name: &str, args: &[&str]) -> (python::Killed, u16) {
    start_example_env(name, args, &[])
}

/// Starts example `name` with `args` and environment variables `env` on a
/// free port, and waits until it listens.
pub fn start_example_env(name: &str, args: &[&str], env: &[(&str, &str)]) -> (python::Killed, u16) {
    use std::process::{Command, Stdio};
    use std::time::Instant;
    let example = build_dir().join("examples").join(name);
    assert!(example.exists(), "{} is missing: cargo test builds it", example.display());
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(example)
        .args(args)
        .env("WEBMESH_ADDR", format!("127.0.0.1:{port}"))
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed() < Duration::from_secs(20), "the {name} example did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    (python::Killed(child), port)
}

/// A WebSocket server that accepts one connection and never reads from it
/// (for at most a minute). [`Silent::vanish`] drops the connection and the
/// listener, freeing the port.
pub struct Silent {
    pub addr: SocketAddr,
    vanish: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Silent {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (vanish, vanished) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let socket = tokio_tungstenite::accept_async(tcp).await.unwrap();
            let _ = tokio::time::timeout(Duration::from_secs(60), vanished).await;
            drop(socket);
            drop(listener);
        });
        Self { addr, vanish: Some(vanish), task }
    }

    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Closes the connection and the listener, and waits until they are gone.
    pub async fn vanish(mut self) {
        if let Some(vanish) = self.vanish.take() {
            let _ = vanish.send(());
        }
        within(10, &mut self.task).await.unwrap();
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A server on `addr` that can be stopped and started again on the same
/// port; stopping abandons calls under way at once, as a crash would.
pub struct Restartable {
    pub addr: SocketAddr,
    pub hub: webmesh::Hub,
    stop: oneshot::Sender<()>,
    serving: JoinHandle<Result<(), webmesh::Error>>,
}

impl Restartable {
    pub async fn start(addr: &str, router: Router) -> Self {
        let builder = Server::builder().registered_handlers(false).router(router);
        let mut builder = builder.shutdown_timeout(Duration::ZERO);
        let hub = builder.hub();
        let server = builder.addr(addr).bind().await.unwrap();
        let addr = server.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = tokio::spawn(server.serve_with_shutdown(async move {
            let _ = stopped.await;
        }));
        Self { addr, hub, stop, serving }
    }

    /// Stops the server and returns its address, to start another there.
    pub async fn stop(self) -> SocketAddr {
        self.stop.send(()).unwrap();
        within(10, self.serving).await.unwrap().unwrap();
        self.addr
    }
}

/// Runs `test`, an ignored test of this test binary, as a child process
/// with `env`, and returns it (killed when dropped) once it printed a line
/// with `ready`, and what followed `ready` on that line.
pub fn child_test(test: &str, env: &[(&str, &str)]) -> (python::Killed, String) {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    // Killed (and waited for) when dropped, a failed wait included.
    let mut child = python::Killed(
        Command::new(std::env::current_exe().unwrap())
            .args([test, "--exact", "--ignored", "--nocapture", "--test-threads=1"])
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    loop {
        let line = lines.next().expect("the child printed `ready`").unwrap();
        // The harness prints `test <name> ... ` before it.
        if let Some((_, rest)) = line.split_once("ready") {
            return (child, rest.trim().to_owned());
        }
    }
}

/// Waits until `done` holds, checking every 20 ms, failing after `secs`.
pub async fn until(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Fails the test instead of hanging it when `future` does not finish.
pub async fn within<F: std::future::Future>(secs: u64, future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(secs), future).await.expect("timed out")
}
