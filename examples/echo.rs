//! The echo server of the original webmesh README.
//!
//! ```sh
//! cargo run --example echo               # serves ws://0.0.0.0:4269
//! WEBMESH_ADDR=127.0.0.1:9000 cargo run --example echo
//! ```

use serde_json::Value;

/// Answers any payload on `/` with itself.
#[webmesh::on("/")]
async fn root(data: Value) -> Value {
    data
}

/// Answers any payload on `/echo` with itself.
#[webmesh::on("/echo")]
async fn echo(data: Value) -> Value {
    data
}

/// Lets clients publish to `/news/...`; anyone may subscribe (the default):
///
/// ```sh
/// webmesh subscribe ws://127.0.0.1:4269 '/news/{*rest}'
/// webmesh publish ws://127.0.0.1:4269 /news/rust '{"title": "hello"}'
/// ```
#[webmesh::publish("/news/{*rest}")]
fn news() {}

/// Lets workers leave a last will on `/workers/{id}/gone`, which the server
/// publishes if the worker dies (not when it closes cleanly):
///
/// ```sh
/// webmesh subscribe ws://127.0.0.1:4269 '/workers/*/gone'     # a supervisor
/// webmesh subscribe --will /workers/7/gone '{"worker": 7}' ws://127.0.0.1:4269 /jobs/7
/// kill -9 <the second>                                          # the first prints the will
/// ```
#[webmesh::publish("/workers/{id}/gone")]
fn workers() {}

#[tokio::main]
async fn main() -> Result<(), webmesh::Error> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    webmesh::serve().await
}
