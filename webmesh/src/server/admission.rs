//! Who may connect: the checks made on the HTTP upgrade request, before any
//! WebSocket exists.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};

use super::Connection;

/// The HTTP request that opens a connection, as an authentication hook sees it.
#[derive(Debug, Clone)]
pub struct Handshake {
    pub(crate) headers: HeaderMap,
    pub(crate) uri: Uri,
    pub(crate) peer: Option<SocketAddr>,
    #[cfg(feature = "tls")]
    pub(crate) certificates: Option<Arc<[crate::CertificateDer<'static>]>>,
}

impl Handshake {
    /// All the request's headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// One header, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The token of an `Authorization: Bearer <token>` header.
    pub fn bearer_token(&self) -> Option<&str> {
        let value = self.header("authorization")?;
        let (scheme, token) = value.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    }

    /// One parameter of the URL's query string, percent-decoded.
    pub fn query(&self, name: &str) -> Option<String> {
        let query = self.uri.query()?;
        form_urlencoded::parse(query.as_bytes()).find(|(key, _)| key == name).map(|(_, value)| value.into_owned())
    }

    /// The path of the request.
    pub fn path(&self) -> &str {
        self.uri.path()
    }

    /// The client's address, when known.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// The certificate chain the client presented in its TLS handshake,
    /// its own certificate first, each in DER (feature `tls`).
    ///
    /// Set only on a server that serves TLS itself ([`ServerBuilder::tls`](crate::ServerBuilder::tls))
    /// and asks clients for a certificate
    /// ([`TlsConfig::client_ca_pem`](crate::TlsConfig::client_ca_pem)); the
    /// chain was verified against that CA before this hook runs. `None` over
    /// plain `ws://`, when mounted in an axum application (which terminates
    /// TLS itself), and for a client without a certificate where
    /// [`TlsConfig::allow_clients_without_certificate`](crate::TlsConfig::allow_clients_without_certificate)
    /// lets one in.
    ///
    /// To authorise a service by its certificate, read a name from it with
    /// an X.509 parser (such as `x509-parser`), or compare it with the
    /// certificates you issued:
    ///
    /// ```
    /// use webmesh::{AuthError, Handshake};
    ///
    /// #[derive(Clone)]
    /// struct Service(&'static str);
    ///
    /// /// The DER of each service's certificate, as issued.
    /// fn known_services() -> Vec<(&'static str, Vec<u8>)> {
    ///     Vec::new()
    /// }
    ///
    /// let server = webmesh::Server::builder().authenticate(|handshake: Handshake| async move {
    ///     let Some(chain) = handshake.peer_certificates() else {
    ///         return Err(AuthError::unauthorized("present a client certificate"));
    ///     };
    ///     known_services()
    ///         .into_iter()
    ///         .find(|(_, der)| der.as_slice() == chain[0].as_ref())
    ///         .map(|(name, _)| Service(name))
    ///         .ok_or_else(|| AuthError::forbidden("unknown certificate"))
    /// });
    /// ```
    #[cfg(feature = "tls")]
    pub fn peer_certificates(&self) -> Option<&[crate::CertificateDer<'static>]> {
        self.certificates.as_deref()
    }
}

/// Why an authentication hook refused a connection: the HTTP status and a
/// message sent to the client (never log secrets into it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthError {
    status: StatusCode,
    message: String,
}

impl AuthError {
    /// 401: the client did not prove who it is.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self { status: StatusCode::UNAUTHORIZED, message: message.into() }
    }

    /// 403: the client is known, and not allowed.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self { status: StatusCode::FORBIDDEN, message: message.into() }
    }

    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    pub(crate) fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.status.as_u16(), self.message)
    }
}

impl std::error::Error for AuthError {}

/// What a successful authentication leaves on the connection.
pub(crate) type Admit = Box<dyn FnOnce(&Connection) + Send>;
type AuthFuture = Pin<Box<dyn Future<Output = Result<Admit, AuthError>> + Send>>;
pub(crate) type Authenticate = Arc<dyn Fn(Handshake) -> AuthFuture + Send + Sync>;

/// Wraps a user hook returning an identity into one that stores it.
pub(crate) fn authenticate<F, Fut, I>(hook: F) -> Authenticate
where
    F: Fn(Handshake) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<I, AuthError>> + Send + 'static,
    I: Clone + Send + Sync + 'static,
{
    Arc::new(move |handshake| {
        let identity = hook(handshake);
        Box::pin(async move {
            let identity = identity.await?;
            let admit: Admit = Box::new(move |conn: &Connection| {
                conn.insert_extension(crate::extract::Authenticated(identity));
            });
            Ok(admit)
        })
    })
}

/// Which `Origin` headers are accepted.
#[derive(Debug, Clone, Default)]
pub(crate) enum Origins {
    /// Requests with an `Origin` are refused (browsers); those without are accepted.
    #[default]
    NoBrowsers,
    /// Only these origins, and requests without one.
    Only(Vec<HeaderValue>),
    /// Any origin.
    Any,
}

impl Origins {
    pub(crate) fn allows(&self, origin: Option<&HeaderValue>) -> bool {
        match (self, origin) {
            (_, None) | (Origins::Any, _) => true,
            (Origins::NoBrowsers, Some(_)) => false,
            (Origins::Only(allowed), Some(origin)) => allowed.iter().any(|a| a == origin),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_and_bearer() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_static("Bearer s3cret "));
        let handshake = Handshake {
            headers,
            uri: "/mesh?token=a%20b&x=1&flag".parse().unwrap(),
            peer: None,
            #[cfg(feature = "tls")]
            certificates: None,
        };
        assert_eq!(handshake.bearer_token(), Some("s3cret"));
        assert_eq!(handshake.query("token").as_deref(), Some("a b"));
        assert_eq!(handshake.query("flag").as_deref(), Some(""));
        assert_eq!(handshake.query("missing"), None);
        assert_eq!(handshake.path(), "/mesh");
    }

    #[test]
    fn origins() {
        let site = HeaderValue::from_static("https://app.example");
        let other = HeaderValue::from_static("https://evil.example");
        assert!(Origins::NoBrowsers.allows(None));
        assert!(!Origins::NoBrowsers.allows(Some(&site)));
        assert!(Origins::Only(vec![site.clone()]).allows(Some(&site)));
        assert!(!Origins::Only(vec![site]).allows(Some(&other)));
        assert!(Origins::Any.allows(Some(&other)));
    }
}
