//! Graceful shutdown of the WebSocket sessions, which axum does not track.

use std::future::Future;
use std::sync::Arc;

use super::Shared;

/// Shuts down, gracefully, the WebSocket sessions of a server mounted in an
/// axum application ([`ServerBuilder::into_router_with_shutdown`](crate::ServerBuilder::into_router_with_shutdown)).
///
/// axum's graceful shutdown waits for HTTP requests, not for the WebSockets
/// they upgraded to: without this, stopping the application resets every
/// session, calls under way included. [`on`](Self::on) wraps the signal
/// given to axum so that the sessions start closing with it, and
/// [`drain`](Self::drain), awaited once axum's `serve` has returned, waits
/// until they have closed. Meanwhile each session stops handling messages
/// (it reads on only to answer pings), lets the
/// calls under way finish and send their replies (up to
/// [`ServerBuilder::shutdown_timeout`](crate::ServerBuilder::shutdown_timeout)),
/// and closes with code 1001 (going away); new upgrades are refused with
/// 503. This is what [`Server::serve_with_shutdown`](crate::Server::serve_with_shutdown) does.
///
/// ```no_run
/// use axum::routing::get;
///
/// #[tokio::main]
/// async fn main() -> Result<(), webmesh::Error> {
///     let (mesh, shutdown) = webmesh::Server::builder().into_router_with_shutdown()?;
///     let app = axum::Router::new().route("/health", get(|| async { "ok" })).nest("/mesh", mesh);
///     let listener = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
///     let ctrl_c = async {
///         let _ = tokio::signal::ctrl_c().await;
///     };
///     axum::serve(listener, app).with_graceful_shutdown(shutdown.on(ctrl_c)).await?;
///     shutdown.drain().await; // the WebSockets: calls under way answered, then closed with 1001
///     Ok(())
/// }
/// ```
///
/// Clones shut down the same sessions.
#[derive(Clone)]
pub struct Shutdown {
    shared: Arc<Shared>,
}

impl Shutdown {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// A future that completes when `signal` does, having started the
    /// shutdown of the sessions: give it to axum's `with_graceful_shutdown`.
    pub fn on<F>(&self, signal: F) -> impl Future<Output = ()> + Send + 'static
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let shutdown = self.clone();
        async move {
            signal.await;
            shutdown.start();
        }
    }

    /// Starts the shutdown now: no new sessions, and every open one stops
    /// reading, waits for its calls under way and closes with 1001. Calling
    /// it again does nothing.
    pub fn start(&self) {
        start(&self.shared);
    }

    /// Starts the shutdown if it has not started, and waits until every
    /// session has closed, at most [`ServerBuilder::shutdown_timeout`](crate::ServerBuilder::shutdown_timeout)
    /// and one second more (a session whose peer does not read its close
    /// frame is then left to end by itself).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future stops the waiting, not the shutdown.
    pub async fn drain(&self) {
        start(&self.shared);
        drain(&self.shared).await;
    }
}

impl std::fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shutdown")
            .field("started", &*self.shared.shutdown.borrow())
            .field("sessions", &self.shared.sessions.len())
            .finish()
    }
}

/// Tells every session to close.
pub(crate) fn start(shared: &Shared) {
    if !shared.shutdown.send_replace(true) {
        tracing::info!("webmesh shutting down");
    }
}

/// Waits for the sessions to end, once no new ones can start.
pub(crate) async fn drain(shared: &Shared) {
    let sessions = &shared.sessions;
    sessions.close();
    let grace = shared.shutdown_timeout + std::time::Duration::from_secs(1);
    if tokio::time::timeout(grace, sessions.wait()).await.is_err() {
        tracing::warn!(open = sessions.len(), "sessions still open after the shutdown timeout");
    }
    // The clients whose wills wait out their delay are gone: publish them
    // while the hub (and a mesh's links) can still carry them.
    shared.wills.flush();
}
