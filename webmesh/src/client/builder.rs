use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::dial::{Dialer, HeaderProvider, DEFAULT_CONNECT_TIMEOUT};
use super::driver::Link;
use super::handle::Client;
use super::reconnect::{Reconnect, WhileDisconnected};
use super::shared::ClientShared;
use super::will::Will;
use crate::heartbeat::Heartbeat;
use crate::protocol::{codec_subprotocol, Codec, Compression, LegacyFormat, WireFormat};
use crate::Error;

/// The default per-call timeout: 30 seconds.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The default bound of the bytes waiting to be written: 8 MiB.
pub const DEFAULT_OUTBOUND_BUFFER: usize = 8 << 20;

/// The default bound of the bytes received and not read yet, per
/// subscription or `Pushes` stream: 16 MiB.
pub const DEFAULT_RECEIVE_BUFFER: usize = 16 << 20;

/// Configures a [`Client`]: codec, legacy mode, timeout and limits.
///
/// ```no_run
/// # async fn demo() -> Result<(), webmesh::Error> {
/// use std::time::Duration;
///
/// let client = webmesh::Client::builder("ws://127.0.0.1:4269")
///     .json()
///     .timeout(Duration::from_secs(5))
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[must_use]
pub struct ClientBuilder {
    url: String,
    format: WireFormat,
    timeout: Duration,
    compression: Compression,
    max_message_size: usize,
    outbound_buffer: usize,
    receive_buffer: usize,
    connect_timeout: Duration,
    headers: Vec<(String, String)>,
    header_provider: Option<HeaderProvider>,
    heartbeat: Option<Heartbeat>,
    reconnect: Option<Reconnect>,
    while_disconnected: WhileDisconnected,
    will: Option<Result<Will, Error>>,
    will_delay: Duration,
    #[cfg(feature = "tls")]
    tls: Option<crate::ClientTls>,
}

impl ClientBuilder {
    pub(crate) fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            format: WireFormat::MsgPack,
            timeout: DEFAULT_TIMEOUT,
            compression: Compression::default(),
            max_message_size: crate::server::DEFAULT_MAX_MESSAGE_SIZE,
            outbound_buffer: DEFAULT_OUTBOUND_BUFFER,
            receive_buffer: DEFAULT_RECEIVE_BUFFER,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            headers: Vec::new(),
            header_provider: None,
            heartbeat: Some(Heartbeat::default()),
            reconnect: Some(Reconnect::default()),
            while_disconnected: WhileDisconnected::default(),
            will: None,
            will_delay: Duration::ZERO,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// Speaks native MessagePack in binary frames (the default).
    pub fn msgpack(mut self) -> Self {
        self.format = WireFormat::MsgPack;
        self
    }

    /// Speaks native JSON in text frames, readable in any WebSocket inspector.
    pub fn json(mut self) -> Self {
        self.format = WireFormat::Json;
        self
    }

    /// Speaks a user codec, which the server must also know.
    pub fn codec(mut self, codec: impl Codec) -> Self {
        self.format = WireFormat::Custom(Arc::new(codec));
        self
    }

    /// Talks to a server running the Python webmesh 0.1.2 package, configured
    /// with the given serializer.
    ///
    /// That protocol has no call ids, so calls are made one at a time; a
    /// reply is the next message on the called path. Its `"Path not found"`
    /// answer becomes [`Error::NotFound`].
    pub fn legacy(mut self, format: LegacyFormat) -> Self {
        self.format = WireFormat::Legacy(format);
        self
    }

    /// How long a call waits for its reply by default (default
    /// [`DEFAULT_TIMEOUT`]; `Duration::MAX`: no limit).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Compress native MessagePack messages of at least `bytes` bytes
    /// (default 1024); `usize::MAX` turns compression off.
    pub fn compression_threshold(mut self, bytes: usize) -> Self {
        self.compression = Compression { threshold: bytes };
        self
    }

