use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::http::Extensions;
use axum::http::HeaderValue;
use tokio::sync::{watch, Semaphore};
use tokio_util::task::TaskTracker;

use super::admission::{self, AuthError, Authenticate, Handshake, Origins};
use super::gate::SubscribeGate;
use super::hooks::{DisconnectReason, Hooks};
use super::serve::Server;
use super::Connection;
use crate::handler::{BoxedHandler, Handler};
use crate::heartbeat::Heartbeat;
use crate::memory::MemoryBudget;
use crate::protocol::{Codec, Compression};
use crate::pubsub::{Hub, Limits, TopicLimits, MAX_TOPIC_SEGMENTS_CEILING};
use crate::routing::{RouteKind, RouteTable, Router};
use crate::Error;

/// The address `webmesh::serve()` binds when `WEBMESH_ADDR` is not set:
/// every interface, on the original webmesh port.
pub const DEFAULT_ADDR: &str = "0.0.0.0:4269";

/// The default of [`ServerBuilder::max_message_size`]: 8 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 8 << 20;

/// The default of [`ServerBuilder::outbound_queue`]: 1024 messages.
pub const DEFAULT_OUTBOUND_QUEUE: usize = 1024;

/// The default of [`ServerBuilder::shutdown_timeout`]: 10 seconds.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// The default of [`ServerBuilder::read_buffer_size`]: 1 KiB.
///
/// Idle connections should cost little (axum's default is 128 KiB, about
/// 134 KiB of memory per idle connection). A larger message does not need a
/// larger buffer: once a frame's header is read, room for the whole frame is
/// reserved, so this only sizes the first read of each frame. Measured here,
/// 1 KiB and 4 KiB cost the same CPU per call, small or 16 KiB messages.
pub const DEFAULT_READ_BUFFER_SIZE: usize = 1 << 10;

/// The default of [`ServerBuilder::max_connections`]: 10,000.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// The default of [`ServerBuilder::max_calls_in_flight`]: 1024 per connection.
pub const DEFAULT_MAX_CALLS_IN_FLIGHT: usize = 1024;

/// The default of [`ServerBuilder::upgrade_timeout`]: 10 seconds.
pub const DEFAULT_UPGRADE_TIMEOUT: Duration = Duration::from_secs(10);

/// The default of [`ServerBuilder::event_queue`]: 1024 events.
pub const DEFAULT_EVENT_QUEUE: usize = 1024;

/// The default of [`ServerBuilder::connection_memory`]: 16 MiB each way.
///
/// nats-server allows 64 MB of pending output per client. webmesh counts
/// both directions, and holds a hostile connection to well under 64 MiB of
/// resident memory in all: 16 MiB each way, plus what the allocator keeps
/// around them, measured at about twice that.
pub const DEFAULT_CONNECTION_MEMORY: usize = 16 << 20;

/// The default of [`ServerBuilder::memory_budget`]: 1 GiB.
pub const DEFAULT_MEMORY_BUDGET: usize = 1 << 30;

/// The default of [`ServerBuilder::max_subscriptions_per_connection`]: 2048.
pub const DEFAULT_MAX_SUBSCRIPTIONS_PER_CONNECTION: usize = 2048;

/// The default of [`ServerBuilder::max_subscriptions`]: 200,000.
pub const DEFAULT_MAX_SUBSCRIPTIONS: usize = 200_000;

/// The default of [`ServerBuilder::write_timeout`]: 30 seconds.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// The default of [`ServerBuilder::max_will_delay`]: one hour.
pub const DEFAULT_MAX_WILL_DELAY: Duration = Duration::from_secs(3600);

/// The default of [`ServerBuilder::pending_wills_memory`]: 64 MiB.
pub const DEFAULT_PENDING_WILLS_MEMORY: usize = 64 << 20;

