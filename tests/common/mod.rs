//! Helpers shared by the integration tests: a real server on 127.0.0.1:0.
#![allow(dead_code, unreachable_pub)]

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
        let server = builder.addr("127.0.0.1:0").bind().await.expect("bind");
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
    use std::process::{Command, Stdio};
    use std::time::Instant;
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
    (python::Killed(child), port)
}

/// Fails the test instead of hanging it when `future` does not finish.
pub async fn within<F: std::future::Future>(secs: u64, future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(secs), future).await.expect("timed out")
}