    /// The largest message sent to or accepted from the server, before
    /// compression (default 8 MiB, the server's default
    /// [`DEFAULT_MAX_MESSAGE_SIZE`](crate::DEFAULT_MAX_MESSAGE_SIZE)).
    ///
    /// A server closes the connection on a message over its limit, failing
    /// every call on it; set this to the server's limit so that a larger
    /// call or emit is refused here instead, with [`Error::TooLarge`].
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// How many bytes of messages may wait to be written (default
    /// [`DEFAULT_OUTBOUND_BUFFER`]). When they are written more slowly than
    /// they are made, `call`, `emit` and `publish` wait for room.
    pub fn outbound_buffer(mut self, bytes: usize) -> Self {
        self.outbound_buffer = bytes;
        self
    }

    /// How many bytes of received data a subscription, a
    /// [`Pushes`](crate::Pushes) stream or (in the blocking client) the push
    /// handlers may hold unread (default [`DEFAULT_RECEIVE_BUFFER`]; at most
    /// 1024 messages too). What arrives beyond that is dropped and reported
    /// (as [`Error::Lagged`] on a subscription) instead of growing memory.
    pub fn receive_buffer(mut self, bytes: usize) -> Self {
        self.receive_buffer = bytes;
        self
    }

    /// The time limit of one attempt to connect: TCP, TLS and the WebSocket
    /// upgrade (default 10 s). Reconnection attempts have it too.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Pings a server that has been silent for `interval`, and closes the
    /// connection if it then stays silent for `timeout` (defaults 25 s and
    /// 20 s): calls waiting then fail with [`Error::Closed`] instead of
    /// waiting for their timeout on a dead connection.
    pub fn heartbeat(mut self, interval: Duration, timeout: Duration) -> Self {
        self.heartbeat = Some(Heartbeat { interval, timeout });
        self
    }

    /// Never pings the server.
    pub fn no_heartbeat(mut self) -> Self {
        self.heartbeat = None;
        self
    }

    /// How to reconnect after the connection drops (by default: from 100 ms,
    /// doubling up to 10 s between attempts, with jitter).
    ///
    /// Calls that were sent when it dropped fail with [`Error::Closed`]:
    /// they may have run, so they are never sent again. Subscriptions are
    /// made again on the new connection.
    pub fn reconnect(mut self, policy: Reconnect) -> Self {
        self.reconnect = Some(policy);
        self
    }

    /// How to check a `wss://` server and prove who this client is (feature
    /// `tls`). Without it, `wss://` trusts the system's root certificates.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), webmesh::Error> {
    /// let tls = webmesh::ClientTls::default().ca_pem_file("mesh-ca.pem")?;
    /// let client = webmesh::Client::builder("wss://billing.internal:4269").tls(tls).connect().await?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: crate::ClientTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Never reconnects: once the connection drops, the client is closed.
    pub fn no_reconnect(mut self) -> Self {
        self.reconnect = None;
        self
    }

    /// What calls do while reconnecting (default [`WhileDisconnected::Wait`]).
    pub fn while_disconnected(mut self, policy: WhileDisconnected) -> Self {
        self.while_disconnected = policy;
        self
    }

