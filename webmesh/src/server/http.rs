//! The HTTP side of serving: one hyper HTTP/1.1 connection per accepted
//! stream, with a time limit on the request head so that a client that
//! trickles its upgrade request (slowloris) is dropped.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::serve::Listener;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;

/// Serves `app` on every connection `listener` accepts until `signal`.
pub(crate) async fn serve<L>(
    mut listener: L,
    app: axum::Router,
    signal: impl Future<Output = ()>,
    head_timeout: Duration,
) where
    L: Listener<Addr = SocketAddr>,
{
    tokio::pin!(signal);
    loop {
        let (io, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut signal => return,
        };
        // The upgrade handler reads the peer's address from here.
        let service = TowerToHyperService::new(app.clone().layer(axum::Extension(ConnectInfo(peer))));
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder.timer(TokioTimer::new()).header_read_timeout(head_timeout);
        let connection = builder.serve_connection(TokioIo::new(io), service).with_upgrades();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, "HTTP connection ended: {e}");
            }
        });
    }
}