/// Configures a [`Server`]: address, state, hooks, codecs and limits.
///
/// ```no_run
/// # async fn demo() -> Result<(), webmesh::Error> {
/// let server = webmesh::Server::builder()
///     .addr("127.0.0.1:0")
///     .state(String::from("shared config"))
///     .on_connect(|conn| println!("{} connected", conn.id()))
///     .bind()
///     .await?;
/// println!("listening on {}", server.local_addr());
/// server.serve().await
/// # }
/// ```
#[must_use]
pub struct ServerBuilder {
    addr: Option<String>,
    router: Router,
    include_registered: bool,
    states: Extensions,
    hooks: Hooks,
    not_found: Option<BoxedHandler>,
    codecs: Vec<Arc<dyn Codec>>,
    max_message_size: usize,
    outbound_queue: usize,
    event_queue: usize,
    compression: Compression,
    hub: Option<Hub>,
    shutdown_timeout: Duration,
    read_buffer_size: usize,
    authenticate: Option<Authenticate>,
    origins: Origins,
    max_connections: usize,
    max_calls_in_flight: usize,
    heartbeat: Option<Heartbeat>,
    upgrade_timeout: Duration,
    connection_memory: usize,
    memory_budget: usize,
    write_timeout: Duration,
    max_subscriptions_per_connection: usize,
    max_subscriptions: usize,
    topic_limits: TopicLimits,
    max_will_delay: Duration,
    pending_wills_memory: usize,
    #[cfg(feature = "tls")]
    tls: Option<crate::TlsConfig>,
    expose_internal_errors: bool,
}

/// Everything a running server's connections share.
pub(crate) struct Shared {
    pub(crate) routes: RouteTable,
    pub(crate) subscribe_routes: RouteTable,
    pub(crate) publish_routes: RouteTable,
    pub(crate) states: Extensions,
    pub(crate) hooks: Hooks,
    pub(crate) not_found: Option<BoxedHandler>,
    pub(crate) codecs: Vec<Arc<dyn Codec>>,
    pub(crate) max_message_size: usize,
    pub(crate) outbound_queue: usize,
    pub(crate) event_queue: usize,
    pub(crate) compression: Compression,
    pub(crate) hub: Hub,
    /// Set when the server shuts down.
    pub(crate) shutdown: watch::Sender<bool>,
    pub(crate) shutdown_timeout: Duration,
    /// The open WebSocket sessions, which axum does not track.
    pub(crate) sessions: TaskTracker,
    pub(crate) read_buffer_size: usize,
    pub(crate) authenticate: Option<Authenticate>,
    pub(crate) origins: Origins,
    /// One permit per open connection.
    pub(crate) connections: Arc<Semaphore>,
    pub(crate) max_calls_in_flight: usize,
    pub(crate) heartbeat: Option<Heartbeat>,
    pub(crate) upgrade_timeout: Duration,
    /// What all connections hold, in bytes.
    pub(crate) memory: Arc<MemoryBudget>,
    pub(crate) connection_memory: usize,
    pub(crate) write_timeout: Duration,
    /// Whether callers see the details of errors (see [`CallError::with_detail`](crate::CallError::with_detail)).
    pub(crate) expose_internal_errors: bool,
    /// The calls handled, for [`ServerStats`](crate::ServerStats).
    pub(crate) counters: super::stats::Counters,
    /// The clients' last wills.
    pub(crate) wills: super::Wills,
}

impl Shared {
    /// Shares the server's state, and puts its subscribe handlers in charge
    /// of the hub's wildcard deliveries.
    pub(crate) fn start(self) -> Arc<Self> {
        let shared = Arc::new(self);
        shared.hub.set_gate(Arc::new(SubscribeGate::new(&shared)));
        shared
    }
}

