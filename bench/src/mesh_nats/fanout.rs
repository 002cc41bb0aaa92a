//! One publisher on node A to 1,000 subscribers spread over 3 nodes, against
//! a raw publisher to 1,000 NATS subscribers spread over 3 processes.
//!
//! Counted per delivery: the CPU of the 3 nodes, or of the 3 raw subscriber
//! processes, and apart, that of nats-server (which sends each event 3
//! times for the mesh, once per node with interest, and 1,000 times for the
//! raw subscribers). The publisher runs in this process on both sides, a
//! client of node A or a raw async-nats client, and is not counted.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use super::{Helper, FANOUT_TOPIC};
use crate::fanout::{count_events, nats_subscriber, publish_in_windows, publish_nats_in_windows, subscribe};
use crate::load::{connect, ServerProcess};
use crate::system::System;
use crate::{nats_server, proc, report, wire, Options};

/// The nodes of the mesh, and the processes of the raw subscribers.
const NODES: usize = 3;

/// The subject of the raw fan-out.
const SUBJECT: &str = "bench.fanout";

/// What one run measured, for one side.
#[derive(Debug, Clone, Copy)]
struct Measured {
    deliveries_per_second: f64,
    /// The nodes' CPU, or the raw subscribers'.
    cpu_us_per_delivery: f64,
    nats_server_us_per_delivery: f64,
}

/// Runs the benchmark `options.runs` times and prints the medians.
pub(super) fn table(binary: &Path, runtime: &tokio::runtime::Runtime, options: &Options) {
    let (mut mesh, mut raw) = (Vec::new(), Vec::new());
    for run in 1..=options.runs {
        let nats = nats_server::start(binary);
        let measured = runtime.block_on(webmesh_fanout(&nats, options));
        eprintln!("run {run}: webmesh over NATS fan-out {measured:?}");
        mesh.push(measured);
        let measured = runtime.block_on(raw_fanout(&nats, options));
        eprintln!("run {run}: raw async-nats fan-out {measured:?}");
        raw.push(measured);
    }
    let median = |runs: &[Measured], f: fn(&Measured) -> f64| report::median(runs.iter().map(f).collect());
    let row = |runs: &[Measured]| {
        (
            median(runs, |m| m.deliveries_per_second),
            median(runs, |m| m.cpu_us_per_delivery),
            median(runs, |m| m.nats_server_us_per_delivery),
        )
    };
    let ((mesh_rate, mesh_cpu, mesh_server), (raw_rate, raw_cpu, raw_server)) = (row(&mesh), row(&raw));
    println!(
        "\nOne publisher to {} subscribers over {NODES} nodes or processes, {} events, one nats-server, medians of {} runs",
        options.subscribers, options.events, options.runs
    );
    println!("| | deliveries/s | CPU per delivery, without nats-server (us) | nats-server's CPU per delivery (us) |");
    println!("|---|---|---|---|");
    println!(
        "| webmesh over NATS (3 nodes, WebSocket subscribers) | {mesh_rate:.0} | {mesh_cpu:.2} | {mesh_server:.2} |"
    );
    println!("| raw async-nats (3 processes of NATS subscribers) | {raw_rate:.0} | {raw_cpu:.2} | {raw_server:.2} |");
    println!(
        "\nwebmesh over NATS costs {:.2}x raw NATS per delivery without nats-server, {:.2}x with it",
        mesh_cpu / raw_cpu,
        (mesh_cpu + mesh_server) / (raw_cpu + raw_server)
    );
}

/// The CPU time of the processes `pids`, in nanoseconds.
fn cpu_nanos(pids: &[u32]) -> u64 {
    pids.iter().map(|pid| proc::thread_cpu_nanos(*pid).values().sum::<u64>()).sum()
}