    /// Sends headers computed anew for each connection request, the first
    /// and each reconnection, e.g. credentials that are renewed.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), webmesh::Error> {
    /// # fn current_token() -> String { String::new() }
    /// let client = webmesh::Client::builder("ws://127.0.0.1:4269")
    ///     .headers_with(|| vec![("authorization".into(), format!("Bearer {}", current_token()))])
    ///     .connect()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn headers_with(mut self, headers: impl Fn() -> Vec<(String, String)> + Send + Sync + 'static) -> Self {
        self.header_provider = Some(Arc::new(headers));
        self
    }

    /// Sends `Authorization: Bearer <token>`, asking `token` for it anew at
    /// each connection request; see [`headers_with`](Self::headers_with).
    pub fn bearer_token_with(self, token: impl Fn() -> String + Send + Sync + 'static) -> Self {
        self.headers_with(move || vec![("authorization".to_owned(), format!("Bearer {}", token()))])
    }

    /// Sends an HTTP header with the connection request, e.g. for a server's
    /// authentication hook.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sends `Authorization: Bearer <token>` with the connection request.
    ///
    /// webmesh never logs it, but the WebSocket library under the client
    /// (tungstenite) logs its whole handshake request at TRACE level, under
    /// the target `tungstenite::handshake::client`: keep that target at
    /// DEBUG or below in production (e.g. `RUST_LOG=info,tungstenite=debug`).
    pub fn bearer_token(self, token: impl AsRef<str>) -> Self {
        let value = format!("Bearer {}", token.as_ref());
        self.header("authorization", value)
    }

    /// Leaves a last will: `data`, which the server publishes on `topic` if
    /// this client's connection ends without a clean close (the process
    /// crashed or was killed, the network failed, the server stopped hearing
    /// from it), and never after [`Client::close`] or when the last handle
    /// is dropped (outside a panic).
    ///
    /// The will is the first message on the connection; [`connect`](Self::connect)
    /// fails with the server's refusal if the server does not let this
    /// client publish on `topic` (wills are authorised like publications, by
    /// a `#[webmesh::publish]` handler). On each reconnection the client
    /// sends it again, first. Replace it later with [`Client::set_will`],
    /// withdraw it with [`Client::clear_will`].
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), webmesh::Error> {
    /// use std::time::Duration;
    ///
    /// let client = webmesh::Client::builder("ws://127.0.0.1:4269")
    ///     .will("/workers/7/gone", &"worker 7 died")
    ///     .will_delay(Duration::from_secs(5)) // unless it is back within 5 s
    ///     .connect()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn will(mut self, topic: impl AsRef<str>, data: &(impl Serialize + ?Sized)) -> Self {
        self.will = Some(Will::new(topic.as_ref(), data));
        self
    }

    /// How long the server waits, once the connection ended without a clean
    /// close, before it publishes the will (default: not at all). If the
    /// client reconnects meanwhile (to the same server) the will is not
    /// published, and is in force again on the new connection. Servers
    /// bound it ([`ServerBuilder::max_will_delay`](crate::ServerBuilder::max_will_delay), an hour by default).
    pub fn will_delay(mut self, delay: Duration) -> Self {
        self.will_delay = delay;
        self
    }

    /// Connects.
    ///
    /// A server that refuses the connection (authentication, origin,
    /// connection limit) makes this fail with [`Error::Refused`], carrying
    /// the HTTP status and the server's message.
    pub async fn connect(self) -> Result<Client, Error> {
        let will = self.will.transpose()?;
        if will.is_some() && matches!(self.format, WireFormat::Legacy(_)) {
            return Err(Error::Config("webmesh 0.1.2 servers have no last wills".into()));
        }
        let mut request = Dialer::request(&self.url, &self.headers)?;
        if let WireFormat::Custom(codec) = &self.format {
            let protocol = HeaderValue::from_str(&codec_subprotocol(codec.as_ref()))
                .map_err(|e| Error::Config(format!("codec name: {e}")))?;
            request.headers_mut().insert("sec-websocket-protocol", protocol);
        }
        let config = WebSocketConfig::default()
            .max_message_size(Some(self.max_message_size))
            .max_frame_size(Some(self.max_message_size));
        #[cfg(feature = "tls")]
        let tls = match (request.uri().scheme_str(), &self.tls) {
            (Some("wss"), tls) => Some(tls.clone().unwrap_or_default().config()?),
            _ => None,
        };
        let dialer = Dialer {
            request,
            config,
            timeout: self.connect_timeout,
            headers: self.header_provider,
            #[cfg(feature = "tls")]
            tls,
        };
        let socket = dialer.dial().await?;
        let shared = Arc::new(ClientShared::new(
            self.format,
            self.compression,
            self.timeout,
            self.max_message_size,
            self.outbound_buffer,
            self.receive_buffer,
            self.while_disconnected,
        ));
        shared.testament.set_delay(self.will_delay);
        let client =
            Client::start(socket, shared, Link { heartbeat: self.heartbeat, reconnect: self.reconnect, dialer });
        if let Some(will) = will {
            // Nothing else is queued yet: the will is the first message.
            if let Err(e) = client.put_will(Some(will)).await {
                client.close().await;
                return Err(e);
            }
        }
        Ok(client)
    }
}
