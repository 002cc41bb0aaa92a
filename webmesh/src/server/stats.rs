//! Live figures of a running server.

use std::sync::Arc;

use super::Shared;

/// Live figures of a running server, for metrics and health checks. Cheap
/// to clone; get it from [`Server::stats`](crate::Server::stats) before
/// serving.
///
/// ```no_run
/// # async fn demo() -> Result<(), webmesh::Error> {
/// let server = webmesh::Server::builder().bind().await?;
/// let stats = server.stats();
/// tokio::spawn(async move {
///     loop {
///         tokio::time::sleep(std::time::Duration::from_secs(10)).await;
///         println!("{} connections hold {} bytes", stats.connections(), stats.memory_held());
///     }
/// });
/// server.serve().await
/// # }
/// ```
#[derive(Clone)]
pub struct ServerStats {
    shared: Arc<Shared>,
}

impl ServerStats {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// The bytes the server holds for its connections: the messages under
    /// way, by their decoded weight, and the replies, pushes and events
    /// waiting to be written. This is what
    /// [`ServerBuilder::memory_budget`](crate::ServerBuilder::memory_budget)
    /// bounds.
    pub fn memory_held(&self) -> usize {
        self.shared.memory.total()
    }

    /// The WebSocket connections open now.
    pub fn connections(&self) -> usize {
        self.shared.sessions.len()
    }
}

impl std::fmt::Debug for ServerStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerStats")
            .field("connections", &self.connections())
            .field("memory_held", &self.memory_held())
            .finish()
    }
}
