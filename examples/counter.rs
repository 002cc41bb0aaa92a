//! A counter: `/inc` is emitted (fire-and-forget), `/getinc` is called.
//!
//! ```sh
//! cargo run --example counter
//! # in another terminal:
//! cargo run -p webmesh --features cli --bin webmesh -- emit ws://127.0.0.1:4269 /inc
//! cargo run -p webmesh --features cli --bin webmesh -- call ws://127.0.0.1:4269 /getinc
//! ```
//!
//! With `--client`, it also plays the other side: connects, emits and calls.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use webmesh::State;

/// The count, shared by every handler through `State`.
#[derive(Clone, Default)]
struct Counter(Arc<AtomicU64>);

/// Adds `by` (default 1) to the count; answers nothing.
#[webmesh::on("/inc")]
async fn inc(State(counter): State<Counter>, by: Option<u64>) {
    counter.0.fetch_add(by.unwrap_or(1), Ordering::SeqCst);
}

/// Answers the count.
#[webmesh::on("/getinc")]
async fn getinc(State(counter): State<Counter>) -> u64 {
    counter.0.load(Ordering::SeqCst)
}

#[tokio::main]
async fn main() -> Result<(), webmesh::Error> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let server = webmesh::Server::builder().state(Counter::default()).bind().await?;
    if std::env::args().any(|a| a == "--client") {
        let url = format!("ws://127.0.0.1:{}", server.local_addr().port());
        tokio::spawn(async move {
            let client = webmesh::Client::connect(&url).await?;
            client.emit("/inc", &5).await?;
            client.emit("/inc", &()).await?;
            // Messages are handled in order, so the call sees both emits.
            let count: u64 = client.call("/getinc", &()).await?;
            println!("count: {count}");
            Ok::<_, webmesh::Error>(())
        });
    }
    server.serve().await
}
