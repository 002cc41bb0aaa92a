//! Live figures of a running server.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::Shared;

/// What the server counts as it runs.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) calls: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) in_flight: AtomicU64,
}

impl Counters {
    /// Counts a message whose handler starts; the guard counts its end.
    pub(crate) fn start(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }
}

/// A handler under way.
pub(crate) struct InFlight<'a>(&'a Counters);

impl InFlight<'_> {
    /// The handler finished, with an error reply if `failed`.
    pub(crate) fn done(self, failed: bool) {
        self.0.calls.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.0.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

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

    /// The calls and emits whose handler finished since the server started
    /// (with a reply or an error), not counting those refused before their
    /// handler ran.
    pub fn calls_handled(&self) -> u64 {
        self.shared.counters.calls.load(Ordering::Relaxed)
    }

    /// Those of [`calls_handled`](Self::calls_handled) whose handler answered with an error.
    pub fn calls_failed(&self) -> u64 {
        self.shared.counters.failed.load(Ordering::Relaxed)
    }

    /// The calls and emits whose handler runs now.
    pub fn calls_in_flight(&self) -> u64 {
        self.shared.counters.in_flight.load(Ordering::Relaxed)
    }

    /// The events published through the server's [`Hub`](crate::Hub) since
    /// it started, by handlers, clients, or other nodes of a mesh.
    pub fn events_published(&self) -> u64 {
        self.shared.hub.published()
    }

    /// The events the hub dropped for subscribers that did not keep up
    /// (one per subscriber connection and event lost).
    pub fn events_dropped(&self) -> u64 {
        self.shared.hub.dropped()
    }

    /// The last wills in force: one per connection that left one.
    pub fn wills(&self) -> usize {
        self.shared.wills.live()
    }

    /// The wills of clients that are gone, waiting out their delay.
    pub fn wills_pending(&self) -> usize {
        self.shared.wills.pending()
    }

    /// The wills published since the server started.
    pub fn wills_published(&self) -> u64 {
        self.shared.wills.published()
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
