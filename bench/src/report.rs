//! Runs every measurement, alternating the systems, and prints the medians.

use std::collections::BTreeMap;

use crate::fanout::{self, FanoutResult};
use crate::load::{self, CallResult, ServerProcess};
use crate::system::System;
use crate::{idle, nats_server, proc, scaling, Options};

pub(crate) fn run(options: &Options) {
    // The load generator on core 1, the servers on core 0.
    proc::pin(0, 1);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(measure(options));
}

/// The systems `--only` selects, less nats-server when it cannot be had.
fn selected(options: &Options) -> Vec<System> {
    System::ALL
        .into_iter()
        .filter(|s| options.only.is_empty() || options.only.iter().any(|only| s.name().contains(only.as_str())))
        .filter(|&s| s != System::NatsServer || nats_server::binary().is_some())
        .collect()
}

/// The systems (or loads) in a different order each run, so that drift on
/// a shared machine does not always favour the same one.
fn rotated<T: Clone>(items: &[T], run: usize) -> Vec<T> {
    let mut items = items.to_vec();
    if !items.is_empty() {
        let shift = run % items.len();
        items.rotate_left(shift);
        if run % 2 == 1 {
            items.reverse();
        }
    }
    items
}

pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Everything measured, one entry per run.
#[derive(Default)]
struct Measured {
    calls: BTreeMap<&'static str, Vec<CallResult>>,
    idle: BTreeMap<&'static str, Vec<f64>>,
    fanout: BTreeMap<&'static str, Vec<FanoutResult>>,
    /// By number of unrelated wildcard subscriptions: server CPU per
    /// publish, in microseconds.
    publish_cost: BTreeMap<usize, Vec<f64>>,
}

async fn measure(options: &Options) {
    let systems = selected(options);
    let mut measured = Measured::default();
    let scales = if systems.contains(&System::WebmeshScaling) { options.scaling.clone() } else { Vec::new() };
    for run in 0..options.runs {
        let call_systems: Vec<System> = systems.iter().copied().filter(|s| s.measures_calls()).collect();
        for system in rotated(&call_systems, run) {
            let server = ServerProcess::start(system);
            let result = load::calls(system, &server, options).await;
            eprintln!("run {run} calls {:<18} {result:?}", system.name());
            measured.calls.entry(system.name()).or_default().push(result);
        }
        let idle_systems: Vec<System> = systems.iter().copied().filter(|s| s.measures_idle()).collect();
        for system in rotated(&idle_systems, run) {
            let kib = idle::rss_per_connection(system, options.idle).await;
            eprintln!("run {run} idle  {:<18} {kib:.2} KiB per connection", system.name());
            measured.idle.entry(system.name()).or_default().push(kib);
        }
        let fanout_systems: Vec<System> = systems.iter().copied().filter(|s| s.measures_fanout()).collect();
        for system in rotated(&fanout_systems, run) {
            let result = fanout::run(system, options).await;
            eprintln!("run {run} fan-out {:<16} {result:?}", system.name());
            measured.fanout.entry(system.name()).or_default().push(result);
        }
        for unrelated in rotated(&scales, run) {
            let us = scaling::cpu_us_per_publish(unrelated, options).await;
            eprintln!("run {run} publish beside {unrelated} unrelated wildcards: {us:.2} us of server CPU");
            measured.publish_cost.entry(unrelated).or_default().push(us);
        }
    }
    print_calls(options, &systems, &measured);
    print_idle(options, &measured);
    print_fanout(options, &measured);
    print_scaling(options, &measured);
    print_targets(&measured);
}

/// The median of `f` over a system's runs; `None` when it was not measured.
fn median_of<T>(runs: Option<&Vec<T>>, f: impl Fn(&T) -> f64) -> Option<f64> {
    runs.map(|runs| median(runs.iter().map(f).collect()))
}

impl Measured {
    fn call_median(&self, name: &str, f: fn(&CallResult) -> f64) -> Option<f64> {
        median_of(self.calls.get(name), f)
    }

    fn call_cpu(&self, name: &str) -> Option<f64> {
        self.call_median(name, |r| r.cpu_us_per_call)
    }

    fn p99(&self, name: &str) -> Option<f64> {
        self.call_median(name, |r| r.p99_us)
    }

    fn delivery_cpu(&self, name: &str) -> Option<f64> {
        median_of(self.fanout.get(name), |r| r.cpu_us_per_delivery)
    }

    fn publish_cost(&self, unrelated: usize) -> Option<f64> {
        median_of(self.publish_cost.get(&unrelated), |&us| us)
    }
}

/// `a / b`, when both were measured.
fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(a? / b?)
}

