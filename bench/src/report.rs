//! Runs every measurement, alternating the systems, and prints the medians.

use std::collections::BTreeMap;

use crate::fanout::{self, FanoutResult};
use crate::idle;
use crate::load::{self, CallResult, ServerProcess};
use crate::proc;
use crate::system::System;
use crate::Options;

pub(crate) fn run(options: &Options) {
    // The load generator on core 1, the servers on core 0.
    proc::pin(0, 1);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(measure(options));
}

fn selected(options: &Options) -> Vec<System> {
    System::ALL
        .into_iter()
        .filter(|s| options.only.as_ref().is_none_or(|only| s.name().contains(only.as_str())))
        .collect()
}

/// The systems in a different order each run, so that drift on a shared
/// machine does not always favour the same one.
fn rotated(systems: &[System], run: usize) -> Vec<System> {
    let mut systems = systems.to_vec();
    if !systems.is_empty() {
        let shift = run % systems.len();
        systems.rotate_left(shift);
        if run % 2 == 1 {
            systems.reverse();
        }
    }
    systems
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

async fn measure(options: &Options) {
    let systems = selected(options);
    let mut calls: BTreeMap<&str, Vec<CallResult>> = BTreeMap::new();
    let mut idle: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut fanout: BTreeMap<&str, Vec<FanoutResult>> = BTreeMap::new();
    for run in 0..options.runs {
        let call_systems: Vec<System> = systems.iter().copied().filter(|s| s.measures_calls()).collect();
        for system in rotated(&call_systems, run) {
            let server = ServerProcess::start(system);
            let result = load::calls(system, &server, options).await;
            eprintln!("run {run} calls {:<18} {result:?}", system.name());
            calls.entry(system.name()).or_default().push(result);
        }
        let idle_systems: Vec<System> = systems.iter().copied().filter(|s| s.measures_idle()).collect();
        for system in rotated(&idle_systems, run) {
            let kib = idle::rss_per_connection(system, options.idle).await;
            eprintln!("run {run} idle  {:<18} {kib:.2} KiB per connection", system.name());
            idle.entry(system.name()).or_default().push(kib);
        }
        let fanout_systems: Vec<System> = systems.iter().copied().filter(|s| s.measures_fanout()).collect();
        for system in rotated(&fanout_systems, run) {
            let result = fanout::run(system, options).await;
            eprintln!("run {run} fan-out {:<16} {result:?}", system.name());
            fanout.entry(system.name()).or_default().push(result);
        }
    }
    print_tables(options, &systems, &calls, &idle, &fanout);
}

fn print_tables(
    options: &Options,
    systems: &[System],
    calls: &BTreeMap<&str, Vec<CallResult>>,
    idle: &BTreeMap<&str, Vec<f64>>,
    fanout: &BTreeMap<&str, Vec<FanoutResult>>,
) {
    let call_median = |name: &str, f: fn(&CallResult) -> f64| {
        median(calls.get(name).map(|r| r.iter().map(f).collect()).unwrap_or_default())
    };
    let cpu = |name: &str| call_median(name, |r| r.cpu_us_per_call);
    let p99 = |name: &str| call_median(name, |r| r.p99_us);
    let floor = cpu("axum-echo");

    println!(
        "\nCalls: {} connections x {} in flight, {} s measured, medians of {} runs\n",
        options.connections, options.in_flight, options.seconds, options.runs
    );
    println!("| system | calls/s | p50 (us) | p99 (us) | server CPU per call (us) | CPU vs axum echo |");
    println!("|---|---:|---:|---:|---:|---:|");
    for system in systems.iter().filter(|s| s.measures_calls()) {
        let name = system.name();
        println!(
            "| {name} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2}x |",
            call_median(name, |r| r.calls_per_second),
            call_median(name, |r| r.p50_us),
            p99(name),
            cpu(name),
            cpu(name) / floor
        );
    }
    if !idle.is_empty() {
        println!(
            "\nServer memory per idle connection ({} connections, medians of {} runs)\n",
            options.idle, options.runs
        );
        println!("| system | RSS per idle connection (KiB) |");
        println!("|---|---:|");
        for (name, values) in idle {
            println!("| {name} | {:.1} |", median(values.clone()));
        }
    }
    if !fanout.is_empty() {
        println!(
            "\nFan-out: 1 publisher, {} subscribers, {} events (medians of {} runs)\n",
            options.subscribers, options.events, options.runs
        );
        println!("| system | deliveries/s | server CPU per delivery (us) |");
        println!("|---|---:|---:|");
        for (name, results) in fanout {
            let deliveries = median(results.iter().map(|r| r.deliveries_per_second).collect());
            let cpu = median(results.iter().map(|r| r.cpu_us_per_delivery).collect());
            println!("| {name} | {deliveries:.0} | {cpu:.2} |");
        }
    }

    println!("\nTargets\n");
    let check = |what: &str, value: f64, limit: f64| {
        let verdict = if value <= limit { "met" } else { "NOT met" };
        println!("- {what}: {value:.2} (limit {limit:.2}): {verdict}");
    };
    let mesh = cpu("webmesh-msgpack");
    check("webmesh CPU per call / axum echo", mesh / floor, 1.25);
    check("webmesh CPU per call / jsonrpsee", mesh / cpu("jsonrpsee"), 0.5);
    check("webmesh 16 KiB zlib CPU / 16 KiB raw", cpu("webmesh-16k-zlib") / cpu("webmesh-16k-raw"), 2.0);
    check("webmesh p99 / axum echo p99", p99("webmesh-msgpack") / p99("axum-echo"), 1.5);
    if let Some(values) = idle.get("webmesh-msgpack") {
        check("webmesh KiB per idle connection", median(values.clone()), 8.0);
    }
}
