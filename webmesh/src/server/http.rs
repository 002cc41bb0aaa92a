//! The HTTP side of serving: one hyper HTTP/1.1 connection per accepted
//! stream, with a time limit on the request head so that a client that
//! trickles its upgrade request (slowloris) is dropped.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::serve::Listener;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;

/// Who is at the other end of a connection this server accepted itself.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    pub(crate) addr: SocketAddr,
    /// The certificate chain the client presented over TLS, if any.
    #[cfg(feature = "tls")]
    pub(crate) certificates: Option<std::sync::Arc<[rustls_pki_types::CertificateDer<'static>]>>,
}

/// A stream a listener accepted, which may know more of its peer than
/// its address.
pub(crate) trait Accepted {
    /// The peer of this stream, at `addr`.
    fn peer(&self, addr: SocketAddr) -> Peer;
}

impl Accepted for tokio::net::TcpStream {
    fn peer(&self, addr: SocketAddr) -> Peer {
        Peer {
            addr,
            #[cfg(feature = "tls")]
            certificates: None,
        }
    }
}

#[cfg(feature = "tls")]
impl Accepted for tokio_rustls::server::TlsStream<tokio::net::TcpStream> {
    fn peer(&self, addr: SocketAddr) -> Peer {
        Peer { addr, certificates: crate::tls::peer_certificates(self) }
    }
}

/// Serves `app` on every connection `listener` accepts until `signal`.
pub(crate) async fn serve<L>(
    mut listener: L,
    app: axum::Router,
    signal: impl Future<Output = ()>,
    head_timeout: Duration,
) where
    L: Listener<Addr = SocketAddr>,
    L::Io: Accepted,
{
    tokio::pin!(signal);
    loop {
        let (io, addr) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut signal => return,
        };
        // The upgrade handler reads the peer from here.
        let peer = io.peer(addr);
        let service = TowerToHyperService::new(app.clone().layer(axum::Extension(peer)));
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder.timer(TokioTimer::new()).header_read_timeout(head_timeout);
        let connection = builder.serve_connection(TokioIo::new(io), service).with_upgrades();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(peer = %addr, "HTTP connection ended: {e}");
            }
        });
    }
}
