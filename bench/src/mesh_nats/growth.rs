//! How an idle mesh's own traffic grows with its nodes: 3 and 20 nodes, in
//! this process, joined by direct links or through one nats-server, with
//! the default timings. Measured over a window once all are `up`: the
//! connections held on loopback, the packets and bytes loopback carried,
//! and the CPU of the nodes and of nats-server.
//!
//! Loopback's counters are the machine's: nothing else may use it meanwhile.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::load::ServerProcess;
use crate::{nats_server, proc};

/// The sizes of mesh measured.
const SIZES: [usize; 2] = [3, 20];

/// How long each mesh is measured, once all its nodes are `up`: four
/// status intervals.
const WINDOW: Duration = Duration::from_secs(20);

/// What loopback and the processes did over the window, per second.
#[derive(Debug, Clone, Copy)]
struct Measured {
    connections: usize,
    packets_per_second: f64,
    kib_per_second: f64,
    /// The nodes', in ms of CPU per second.
    nodes_cpu_ms: f64,
    nats_server_cpu_ms: f64,
}

/// Measures each size over links and over NATS, and prints the table.
pub(super) fn table(binary: &Path, runtime: &tokio::runtime::Runtime) {
    let mut rows = Vec::new();
    for n in SIZES {
        let links = runtime.block_on(measure(n, None));
        eprintln!("{n} nodes over links: {links:?}");
        let store = std::env::temp_dir().join(format!("webmesh-bench-jetstream-{}-{n}", std::process::id()));
        let nats = nats_server::start_jetstream(binary, &store);
        let over_nats = runtime.block_on(measure(n, Some(&nats)));
        drop(nats);
        let _ = std::fs::remove_dir_all(&store);
        eprintln!("{n} nodes over NATS: {over_nats:?}");
        rows.push((n, links, over_nats));
    }
    println!(
        "\nAn idle mesh's own traffic (reports, heartbeats, records), default timings, over {} s",
        WINDOW.as_secs()
    );
    println!("| nodes | | TCP connections | loopback packets/s | loopback KiB/s | nodes' CPU (ms/s) | nats-server's CPU (ms/s) |");
    println!("|---|---|---|---|---|---|---|");
    for (n, links, nats) in rows {
        for (name, m) in [("direct links", links), ("over NATS", nats)] {
            println!(
                "| {n} | {name} | {} | {:.0} | {:.1} | {:.1} | {:.1} |",
                m.connections, m.packets_per_second, m.kib_per_second, m.nodes_cpu_ms, m.nats_server_cpu_ms
            );
        }
    }
}

/// `n` nodes joined by links to the first, or through `nats`.
async fn measure(n: usize, nats: Option<&ServerProcess>) -> Measured {
    let before = established();
    let mut nodes = Vec::new();
    for i in 0..n {
        let server = webmesh::Server::builder().registered_handlers(false).addr("127.0.0.1:0");
        let builder = webmesh::Mesh::builder().server(server).name(format!("n{i}"));
        let builder = match (nats, nodes.first()) {
            (Some(nats), _) => builder.nats(format!("nats://127.0.0.1:{}", nats.port)),
            (None, Some(first)) => builder.peer(webmesh::Mesh::url(first)),
            (None, None) => builder,
        };
        nodes.push(builder.start().await.expect("start a node"));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while !nodes.iter().all(|node| {
        let seen = node.nodes();
        seen.len() == n && seen.iter().all(|s| s.state == webmesh::NodeState::Up)
    }) {
        assert!(Instant::now() < deadline, "the {n} nodes never all saw each other up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Joining is over: what follows is the mesh's steady cost.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let me = std::process::id();
    let server = nats.map_or(0, |nats| nats.pid);
    let cpu = |pid: u32| if pid == 0 { 0 } else { proc::thread_cpu_nanos(pid).values().sum::<u64>() };
    let (lo, nodes_cpu, server_cpu, started) = (loopback(), cpu(me), cpu(server), Instant::now());
    let connections = established().saturating_sub(before) / 2;
    tokio::time::sleep(WINDOW).await;
    let (lo_after, nodes_after, server_after) = (loopback(), cpu(me), cpu(server));
    let seconds = started.elapsed().as_secs_f64();
    for node in &nodes {
        node.shutdown().await;
    }
    Measured {
        connections,
        packets_per_second: (lo_after.0 - lo.0) as f64 / seconds,
        kib_per_second: (lo_after.1 - lo.1) as f64 / 1024.0 / seconds,
        nodes_cpu_ms: (nodes_after - nodes_cpu) as f64 / 1e6 / seconds,
        nats_server_cpu_ms: (server_after - server_cpu) as f64 / 1e6 / seconds,
    }
}

/// Loopback's packets and bytes sent so far.
fn loopback() -> (u64, u64) {
    let read = |name: &str| {
        std::fs::read_to_string(format!("/sys/class/net/lo/statistics/{name}"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    };
    (read("tx_packets"), read("tx_bytes"))
}

/// TCP sockets established on this machine (a loopback connection is two).
fn established() -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default()
        + &std::fs::read_to_string("/proc/net/tcp6").unwrap_or_default();
    // The fourth field is the state; 01 is ESTABLISHED.
    table.lines().skip(1).filter(|line| line.split_whitespace().nth(3) == Some("01")).count()
}
