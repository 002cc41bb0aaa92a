//! Opening the connection: the URL, the headers of each dial, a time limit,
//! and errors that say what to try.

use std::sync::Arc;
use std::time::Duration;

use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::driver::Socket;
use crate::Error;

/// The default time limit of one dial (TCP, TLS and the upgrade): 10 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Headers computed anew for each dial, e.g. a token that is renewed.
pub(crate) type HeaderProvider = Arc<dyn Fn() -> Vec<(String, String)> + Send + Sync>;

/// Everything needed to open the connection, and open it again.
#[derive(Clone)]
pub(crate) struct Dialer {
    pub(crate) request: Request,
    pub(crate) config: WebSocketConfig,
    pub(crate) timeout: Duration,
    pub(crate) headers: Option<HeaderProvider>,
    /// How `wss://` is checked; `None` for `ws://`.
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<Arc<rustls::ClientConfig>>,
}

impl Dialer {
    /// The request for `url` with `headers`; a URL whose query follows the
    /// authority directly (`ws://host:4269?token=x`) gets its `/`.
    pub(crate) fn request(url: &str, headers: &[(String, String)]) -> Result<Request, Error> {
        let mut request = normalize(url).into_client_request().map_err(|e| Error::Config(e.to_string()))?;
        for (name, value) in headers {
            append_header(&mut request, name, value)?;
        }
        Ok(request)
    }

    /// Dials once, within the time limit.
    pub(crate) async fn dial(&self) -> Result<Socket, Error> {
        let mut request = self.request.clone();
        if let Some(headers) = &self.headers {
            for (name, value) in headers() {
                append_header(&mut request, &name, &value)?;
            }
        }
        let tls = request.uri().scheme_str() == Some("wss");
        let dialled = tokio::time::timeout(self.timeout, self.open(request)).await;
        match dialled {
            Ok(Ok(socket)) => Ok(socket),
            Ok(Err(e)) => Err(with_hint(e.into(), tls)),
            Err(_) => Err(Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("could not connect within {:?}", self.timeout),
            ))),
        }
    }

    async fn open(&self, request: Request) -> Result<Socket, tokio_tungstenite::tungstenite::Error> {
        #[cfg(feature = "tls")]
        let (socket, _response) = {
            let connector = self.tls.clone().map(tokio_tungstenite::Connector::Rustls);
            tokio_tungstenite::connect_async_tls_with_config(request, Some(self.config), true, connector).await?
        };
        #[cfg(not(feature = "tls"))]
        let (socket, _response) =
            tokio_tungstenite::connect_async_with_config(request, Some(self.config), true).await?;
        Ok(socket)
    }
}

fn append_header(request: &mut Request, name: &str, value: &str) -> Result<(), Error> {
    let header = HeaderName::from_bytes(name.as_bytes()).map_err(|e| Error::Config(format!("header {name}: {e}")))?;
    let value = HeaderValue::from_str(value).map_err(|e| Error::Config(format!("header {name}: {e}")))?;
    request.headers_mut().append(header, value);
    Ok(())
}

/// Inserts the `/` that a URL with a query but no path lacks.
fn normalize(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else { return url.to_owned() };
    let rest = &url[scheme_end..];
    match rest.find(['/', '?', '#']) {
        Some(at) if rest[at..].starts_with(['?', '#']) => format!("{}/{}", &url[..scheme_end + at], &rest[at..]),
        _ => url.to_owned(),
    }
}

/// Adds what to try to the errors of a wrong path or a wrong scheme: a TLS
/// server answers a plain request with bytes that are not HTTP, or hangs
/// up; a plain server answers a TLS hello with HTTP, which rustls reports
/// as a record of an invalid content type.
fn with_hint(error: Error, tls: bool) -> Error {
    use std::io::{Error as IoError, ErrorKind};
    const USE_WSS: &str = "if the server uses TLS, use wss://";
    const USE_WS: &str = "if the server does not use TLS, use ws://";
    match error {
        Error::Refused { status: 404, message } => Error::Refused {
            status: 404,
            message: format!("{message} (no WebSocket endpoint at this path: check the URL's path)"),
        },
        Error::Protocol(m) if !tls => Error::Protocol(format!("{m} ({USE_WSS})")),
        Error::Closed(_) if !tls => {
            Error::Protocol(format!("the server closed the connection during the handshake ({USE_WSS})"))
        }
        Error::Io(e) if !tls && matches!(e.kind(), ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset) => {
            Error::Io(IoError::new(e.kind(), format!("{e} ({USE_WSS})")))
        }
        Error::Io(e) if tls && e.to_string().contains("InvalidContentType") => {
            Error::Io(IoError::new(e.kind(), format!("{e} ({USE_WS})")))
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_without_a_path_gets_its_slash() {
        assert_eq!(normalize("ws://127.0.0.1:4269?token=x"), "ws://127.0.0.1:4269/?token=x");
        assert_eq!(normalize("ws://127.0.0.1:4269/?token=x"), "ws://127.0.0.1:4269/?token=x");
        assert_eq!(normalize("ws://h/a?b"), "ws://h/a?b");
        assert_eq!(normalize("ws://h"), "ws://h");
        assert_eq!(normalize("ws://h#f"), "ws://h/#f");
    }

    fn dialer(url: &str) -> Dialer {
        Dialer {
            request: Dialer::request(url, &[]).unwrap(),
            config: WebSocketConfig::default(),
            timeout: Duration::from_millis(300),
            headers: None,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    #[tokio::test]
    async fn dialed_sockets_have_nagle_off() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let _socket = tokio_tungstenite::accept_async(tcp).await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let socket = dialer(&format!("ws://{addr}")).dial().await.unwrap();
        match socket.get_ref() {
            tokio_tungstenite::MaybeTlsStream::Plain(tcp) => assert!(tcp.nodelay().unwrap()),
            _ => panic!("a plain socket for ws://"),
        }
    }

    #[tokio::test]
    async fn a_dial_to_a_server_that_never_answers_gives_up_in_time() {
        // Accepts TCP, then says nothing: as a stopped (SIGSTOP) process does.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let error = dialer(&format!("ws://{addr}")).dial().await.unwrap_err();
        assert!(error.to_string().contains("could not connect within"), "{error}");
        drop(listener);
    }
}