impl Default for ServerBuilder {
    fn default() -> Self {
        Self {
            addr: None,
            router: Router::new(),
            include_registered: true,
            states: Extensions::new(),
            hooks: Hooks::default(),
            not_found: None,
            codecs: Vec::new(),
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            outbound_queue: DEFAULT_OUTBOUND_QUEUE,
            event_queue: DEFAULT_EVENT_QUEUE,
            compression: Compression::default(),
            hub: None,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            read_buffer_size: DEFAULT_READ_BUFFER_SIZE,
            authenticate: None,
            origins: Origins::default(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_calls_in_flight: DEFAULT_MAX_CALLS_IN_FLIGHT,
            heartbeat: Some(Heartbeat::default()),
            upgrade_timeout: DEFAULT_UPGRADE_TIMEOUT,
            connection_memory: DEFAULT_CONNECTION_MEMORY,
            memory_budget: DEFAULT_MEMORY_BUDGET,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            max_subscriptions_per_connection: DEFAULT_MAX_SUBSCRIPTIONS_PER_CONNECTION,
            max_subscriptions: DEFAULT_MAX_SUBSCRIPTIONS,
            topic_limits: TopicLimits::DEFAULT,
            max_will_delay: DEFAULT_MAX_WILL_DELAY,
            pending_wills_memory: DEFAULT_PENDING_WILLS_MEMORY,
            #[cfg(feature = "tls")]
            tls: None,
            expose_internal_errors: false,
        }
    }
}

impl ServerBuilder {
    /// The address to listen on, e.g. `"127.0.0.1:0"` for any free port.
    ///
    /// Defaults to `WEBMESH_ADDR` if set, else [`DEFAULT_ADDR`].
    pub fn addr(mut self, addr: impl Into<String>) -> Self {
        self.addr = Some(addr.into());
        self
    }

    /// Adds the handlers of `router` to those declared with `#[webmesh::on]`.
    pub fn router(mut self, router: Router) -> Self {
        self.router = self.router.merge(router);
        self
    }

    /// Whether to serve the handlers declared with `#[webmesh::on]`,
    /// `#[webmesh::subscribe]` and `#[webmesh::publish]` (default `true`).
    /// Turn it off to serve only a [`Router`], e.g. in tests.
    pub fn registered_handlers(mut self, include: bool) -> Self {
        self.include_registered = include;
        self
    }

    /// Makes `state` available to handlers through [`State<T>`](crate::State).
    /// One value per type; a second value of the same type replaces the first.
    pub fn state<T: Clone + Send + Sync + 'static>(mut self, state: T) -> Self {
        self.states.insert(state);
        self
    }

    /// Runs `hook` when a client connects, before its first message is read.
    pub fn on_connect(mut self, hook: impl Fn(&Connection) + Send + Sync + 'static) -> Self {
        self.hooks.on_connect = Some(Arc::new(hook));
        self
    }

    /// Runs `hook` when a connection ends, with the reason.
    pub fn on_disconnect(mut self, hook: impl Fn(&Connection, &DisconnectReason) + Send + Sync + 'static) -> Self {
        self.hooks.on_disconnect = Some(Arc::new(hook));
        self
    }

    /// Answers messages to paths that have no handler.
    ///
    /// By default a native call gets the error `not_found`, and a webmesh
    /// 0.1.2 client gets the data `"Path not found"`, as 0.1.2 answered.
    pub fn not_found<H: Handler<T>, T>(mut self, handler: H) -> Self {
        self.not_found = Some(BoxedHandler::new(handler));
        self
    }

    /// Accepts clients that ask for `codec` (WebSocket subprotocol
    /// `webmesh.<name>`), in addition to the built-in formats.
    pub fn codec(mut self, codec: impl Codec) -> Self {
        self.codecs.push(Arc::new(codec));
        self
    }

    /// The largest message accepted, in bytes, after decompression
    /// (default [`DEFAULT_MAX_MESSAGE_SIZE`]). Larger ones close the
    /// connection with code 1009.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// How many outgoing messages may wait per connection (default
    /// [`DEFAULT_OUTBOUND_QUEUE`]); beyond it, senders wait.
    pub fn outbound_queue(mut self, messages: usize) -> Self {
        self.outbound_queue = messages.max(1);
        self
    }

    /// How many events may wait per connection before its subscriptions'
    /// [`LagPolicy`](crate::LagPolicy) applies (default [`DEFAULT_EVENT_QUEUE`]).
    pub fn event_queue(mut self, events: usize) -> Self {
        self.event_queue = events.max(1);
        self
    }

