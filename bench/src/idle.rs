//! Server memory per idle connection.

use std::time::Duration;

use crate::load::{connect, ServerProcess};
use crate::proc;
use crate::system::System;

/// Opens `count` connections that then do nothing, and returns the growth of
/// the server's resident memory per connection, in KiB.
pub(crate) async fn rss_per_connection(system: System, count: usize) -> f64 {
    let server = ServerProcess::start(system);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = proc::rss_kib(server.pid);
    let mut sockets = Vec::with_capacity(count);
    for batch in (0..count).collect::<Vec<_>>().chunks(100) {
        let connecting = batch.iter().map(|_| connect(system, server.port));
        sockets.extend(futures_util::future::join_all(connecting).await);
    }
    // Let the server settle: upgrades done, buffers released.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = proc::rss_kib(server.pid);
    drop(sockets);
    (after.saturating_sub(before)) as f64 / count as f64
}
