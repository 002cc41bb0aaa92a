//! A call across nodes (a client → node A → NATS → node B → back) against
//! the same with raw async-nats (a requester and a responder process), as
//! the CPU per call of the processes around NATS. The NATS server's own CPU
//! is left out: it routes the same messages for both. The same client load
//! on a route node A serves itself measures the client's WebSocket hop
//! alone, which raw NATS does not have: the rest is what crossing NATS
//! costs webmesh.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;

use super::Helper;
use crate::{nats_server, report, wire, Options};

/// The subject of the raw responder.
const SUBJECT: &str = "bench.echo";

/// What one run measured, for one side.
#[derive(Debug, Clone, Copy)]
struct Measured {
    calls_per_second: f64,
    cpu_us_per_call: f64,
}

/// Runs the benchmark `options.runs` times and prints the medians.
pub(super) fn table(binary: &Path, runtime: &tokio::runtime::Runtime, options: &Options) {
    let (mut mesh, mut local, mut raw) = (Vec::new(), Vec::new(), Vec::new());
    for run in 1..=options.runs {
        let nats = nats_server::start(binary);
        let url = format!("nats://127.0.0.1:{}", nats.port);
        let measured = runtime.block_on(webmesh_calls(&url, Served::ByNodeB, options));
        eprintln!("run {run}: webmesh over NATS {measured:?}");
        mesh.push(measured);
        let measured = runtime.block_on(webmesh_calls(&url, Served::ByNodeA, options));
        eprintln!("run {run}: webmesh, served by node A itself {measured:?}");
        local.push(measured);
        let measured = raw_calls(&url, options);
        eprintln!("run {run}: raw async-nats {measured:?}");
        raw.push(measured);
    }
    let median = |runs: &[Measured], f: fn(&Measured) -> f64| report::median(runs.iter().map(f).collect());
    let cpu = |runs: &[Measured]| median(runs, |m| m.cpu_us_per_call);
    let rate = |runs: &[Measured]| median(runs, |m| m.calls_per_second);
    let (mesh_cpu, local_cpu, raw_cpu) = (cpu(&mesh), cpu(&local), cpu(&raw));
    println!("\nA call across two nodes over one nats-server, medians of {} runs", options.runs);
    println!("| | calls/s | CPU per call (us, without nats-server) |");
    println!("|---|---|---|");
    println!("| webmesh over NATS (client → A → NATS → B) | {:.0} | {mesh_cpu:.1} |", rate(&mesh));
    println!("| webmesh, the route served by A itself (client → A) | {:.0} | {local_cpu:.1} |", rate(&local));
    println!("| raw async-nats request/reply | {:.0} | {raw_cpu:.1} |", rate(&raw));
    println!(
        "\nwebmesh over NATS costs {:.2}x raw NATS per cross-node call (target: at most 1.50x)",
        mesh_cpu / raw_cpu
    );
    println!(
        "the client's WebSocket hop alone (served by A) costs {:.2}x raw NATS; the rest (crossing NATS) {:.2}x",
        local_cpu / raw_cpu,
        (mesh_cpu - local_cpu) / raw_cpu
    );
}

/// Which node serves the route the client of node A calls.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Served {
    /// Node B: A forwards each call over NATS.
    ByNodeB,
    /// Node A itself: the call never leaves it, which measures the
    /// client's WebSocket hop (and the handler) alone.
    ByNodeA,
}