fn print_calls(options: &Options, systems: &[System], measured: &Measured) {
    if measured.calls.is_empty() {
        return;
    }
    println!(
        "\nCalls: {} connections x {} in flight, {} s measured, medians of {} runs\n",
        options.connections, options.in_flight, options.seconds, options.runs
    );
    println!("| system | calls/s | p50 (us) | p99 (us) | server CPU per call (us) | CPU vs axum echo |");
    println!("|---|---:|---:|---:|---:|---:|");
    let or_nan = |value: Option<f64>| value.unwrap_or(f64::NAN);
    for system in systems.iter().filter(|s| s.measures_calls()) {
        let name = system.name();
        println!(
            "| {name} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2}x |",
            or_nan(measured.call_median(name, |r| r.calls_per_second)),
            or_nan(measured.call_median(name, |r| r.p50_us)),
            or_nan(measured.p99(name)),
            or_nan(measured.call_cpu(name)),
            or_nan(ratio(measured.call_cpu(name), measured.call_cpu("axum-echo")))
        );
    }
}

fn print_idle(options: &Options, measured: &Measured) {
    if measured.idle.is_empty() {
        return;
    }
    println!("\nServer memory per idle connection ({} connections, medians of {} runs)\n", options.idle, options.runs);
    println!("| system | RSS per idle connection (KiB) |");
    println!("|---|---:|");
    for (name, values) in &measured.idle {
        println!("| {name} | {:.1} |", median(values.clone()));
    }
}

fn print_fanout(options: &Options, measured: &Measured) {
    if measured.fanout.is_empty() {
        return;
    }
    println!(
        "\nFan-out: 1 publisher, {} subscribers, {} events (medians of {} runs)\n",
        options.subscribers, options.events, options.runs
    );
    println!("| system | deliveries/s | server CPU per delivery (us) |");
    println!("|---|---:|---:|");
    for (name, results) in &measured.fanout {
        let deliveries = median(results.iter().map(|r| r.deliveries_per_second).collect());
        let cpu = median(results.iter().map(|r| r.cpu_us_per_delivery).collect());
        println!("| {name} | {deliveries:.0} | {cpu:.2} |");
    }
}

fn print_scaling(options: &Options, measured: &Measured) {
    if measured.publish_cost.is_empty() {
        return;
    }
    println!(
        "\nPublish cost with N unrelated wildcard subscriptions ({} publishes to a topic with 1 subscriber, \
         medians of {} runs)\n",
        options.publishes, options.runs
    );
    println!("| N | server CPU per publish (us) | vs N = 0 |");
    println!("|---:|---:|---:|");
    for (&unrelated, runs) in &measured.publish_cost {
        let us = median(runs.clone());
        let versus_none = ratio(Some(us), measured.publish_cost(0)).map_or("-".to_string(), |r| format!("{r:.2}x"));
        println!("| {unrelated} | {us:.2} | {versus_none} |");
    }
}

/// Each target whose systems were measured; a `--scaling` without 100,000
/// prints its table but checks nothing.
fn print_targets(measured: &Measured) {
    println!("\nTargets\n");
    let cpu = |name: &str| measured.call_cpu(name);
    check("webmesh CPU per call / axum echo", ratio(cpu("webmesh-msgpack"), cpu("axum-echo")), 1.25);
    check("webmesh CPU per call / jsonrpsee", ratio(cpu("webmesh-msgpack"), cpu("jsonrpsee")), 0.5);
    check("webmesh 16 KiB zlib CPU / 16 KiB raw", ratio(cpu("webmesh-16k-zlib"), cpu("webmesh-16k-raw")), 2.0);
    check("webmesh p99 / axum echo p99", ratio(measured.p99("webmesh-msgpack"), measured.p99("axum-echo")), 1.5);
    check("webmesh KiB per idle connection", median_of(measured.idle.get("webmesh-msgpack"), |&kib| kib), 8.0);
    let delivery = |name: &str| measured.delivery_cpu(name);
    for other in ["nats-server", "socketioxide"] {
        check(&format!("webmesh CPU per delivery / {other}"), ratio(delivery("webmesh-msgpack"), delivery(other)), 1.0);
    }
    let publish = |unrelated: usize| measured.publish_cost(unrelated);
    check("publish cost with 100,000 unrelated wildcards / none", ratio(publish(100_000), publish(0)), 1.5);
}

/// Prints one target, if what it compares was measured.
fn check(what: &str, value: Option<f64>, limit: f64) {
    let Some(value) = value else { return };
    let verdict = if value <= limit { "met" } else { "NOT met" };
    println!("- {what}: {value:.2} (limit {limit:.2}): {verdict}");
}