/// 3 nodes, each with a third of the subscribers; a client of the first
/// publishes.
async fn webmesh_fanout(nats: &ServerProcess, options: &Options) -> Measured {
    let url = format!("nats://127.0.0.1:{}", nats.port);
    let mut nodes: Vec<Helper> = (0..NODES).map(|_| Helper::start(&["mesh-node", "--nats", &url])).collect();
    let ports: Vec<u16> = nodes
        .iter_mut()
        .map(|node| node.line().strip_prefix("READY ").and_then(|p| p.parse().ok()).expect("a node's port"))
        .collect();
    let system = System::WebmeshMsgpack;
    let delivered = Arc::new(AtomicU64::new(0));
    let mut subscribers = Vec::new();
    for i in 0..options.subscribers {
        let mut socket = connect(system, ports[i % NODES]).await;
        subscribe(&mut socket, FANOUT_TOPIC).await;
        subscribers.push(count_events(system, socket, delivered.clone()));
    }
    let mut publisher = connect(system, ports[0]).await;
    let event = json!([8, 1, FANOUT_TOPIC, wire::small_payload()]);
    let event = Message::binary(rmp_serde::to_vec_named(&event).expect("encode"));
    // Each node subscribes on NATS for its subscribers: until nats-server
    // has every node's subscription, an event reaches only some.
    let per_event = options.subscribers as u64;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let before = delivered.load(Ordering::Relaxed);
        publisher.send(event.clone()).await.expect("publish");
        // The acknowledgement, then time for the deliveries.
        while tokio::time::timeout(Duration::from_millis(100), publisher.next()).await.is_ok() {}
        if delivered.load(Ordering::Relaxed) - before == per_event {
            break;
        }
        assert!(Instant::now() < deadline, "the nodes never all had the publisher's events");
    }
    let pids: Vec<u32> = nodes.iter().map(Helper::pid).collect();
    let (cpu, server, started) = (cpu_nanos(&pids), cpu_nanos(&[nats.pid]), Instant::now());
    publish_in_windows(&mut publisher, &event, options.events, &delivered, per_event, "webmesh over NATS").await;
    let measured = measured(options, cpu_nanos(&pids) - cpu, cpu_nanos(&[nats.pid]) - server, started);
    for subscriber in subscribers {
        subscriber.abort();
    }
    measured
}

/// 3 processes, each with a third of the subscribers, one NATS connection
/// per subscriber; an async-nats client of this process publishes.
async fn raw_fanout(nats: &ServerProcess, options: &Options) -> Measured {
    let address = format!("127.0.0.1:{}", nats.port);
    let delivered = Arc::new(AtomicU64::new(0));
    let mut processes = Vec::new();
    for i in 0..NODES {
        let count = options.subscribers / NODES + usize::from(i < options.subscribers % NODES);
        let mut process = Helper::start(&["nats-subscribers", "--nats", &address, "--count", &count.to_string()]);
        assert_eq!(process.line(), "READY");
        // Each line is the process's deliveries so far.
        let (lines, delivered) = (process.take_lines(), delivered.clone());
        std::thread::spawn(move || {
            let mut last = 0;
            for count in lines.map_while(Result::ok).filter_map(|line| line.parse::<u64>().ok()) {
                delivered.fetch_add(count - last, Ordering::Relaxed);
                last = count;
            }
        });
        processes.push(process);
    }
    let (publisher, _) = nats_subscriber(&address, "bench.publisher").await;
    let payload = bytes::Bytes::from(rmp_serde::to_vec_named(&wire::small_payload()).expect("encode"));
    let per_event = options.subscribers as u64;
    let pids: Vec<u32> = processes.iter().map(Helper::pid).collect();
    let (cpu, server, started) = (cpu_nanos(&pids), cpu_nanos(&[nats.pid]), Instant::now());
    publish_nats_in_windows(&publisher, SUBJECT, &payload, options.events, &delivered, per_event).await;
    measured(options, cpu_nanos(&pids) - cpu, cpu_nanos(&[nats.pid]) - server, started)
}

fn measured(options: &Options, cpu_nanos: u64, server_nanos: u64, started: Instant) -> Measured {
    let deliveries = (options.events * options.subscribers) as f64;
    Measured {
        deliveries_per_second: deliveries / started.elapsed().as_secs_f64(),
        cpu_us_per_delivery: cpu_nanos as f64 / 1e3 / deliveries,
        nats_server_us_per_delivery: server_nanos as f64 / 1e3 / deliveries,
    }
}

/// The body of `webmesh-bench nats-subscribers`: `count` NATS connections,
/// each subscribed to [`SUBJECT`]; prints `READY`, then the number of
/// deliveries so far each time it is a multiple of `count` (an event has
/// reached them all).
pub(crate) fn subscribers(address: &str, count: usize) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let delivered = Arc::new(AtomicU64::new(0));
        let mut clients = Vec::new();
        for _ in 0..count {
            let (client, mut events) = nats_subscriber(address, SUBJECT).await;
            let delivered = delivered.clone();
            tokio::spawn(async move {
                while events.next().await.is_some() {
                    let so_far = delivered.fetch_add(1, Ordering::Relaxed) + 1;
                    if so_far % count as u64 == 0 {
                        println!("{so_far}");
                    }
                }
            });
            clients.push(client);
        }
        println!("READY");
        std::future::pending::<()>().await;
    });
}