    /// Checks every connection before it opens: `hook` sees the HTTP
    /// request (headers, query, peer address) and returns an identity, which
    /// handlers receive with the [`Authenticated`](crate::extract::Authenticated)
    /// extractor, or an [`AuthError`], answered with 401 or 403 before any
    /// WebSocket exists. webmesh never logs the request's headers.
    ///
    /// ```
    /// use webmesh::{AuthError, Handshake};
    ///
    /// #[derive(Clone)]
    /// struct Service(String);
    ///
    /// let server = webmesh::Server::builder().authenticate(|handshake: Handshake| async move {
    ///     match handshake.bearer_token() {
    ///         Some("billing-token") => Ok(Service("billing".into())),
    ///         Some(_) => Err(AuthError::forbidden("unknown token")),
    ///         None => Err(AuthError::unauthorized("send Authorization: Bearer <token>")),
    ///     }
    /// });
    /// ```
    pub fn authenticate<F, Fut, I>(mut self, hook: F) -> Self
    where
        F: Fn(Handshake) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<I, AuthError>> + Send + 'static,
        I: Clone + Send + Sync + 'static,
    {
        self.authenticate = Some(admission::authenticate(hook));
        self
    }

    /// Accepts browser connections from these origins (exact `Origin`
    /// values, such as `https://app.example.com`).
    ///
    /// By default a request that carries an `Origin` header (a browser's) is
    /// refused with 403, against cross-site WebSocket hijacking, and one
    /// without (a service's) is accepted.
    pub fn allowed_origins<I, S>(mut self, origins: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let origins = origins.into_iter().filter_map(|o| HeaderValue::from_str(o.as_ref()).ok()).collect();
        self.origins = Origins::Only(origins);
        self
    }

    /// Accepts browser connections from any origin: only for servers that
    /// authenticate connections by other means than cookies.
    pub fn allow_any_origin(mut self) -> Self {
        self.origins = Origins::Any;
        self
    }

    /// The most connections open at once (default
    /// [`DEFAULT_MAX_CONNECTIONS`]); beyond it, upgrades are refused with
    /// 503 until connections close.
    pub fn max_connections(mut self, connections: usize) -> Self {
        self.max_connections = connections;
        self
    }

    /// The most calls a connection may have under way (default
    /// [`DEFAULT_MAX_CALLS_IN_FLIGHT`]); at the limit the server stops
    /// reading from that connection until one finishes, so a flood waits in
    /// the client's socket instead of the server's memory.
    pub fn max_calls_in_flight(mut self, calls: usize) -> Self {
        self.max_calls_in_flight = calls.max(1);
        self
    }

    /// Pings a client that has been silent for `interval`, and closes its
    /// connection if it then stays silent for `timeout` (defaults
    /// [`DEFAULT_PING_INTERVAL`](crate::DEFAULT_PING_INTERVAL), 25 s, and
    /// [`DEFAULT_PING_TIMEOUT`](crate::DEFAULT_PING_TIMEOUT), 20 s, as
    /// socket.io). Any message counts as a sign of life.
    pub fn heartbeat(mut self, interval: Duration, timeout: Duration) -> Self {
        self.heartbeat = Some(Heartbeat { interval, timeout });
        self
    }

