//! The mesh over NATS against raw async-nats, in the processes around NATS
//! (the NATS server's own CPU is shown apart, or left out: it routes the
//! same messages for both):
//!
//! - [`calls`]: a call across nodes (client → node A → NATS → node B → back)
//!   against a raw requester and responder;
//! - [`fanout`]: one publisher on node A to 1,000 subscribers spread over 3
//!   nodes, against a raw publisher to 1,000 NATS subscribers;
//! - [`growth`]: an idle mesh of 3 and of 20 nodes, over links and over
//!   NATS: its connections, traffic and CPU.
//!
//! `webmesh-bench mesh-nats` runs them and prints their tables.

mod calls;
mod fanout;
mod growth;

use std::io::{BufRead, BufReader, Lines};
use std::process::{Child, ChildStdout, Command, Stdio};

use serde_json::Value;

use crate::{nats_server, proc, Options};

pub(crate) use calls::{echo, requests};
pub(crate) use fanout::subscribers;

/// The topic nodes let their clients publish on, for [`fanout`].
const FANOUT_TOPIC: &str = "/fanout";

/// Runs the benchmarks (the first two `options.runs` times, for medians)
/// and prints their tables.
pub(crate) fn run(options: &Options) {
    let Some(binary) = nats_server::binary() else { return };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    // `--only calls,fanout,growth` picks among them.
    let wanted = |part: &str| options.only.is_empty() || options.only.iter().any(|o| o == part);
    if wanted("calls") {
        calls::table(binary, &runtime, options);
    }
    if wanted("fanout") {
        fanout::table(binary, &runtime, options);
    }
    if wanted("growth") {
        growth::table(binary, &runtime);
    }
}

/// A helper process of this benchmark, killed when dropped.
pub(super) struct Helper {
    child: Child,
    lines: Option<Lines<BufReader<ChildStdout>>>,
}

impl Helper {
    pub(super) fn start(args: &[&str]) -> Self {
        let exe = std::env::current_exe().expect("own path");
        let mut child =
            Command::new(exe).args(args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("spawn");
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        Self { child, lines: Some(lines) }
    }

    /// The next line it prints.
    pub(super) fn line(&mut self) -> String {
        let lines = self.lines.as_mut().expect("lines not taken");
        lines.next().expect("a line from a helper").expect("read")
    }

    /// The lines it prints from now on, for another thread to read.
    pub(super) fn take_lines(&mut self) -> Lines<BufReader<ChildStdout>> {
        self.lines.take().expect("lines not taken")
    }

    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(super) fn cpu(&self) -> f64 {
        proc::cpu_seconds(self.pid())
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The body of `webmesh-bench mesh-node`: a node of a mesh over NATS that
/// lets its clients publish on [`FANOUT_TOPIC`], serving `/echo` if
/// `serve`; prints `READY port`.
pub(crate) fn node(nats: &str, serve: bool) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let router = webmesh::Router::new().publish(FANOUT_TOPIC, || async {});
        let router = match serve {
            true => router.on("/echo", |data: Value| data),
            false => router,
        };
        let server = webmesh::Server::builder().registered_handlers(false).router(router).addr("127.0.0.1:0");
        let mesh = webmesh::Mesh::builder().server(server).nats(nats).start().await.expect("start a node");
        println!("READY {}", mesh.local_addr().expect("bound").port());
        std::future::pending::<()>().await;
    });
}
