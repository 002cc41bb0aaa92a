use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;

use super::{ServerBuilder, Shared};
use crate::Error;

/// A bound webmesh server, ready to serve.
///
/// ```no_run
/// # async fn demo() -> Result<(), webmesh::Error> {
/// let server = webmesh::Server::builder().addr("127.0.0.1:0").bind().await?;
/// let addr = server.local_addr();
/// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
/// tokio::spawn(server.serve_with_shutdown(async move { stopped.await.ok(); }));
/// // ... connect to `ws://{addr}` ...
/// stop.send(()).ok();
/// # Ok(()) }
/// ```
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    tls: Option<Acceptor>,
}

#[cfg(feature = "tls")]
pub(crate) type Acceptor = tokio_rustls::TlsAcceptor;
/// Without the `tls` feature there is no acceptor to have.
#[cfg(not(feature = "tls"))]
pub(crate) type Acceptor = std::convert::Infallible;

impl Server {
    /// Starts configuring a server.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    pub(crate) fn new(listener: TcpListener, shared: Shared, tls: Option<Acceptor>) -> Result<Self, Error> {
        let local_addr = listener.local_addr()?;
        Ok(Self { listener, local_addr, shared: shared.start(), tls })
    }

    /// What the server's connections share: for a mesh, which runs the
    /// server's handlers for its own node.
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Whether the server serves TLS itself.
    pub(crate) fn serves_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The [`Hub`](crate::Hub) of this server's subscribers.
    pub fn hub(&self) -> crate::Hub {
        self.shared.hub.clone()
    }

    /// Live figures of this server: its connections and the memory they hold.
    pub fn stats(&self) -> super::ServerStats {
        super::ServerStats::new(self.shared.clone())
    }

    /// The address the server listens on, with the real port when bound to port 0.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until the process ends.
    pub async fn serve(self) -> Result<(), Error> {
        self.serve_with_shutdown(std::future::pending()).await
    }

    /// Serves until `signal` completes, then shuts down gracefully: stops
    /// accepting connections and handling messages (it reads on only to
    /// answer pings, so that clients keep waiting), lets the calls under way
    /// finish (up to [`ServerBuilder::shutdown_timeout`]) and send their
    /// replies, closes every WebSocket with code 1001 (going away), and
    /// returns once all are closed.
    pub async fn serve_with_shutdown<F>(self, signal: F) -> Result<(), Error>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let shared = self.shared.clone();
        let signal = async move {
            signal.await;
            super::shutdown::start(&shared);
        };
        let mut paths: Vec<&str> = self.shared.routes.patterns().iter().map(String::as_str).collect();
        paths.sort_unstable();
        let scheme = if self.tls.is_some() { "wss" } else { "ws" };
        tracing::info!(addr = %self.local_addr, ?paths, "webmesh listening on {scheme}://{}", self.local_addr);
        let app = super::upgrade::router(self.shared.clone());
        let head_timeout = self.shared.upgrade_timeout;
        match self.tls {
            #[cfg(feature = "tls")]
            Some(acceptor) => {
                let listener = crate::tls::TlsListener::new(self.listener, acceptor)?;
                super::http::serve(listener, app, signal, head_timeout).await;
            }
            #[cfg(not(feature = "tls"))]
            Some(never) => match never {},
            None => super::http::serve(without_nagle(self.listener), app, signal, head_timeout).await,
        }
        // No new connections; the upgraded WebSockets are ours to wait for.
        super::shutdown::drain(&self.shared).await;
        Ok(())
    }
}

/// Small request/response messages must not wait for Nagle's algorithm.
fn without_nagle(listener: TcpListener) -> impl axum::serve::Listener<Io = tokio::net::TcpStream, Addr = SocketAddr> {
    listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    })
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("local_addr", &self.local_addr).finish_non_exhaustive()
    }
}

/// Serves every handler declared with `#[webmesh::on]` on `WEBMESH_ADDR`
/// (default `0.0.0.0:4269`), logging the bound address.
///
/// ```no_run
/// #[webmesh::on("/echo")]
/// fn echo(data: serde_json::Value) -> serde_json::Value {
///     data
/// }
///
/// #[tokio::main]
/// async fn main() -> Result<(), webmesh::Error> {
///     webmesh::serve().await
/// }
/// ```
pub async fn serve() -> Result<(), Error> {
    Server::builder().serve().await
}

/// An [`axum::Router`] serving every handler declared with `#[webmesh::on]`
/// at its root, to mount beside ordinary HTTP routes.
///
/// ```no_run
/// use axum::routing::get;
///
/// # async fn demo() {
/// let app = axum::Router::new()
///     .route("/health", get(|| async { "ok" }))
///     .nest("/mesh", webmesh::router()); // clients connect to ws://host/mesh
/// let listener = tokio::net::TcpListener::bind("0.0.0.0:8080").await.unwrap();
/// axum::serve(listener, app).await.unwrap();
/// # }
/// ```
///
/// Stopping the application resets its WebSockets: for a graceful
/// shutdown, which lets calls under way answer and closes the sessions with
/// 1001, use [`ServerBuilder::into_router_with_shutdown`].
///
/// # Panics
///
/// If two handlers serve one path; [`ServerBuilder::into_router`] returns
/// that as an error instead.
pub fn router() -> axum::Router {
    match Server::builder().into_router() {
        Ok(router) => router,
        Err(e) => panic!("{e}"),
    }
}

#[cfg(test)]
mod tests {
    use axum::serve::Listener;

    use super::*;

    #[tokio::test]
    async fn accepted_sockets_have_nagle_off() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut listener = without_nagle(listener);
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await;
        assert!(accepted.nodelay().unwrap());
    }
}