    /// Serves `wss://` with this certificate (feature `tls`). Each client's
    /// TLS handshake runs on its own task, within 10 seconds.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, config: crate::TlsConfig) -> Self {
        self.tls = Some(config);
        self
    }

    /// How long a client may take to send its HTTP upgrade request (default
    /// [`DEFAULT_UPGRADE_TIMEOUT`]); one that trickles it (slowloris) is
    /// dropped, without delaying anyone else.
    pub fn upgrade_timeout(mut self, timeout: Duration) -> Self {
        self.upgrade_timeout = timeout;
        self
    }

    /// The most bytes a connection may make the server hold in each
    /// direction (default [`DEFAULT_CONNECTION_MEMORY`]):
    ///
    /// - **incoming**, the messages under way, each counted as its bytes
    ///   after decompression plus 32 bytes per element (what a decoded value
    ///   takes). At the limit the server stops reading the connection until
    ///   handlers finish. A message heavier than the limit alone is refused
    ///   with the error `too_large`, undecoded.
    /// - **outgoing**, the replies, pushes and events waiting to be written.
    ///   Events past the limit are dropped by the subscriptions'
    ///   [`LagPolicy`](crate::LagPolicy); a reply or push that would pass it,
    ///   while others wait, closes the connection with code 1008: the client
    ///   does not read what it asked for (a slow consumer).
    /// - **subscriptions**, what the connection's subscriptions hold in the
    ///   server's registry (about 500 bytes for a short topic, 4.4 KB for a
    ///   32-segment wildcard). A SUBSCRIBE past the limit gets `limit`.
    pub fn connection_memory(mut self, bytes: usize) -> Self {
        self.connection_memory = bytes.max(1024);
        self
    }

    /// The most bytes all connections together may make the server hold
    /// (default [`DEFAULT_MEMORY_BUDGET`]), counted as for
    /// [`connection_memory`](Self::connection_memory). Past it, the
    /// connection holding the most is closed with code 1013 (try again
    /// later), one at a time, instead of the server growing.
    pub fn memory_budget(mut self, bytes: usize) -> Self {
        self.memory_budget = bytes;
        self
    }

    /// How long a write to a client may make no progress (default
    /// [`DEFAULT_WRITE_TIMEOUT`]) before its connection is closed: a client
    /// that keeps sending but never reads would otherwise hold its buffers
    /// for ever. Checked at least every `timeout`.
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// The most subscriptions one connection may have (default
    /// [`DEFAULT_MAX_SUBSCRIPTIONS_PER_CONNECTION`]). Past it a SUBSCRIBE gets
    /// the error `limit`, naming the limit, and the connection goes on.
    pub fn max_subscriptions_per_connection(mut self, subscriptions: usize) -> Self {
        self.max_subscriptions_per_connection = subscriptions;
        self
    }

    /// The longest delay a client may give its last will (default
    /// [`DEFAULT_MAX_WILL_DELAY`]); a WILL with a longer one gets the error
    /// `limit`. See [`ClientBuilder::will`](crate::ClientBuilder::will).
    pub fn max_will_delay(mut self, delay: Duration) -> Self {
        self.max_will_delay = delay;
        self
    }

    /// The most bytes the wills of clients that are gone may hold while they
    /// wait out their delay (default [`DEFAULT_PENDING_WILLS_MEMORY`]). A
    /// will that would take more is published at once, not dropped: its
    /// delay is cut short rather than the server growing.
    pub fn pending_wills_memory(mut self, bytes: usize) -> Self {
        self.pending_wills_memory = bytes;
        self
    }

    /// The most subscriptions all connections together may have (default
    /// [`DEFAULT_MAX_SUBSCRIPTIONS`]); past it, SUBSCRIBEs get `limit`.
    pub fn max_subscriptions(mut self, subscriptions: usize) -> Self {
        self.max_subscriptions = subscriptions;
        self
    }

    /// The longest pattern a client may subscribe to, or topic it may publish
    /// to, in bytes (default [`DEFAULT_MAX_TOPIC_LENGTH`]); also bounds topics
    /// given to [`Hub::publish`](crate::Hub::publish). Past it the SUBSCRIBE
    /// or PUBLISH gets the error `limit`, checked before the pattern is split.
    ///
    /// [`DEFAULT_MAX_TOPIC_LENGTH`]: crate::DEFAULT_MAX_TOPIC_LENGTH
    pub fn max_topic_length(mut self, bytes: usize) -> Self {
        self.topic_limits.length = bytes;
        self
    }

    /// The most `/`-separated segments in a pattern or topic (default
    /// [`DEFAULT_MAX_TOPIC_SEGMENTS`], at most 256: larger values are taken
    /// as 256); past it, `limit`, as for
    /// [`max_topic_length`](Self::max_topic_length).
    ///
    /// [`DEFAULT_MAX_TOPIC_SEGMENTS`]: crate::DEFAULT_MAX_TOPIC_SEGMENTS
    pub fn max_topic_segments(mut self, segments: usize) -> Self {
        self.topic_limits.segments = segments.min(MAX_TOPIC_SEGMENTS_CEILING);
        self
    }

    /// Never pings clients nor closes silent ones.
    pub fn no_heartbeat(mut self) -> Self {
        self.heartbeat = None;
        self
    }

    /// The size of each connection's first read buffer (default
    /// [`DEFAULT_READ_BUFFER_SIZE`]): larger costs memory per idle
    /// connection, smaller costs read calls.
    pub fn read_buffer_size(mut self, bytes: usize) -> Self {
        self.read_buffer_size = bytes.max(64);
        self
    }

    /// How long a shutdown waits for calls under way before it closes the
    /// connections (default [`DEFAULT_SHUTDOWN_TIMEOUT`]).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// The [`Hub`] this server's subscribers will be on, to publish from
    /// outside handlers. Every call returns the same hub.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), webmesh::Error> {
    /// let mut builder = webmesh::Server::builder();
    /// let hub = builder.hub();
    /// tokio::spawn(async move {
    ///     let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    ///     for n in 0u64.. {
    ///         tick.tick().await;
    ///         let _ = hub.publish("/clock", &n);
    ///     }
    /// });
    /// builder.serve().await
    /// # }
    /// ```
    pub fn hub(&mut self) -> Hub {
        let compression = self.compression;
        self.hub.get_or_insert_with(|| Hub::new(compression)).clone()
    }

    /// Compress native MessagePack messages of at least `bytes` bytes with
    /// zlib (default 1024); `usize::MAX` turns compression off.
    pub fn compression_threshold(mut self, bytes: usize) -> Self {
        self.compression = Compression { threshold: bytes };
        self
    }

    /// Whether callers see the details of internal errors (default
    /// `false`): the error of a handler returning `std::io::Error`,
    /// `anyhow::Error` or `Box<dyn Error + Send + Sync>`, a panic's message,
    /// any [detail](crate::CallError::with_detail). They are logged either
    /// way; turn this on where the callers are your own developers, not in
    /// production, where details (paths, hosts, queries) help attackers.
    ///
    /// ```
    /// let debug = std::env::var("APP_ENV").as_deref() == Ok("dev");
    /// let server = webmesh::Server::builder().expose_internal_errors(debug);
    /// ```
    pub fn expose_internal_errors(mut self, expose: bool) -> Self {
        self.expose_internal_errors = expose;
        self
    }

    /// Builds the route table and binds the listening socket.
    ///
    /// Fails if two handlers serve one path, naming both, or if the address
    /// cannot be bound.
    pub async fn bind(self) -> Result<Server, Error> {
        let addr = match &self.addr {
            Some(addr) => addr.clone(),
            None => std::env::var("WEBMESH_ADDR").unwrap_or_else(|_| DEFAULT_ADDR.to_owned()),
        };
        #[cfg(feature = "tls")]
        let tls = self.tls.as_ref().map(crate::TlsConfig::acceptor).transpose()?;
        #[cfg(not(feature = "tls"))]
        let tls = None;
        let shared = self.into_shared()?;
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        Server::new(listener, shared, tls)
    }

    /// Binds and serves until the process ends; see [`Server::serve`].
    pub async fn serve(self) -> Result<(), Error> {
        self.bind().await?.serve().await
    }

    /// Binds and serves until `signal` completes; see [`Server::serve_with_shutdown`].
    pub async fn serve_with_shutdown<F>(self, signal: F) -> Result<(), Error>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.bind().await?.serve_with_shutdown(signal).await
    }

    /// Builds an [`axum::Router`] serving webmesh at its root, to mount in an
    /// existing axum application with [`axum::Router::nest`] or
    /// [`axum::Router::merge`]. The address setting is ignored.
    pub fn into_router(self) -> Result<axum::Router, Error> {
        Ok(super::upgrade::router(self.into_shared()?.start()))
    }

    /// Builds an [`axum::Router`] as [`into_router`](Self::into_router)
    /// does, and the [`Shutdown`](crate::Shutdown) that closes its
    /// WebSocket sessions gracefully when the application stops (axum's own
    /// graceful shutdown does not wait for them).
    ///
    /// ```no_run
    /// # async fn demo(listener: tokio::net::TcpListener) -> Result<(), webmesh::Error> {
    /// let (mesh, shutdown) = webmesh::Server::builder().into_router_with_shutdown()?;
    /// let app = axum::Router::new().nest("/mesh", mesh);
    /// let ctrl_c = async {
    ///     let _ = tokio::signal::ctrl_c().await;
    /// };
    /// axum::serve(listener, app).with_graceful_shutdown(shutdown.on(ctrl_c)).await?;
    /// shutdown.drain().await;
    /// # Ok(()) }
    /// ```
    pub fn into_router_with_shutdown(self) -> Result<(axum::Router, crate::Shutdown), Error> {
        let shared = self.into_shared()?.start();
        Ok((super::upgrade::router(shared.clone()), crate::Shutdown::new(shared)))
    }

    /// Takes the authentication hook out, for a mesh to wrap it.
    pub(crate) fn take_authenticate(&mut self) -> Option<Authenticate> {
        self.authenticate.take()
    }

    /// Sets an authentication hook that decides what the connection gets.
    pub(crate) fn set_authenticate(mut self, authenticate: Authenticate) -> Self {
        self.authenticate = Some(authenticate);
        self
    }

    /// Adds routes to the server's (the mesh's own, say).
    pub(crate) fn add_routes(mut self, router: Router) -> Self {
        self.router = self.router.merge(router);
        self
    }

    /// Whether a not-found handler was set, which a mesh's forwarding would replace.
    /// Answers messages to paths that have no handler with `handler`, which
    /// takes the payload as it came.
    pub(crate) fn not_found_boxed(mut self, handler: BoxedHandler) -> Self {
        self.not_found = Some(handler);
        self
    }

    pub(crate) fn has_not_found(&self) -> bool {
        self.not_found.is_some()
    }

    fn into_shared(mut self) -> Result<Shared, Error> {
        let hub = self.hub();
        hub.set_limits(Limits {
            per_connection: self.max_subscriptions_per_connection,
            total: self.max_subscriptions,
            topics: self.topic_limits,
        });
        let router = if self.include_registered { self.router.with_registered() } else { self.router };
        Ok(Shared {
            wills: super::Wills::new(hub.clone(), self.max_will_delay, self.pending_wills_memory),
            routes: RouteTable::build(RouteKind::Call, &router.routes)?,
            subscribe_routes: RouteTable::build(RouteKind::Subscribe, &router.routes)?,
            publish_routes: RouteTable::build(RouteKind::Publish, &router.routes)?,
            states: self.states,
            hooks: self.hooks,
            not_found: self.not_found,
            codecs: self.codecs,
            max_message_size: self.max_message_size,
            outbound_queue: self.outbound_queue,
            event_queue: self.event_queue,
            compression: self.compression,
            hub,
            shutdown: watch::Sender::new(false),
            shutdown_timeout: self.shutdown_timeout,
            sessions: TaskTracker::new(),
            read_buffer_size: self.read_buffer_size,
            authenticate: self.authenticate,
            origins: self.origins,
            connections: Arc::new(Semaphore::new(self.max_connections)),
            max_calls_in_flight: self.max_calls_in_flight,
            heartbeat: self.heartbeat,
            upgrade_timeout: self.upgrade_timeout,
            memory: MemoryBudget::new(self.memory_budget),
            connection_memory: self.connection_memory,
            write_timeout: self.write_timeout,
            expose_internal_errors: self.expose_internal_errors,
            counters: super::stats::Counters::default(),
        })
    }
}