/// A client of node A calls `/echo`, served as `served` says. Counts the
/// CPU of the nodes.
async fn webmesh_calls(url: &str, served: Served, options: &Options) -> Measured {
    let port = |helper: &mut Helper| helper.line().strip_prefix("READY ").and_then(|p| p.parse::<u16>().ok());
    let mut serving = match served {
        Served::ByNodeB => Some(Helper::start(&["mesh-node", "--nats", url, "--serve"])),
        Served::ByNodeA => None,
    };
    if let Some(serving) = serving.as_mut() {
        let _ = port(serving).expect("node B's port");
    }
    let mut entry = match served {
        Served::ByNodeB => Helper::start(&["mesh-node", "--nats", url]),
        Served::ByNodeA => Helper::start(&["mesh-node", "--nats", url, "--serve"]),
    };
    let port = port(&mut entry).expect("node A's port");
    let url = format!("ws://127.0.0.1:{port}");
    let payload = wire::small_payload();
    // Until A sees B, its client's calls find no route.
    let probe = webmesh::Client::connect(&url).await.expect("connect to node A");
    while probe.call::<Value>("/echo", &payload).await.is_err() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let count = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..options.connections.min(8) {
        let client = webmesh::Client::connect(&url).await.expect("connect to node A");
        for _ in 0..options.in_flight {
            let (client, count, stop, payload) = (client.clone(), count.clone(), stop.clone(), payload.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    client.call::<Value>("/echo", &payload).await.expect("a call across the mesh");
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let serving_cpu = |serving: &Option<Helper>| serving.as_ref().map_or(0.0, Helper::cpu);
    let (calls, before, started) =
        (count.load(Ordering::Relaxed), (entry.cpu(), serving_cpu(&serving)), Instant::now());
    tokio::time::sleep(options.measure()).await;
    let calls = count.load(Ordering::Relaxed) - calls;
    let (a, b) = (entry.cpu() - before.0, serving_cpu(&serving) - before.1);
    eprintln!(
        "{served:?}: node A (entry) {:.1} us per call, node B (serving) {:.1}",
        a * 1e6 / calls as f64,
        b * 1e6 / calls as f64
    );
    let cpu = a + b;
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }
    Measured { calls_per_second: calls as f64 / elapsed, cpu_us_per_call: cpu * 1e6 / calls as f64 }
}

/// A responder process answers on a subject; a requester process sends as
/// many requests in flight as the webmesh clients do. Counts the CPU of both.
fn raw_calls(url: &str, options: &Options) -> Measured {
    let mut responder = Helper::start(&["nats-echo", "--nats", url]);
    assert_eq!(responder.line(), "READY");
    let in_flight = (options.connections.min(8) * options.in_flight).to_string();
    let seconds = options.seconds.to_string();
    let mut requester =
        Helper::start(&["nats-requests", "--nats", url, "--in-flight", &in_flight, "--seconds", &seconds]);
    assert_eq!(requester.line(), "START");
    let cpu = responder.cpu() + requester.cpu();
    let done = requester.line();
    let cpu = responder.cpu() + requester.cpu() - cpu;
    let mut fields = done.split_whitespace().skip(1).map(|f| f.parse::<f64>().expect("DONE calls seconds"));
    let (calls, elapsed) = (fields.next().expect("calls"), fields.next().expect("seconds"));
    Measured { calls_per_second: calls / elapsed, cpu_us_per_call: cpu * 1e6 / calls }
}

/// The body of `webmesh-bench nats-echo`: answers each request on
/// [`SUBJECT`] with its payload; prints `READY`.
pub(crate) fn echo(nats: &str) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let client = async_nats::connect(nats).await.expect("connect to NATS");
        let mut requests = client.subscribe(SUBJECT).await.expect("subscribe");
        client.flush().await.expect("flush");
        println!("READY");
        while let Some(request) = requests.next().await {
            if let Some(reply) = request.reply {
                let _ = client.publish(reply, request.payload).await;
            }
        }
    });
}

/// The body of `webmesh-bench nats-requests`: keeps `in_flight` requests
/// to [`SUBJECT`] under way; after a second's warm-up prints `START`, then
/// after `seconds` prints `DONE calls seconds`.
pub(crate) fn requests(nats: &str, in_flight: usize, seconds: f64) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let client = async_nats::connect(nats).await.expect("connect to NATS");
        let payload: bytes::Bytes = rmp_serde::to_vec_named(&wire::small_payload()).expect("encode").into();
        let count = Arc::new(AtomicU64::new(0));
        for _ in 0..in_flight {
            let (client, count, payload) = (client.clone(), count.clone(), payload.clone());
            tokio::spawn(async move {
                loop {
                    client.request(SUBJECT, payload.clone()).await.expect("a request");
                    count.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (calls, started) = (count.load(Ordering::Relaxed), Instant::now());
        println!("START");
        tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
        let calls = count.load(Ordering::Relaxed) - calls;
        println!("DONE {calls} {}", started.elapsed().as_secs_f64());
    });
}
