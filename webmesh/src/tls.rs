//! TLS (`wss://`) with rustls: server and client configuration, and the
//! listener that performs handshakes.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::Error;

/// How long a client has to complete its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Config(format!("{what}: {e}"))
}

fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs =
        CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>().map_err(|e| tls_error("certificates", e))?;
    if certs.is_empty() {
        return Err(Error::Config("no certificate in the PEM data".into()));
    }
    Ok(certs)
}

fn private_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, Error> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| tls_error("private key", e))
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
}

fn roots(pem: &[u8]) -> Result<RootCertStore, Error> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(pem)? {
        roots.add(cert).map_err(|e| tls_error("CA certificate", e))?;
    }
    Ok(roots)
}

/// A server's TLS identity, and optionally the CA its clients' certificates
/// must come from (mutual TLS).
///
/// ```no_run
/// # fn demo() -> Result<(), webmesh::Error> {
/// let tls = webmesh::TlsConfig::from_pem_files("cert.pem", "key.pem")?;
/// let server = webmesh::Server::builder().tls(tls); // serves wss://
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TlsConfig {
    chain: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
    client_ca: Option<RootCertStore>,
    anonymous_clients: bool,
}

impl TlsConfig {
    /// Reads a certificate chain and its private key from PEM files.
    pub fn from_pem_files(cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<Self, Error> {
        Self::from_pem(&read(cert.as_ref())?, &read(key.as_ref())?)
    }

    /// Takes a certificate chain and its private key as PEM text.
    pub fn from_pem(cert: &[u8], key: &[u8]) -> Result<Self, Error> {
        Ok(Self {
            chain: certificates(cert)?,
            key: Arc::new(private_key(key)?),
            client_ca: None,
            anonymous_clients: false,
        })
    }

    /// Requires every client to present a certificate issued by this CA
    /// (PEM): mutual TLS. The authentication hook sees the client's
    /// certificate in [`Handshake::peer_certificates`](crate::Handshake::peer_certificates),
    /// to tell which service it is.
    pub fn client_ca_pem(mut self, ca: &[u8]) -> Result<Self, Error> {
        self.client_ca = Some(roots(ca)?);
        Ok(self)
    }

    /// Requires every client to present a certificate issued by the CA in
    /// this PEM file: mutual TLS, as [`client_ca_pem`](Self::client_ca_pem).
    ///
    /// ```no_run
    /// # fn demo() -> Result<(), webmesh::Error> {
    /// let tls = webmesh::TlsConfig::from_pem_files("cert.pem", "key.pem")?.client_ca_pem_file("mesh-ca.pem")?;
    /// # Ok(()) }
    /// ```
    pub fn client_ca_pem_file(self, path: impl AsRef<Path>) -> Result<Self, Error> {
        self.client_ca_pem(&read(path.as_ref())?)
    }

    /// With a client CA, also lets clients without a certificate connect,
    /// so that the authentication hook decides: their
    /// [`Handshake::peer_certificates`](crate::Handshake::peer_certificates)
    /// is `None`, while a client that presents a certificate must still
    /// present one from the CA. Without a client CA, no client is asked for
    /// a certificate, and this changes nothing.
    pub fn allow_clients_without_certificate(mut self) -> Self {
        self.anonymous_clients = true;
        self
    }

    pub(crate) fn acceptor(&self) -> Result<TlsAcceptor, Error> {
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error("TLS versions", e))?;
        let builder = match &self.client_ca {
            Some(ca) => {
                let mut verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(ca.clone()), provider());
                if self.anonymous_clients {
                    verifier = verifier.allow_unauthenticated();
                }
                let verifier = verifier.build().map_err(|e| tls_error("client CA", e))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| tls_error("certificate", e))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("certificates", &self.chain.len())
            .field("mutual", &self.client_ca.is_some())
            .field("clients_without_certificate", &self.anonymous_clients)
            .finish()
    }
}

/// How a client checks the server of a `wss://` URL, and proves itself.
///
/// By default the system's root certificates are trusted. A service mesh
/// with its own CA gives that CA instead.
#[derive(Clone, Default)]
pub struct ClientTls {
    ca: Option<RootCertStore>,
    identity: Option<(Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>)>,
}

impl ClientTls {
    /// Trusts only this CA (PEM), instead of the system's roots.
    pub fn ca_pem(mut self, ca: &[u8]) -> Result<Self, Error> {
        self.ca = Some(roots(ca)?);
        Ok(self)
    }

    /// Trusts only the CA in this PEM file.
    pub fn ca_pem_file(self, path: impl AsRef<Path>) -> Result<Self, Error> {
        self.ca_pem(&read(path.as_ref())?)
    }

    /// Presents this certificate chain and key (PEM) to servers that ask
    /// for one (mutual TLS).
    pub fn client_cert_pem(mut self, cert: &[u8], key: &[u8]) -> Result<Self, Error> {
        self.identity = Some((certificates(cert)?, Arc::new(private_key(key)?)));
        Ok(self)
    }

    pub(crate) fn config(&self) -> Result<Arc<ClientConfig>, Error> {
        let roots = match &self.ca {
            Some(ca) => ca.clone(),
            None => {
                let mut roots = RootCertStore::empty();
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
                roots
            }
        };
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error("TLS versions", e))?
            .with_root_certificates(roots);
        let config = match &self.identity {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .map_err(|e| tls_error("client certificate", e))?,
            None => builder.with_no_client_auth(),
        };
        Ok(Arc::new(config))
    }
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("own_ca", &self.ca.is_some())
            .field("client_cert", &self.identity.is_some())
            .finish()
    }
}

/// Accepts TCP connections and hands on those whose TLS handshake completed,
/// each handshake on its own task and within a time limit, so that a slow
/// or silent client delays nobody.
pub(crate) struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
}

impl TlsListener {
    pub(crate) fn new(listener: TcpListener, acceptor: TlsAcceptor) -> io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let (ready_tx, ready) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: wait, go on.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let (acceptor, handed_on) = (acceptor.clone(), ready_tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let _ = handed_on.send((stream, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
                if ready_tx.is_closed() {
                    return;
                }
            }
        });
        Ok(Self { ready, local_addr })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accepting task never ends while this listener lives.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

/// The certificate chain a client presented, as its TLS stream holds it.
pub(crate) fn peer_certificates(stream: &TlsStream<TcpStream>) -> Option<Arc<[CertificateDer<'static>]>> {
    stream.get_ref().1.peer_certificates().map(Arc::from)
}
