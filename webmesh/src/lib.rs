//! Connect microservices over WebSockets.
//!
//! A service declares handlers on paths with [`#[webmesh::on]`](on); other
//! services connect with a [`Client`] and [`call`](Client::call) them
//! (request/response) or [`emit`](Client::emit) to them (fire-and-forget).
//! Payloads are any serde types, carried as MessagePack (zlib-compressed
//! when large) or JSON. webmesh also speaks the wire format of the Python
//! package `webmesh` 0.1.2, in both directions.
//!
//! ```no_run
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Deserialize)]
//! struct Greet {
//!     name: String,
//! }
//!
//! #[derive(Serialize)]
//! struct Greeting {
//!     text: String,
//! }
//!
//! #[webmesh::on("/greet")]
//! async fn greet(req: Greet) -> Greeting {
//!     Greeting { text: format!("hello, {}", req.name) }
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), webmesh::Error> {
//!     webmesh::serve().await // on WEBMESH_ADDR, default 0.0.0.0:4269
//! }
//! ```
//!
//! And from another service:
//!
//! ```no_run
//! # async fn demo() -> Result<(), webmesh::Error> {
//! let client = webmesh::Client::connect("ws://127.0.0.1:4269").await?;
//! let greeting: serde_json::Value = client.call("/greet", &serde_json::json!({"name": "ada"})).await?;
//! # Ok(()) }
//! ```
//!
//! # Handlers
//!
//! A handler is an `async fn` or a plain `fn`. Its arguments are
//! [extractors](extract): the payload (any `T: DeserializeOwned`, last),
//! the caller's [`Connection`], [`State<T>`]. It returns any `T: Serialize`
//! (the reply), `()` or `Option<T>`, or `Result<T, E>` where `E:`
//! [`IntoCallError`] (an error reply with a code and a message).
//!
//! Messages of one connection are handled in the order they arrive, up to
//! each handler's first wait: a handler that completes without waiting (an
//! emit to a counter, say) is done before the next message is read, and a
//! handler that waits (on I/O, a timer, a lock) continues on its own task
//! while the next messages are handled. A handler that computes for long
//! without waiting holds up its connection's later messages: move such work
//! to `tokio::task::spawn_blocking`.
//!
//! # Mesh
//!
//! A [`Mesh`] node is a server that also links to every other node it
//! knows: [`mesh()`] is to a mesh what [`serve()`] is to one server. Nodes
//! find each other from one seed, report their status, and
//! [`call`](Mesh::call) and [`publish`](Mesh::publish) across the mesh; a
//! client of any node, the Python 0.1.2 one included, reaches every route.
//!
//! # Wire format
//!
//! See `PROTOCOL.md` in the repository for the exact bytes. The server
//! recognises every built-in format frame by frame and answers in the format
//! of the request; user formats plug in through [`Codec`].
//!
//! # Feature flags
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `anyhow` | no | handlers may return `anyhow::Result<T>` ([`IntoCallError`] for `anyhow::Error`) |
//! | `cli` | no | the `webmesh` command-line client binary (and `tls`) |
//! | `nats` | no | the mesh over a NATS cluster ([`MeshBuilder::nats`]), for hundreds of nodes |
//! | `tls` | no | `wss://` for servers ([`TlsConfig`]) and clients ([`ClientTls`]), with rustls |

mod call_error;
mod client;
mod deadline;
mod error;
pub mod extract;
mod handler;
mod heartbeat;
#[cfg(feature = "__internals")]
#[doc(hidden)]
pub mod internals;
#[doc(hidden)]
pub mod marker;
mod memory;
mod mesh;
mod protocol;
mod pubsub;
mod routing;
mod server;
#[cfg(feature = "tls")]
mod tls;

pub mod blocking;

pub use call_error::{CallError, IntoCallError};
pub use client::{
    Client, ClientBuilder, ConnectionState, Event, Push, Pushes, Reconnect, Subscription, WhileDisconnected,
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_OUTBOUND_BUFFER, DEFAULT_RECEIVE_BUFFER, DEFAULT_TIMEOUT,
};
pub use error::Error;
pub use extract::State;
pub use handler::{Handler, IntoReply, Reply};
pub use heartbeat::{DEFAULT_PING_INTERVAL, DEFAULT_PING_TIMEOUT};
#[cfg(feature = "nats")]
pub use mesh::DEFAULT_NATS_PREFIX;
pub use mesh::{
    mesh, LegacyPeer, Mesh, MeshBuilder, Node, NodeRef, NodeState, NodeStatus, NodeWill, Routes, Watch,
    DEFAULT_DOWN_AFTER, DEFAULT_FORGET_AFTER, DEFAULT_LINK_PING_INTERVAL, DEFAULT_LINK_PING_TIMEOUT,
    DEFAULT_STATUS_INTERVAL,
};
pub use protocol::{Codec, CodecError, IncomingMessage, LegacyFormat, OutgoingMessage, Payload, PayloadError};
pub use pubsub::{Hub, LagPolicy, SubscribeOptions, DEFAULT_MAX_TOPIC_LENGTH, DEFAULT_MAX_TOPIC_SEGMENTS};
pub use routing::Router;
pub use server::{
    router, serve, AuthError, Connection, DisconnectReason, Handshake, Server, ServerBuilder, ServerStats, Shutdown,
    DEFAULT_ADDR, DEFAULT_CONNECTION_MEMORY, DEFAULT_EVENT_QUEUE, DEFAULT_MAX_CALLS_IN_FLIGHT, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_MAX_SUBSCRIPTIONS, DEFAULT_MAX_SUBSCRIPTIONS_PER_CONNECTION,
    DEFAULT_MAX_WILL_DELAY, DEFAULT_MEMORY_BUDGET, DEFAULT_OUTBOUND_QUEUE, DEFAULT_PENDING_WILLS_MEMORY,
    DEFAULT_READ_BUFFER_SIZE, DEFAULT_SHUTDOWN_TIMEOUT, DEFAULT_UPGRADE_TIMEOUT, DEFAULT_WRITE_TIMEOUT,
};
#[cfg(feature = "tls")]
pub use tls::{ClientTls, TlsConfig};

/// A certificate in DER, as [`Handshake::peer_certificates`] gives the
/// client's (feature `tls`; the type of `rustls-pki-types`). Its bytes are
/// `as_ref()`.
#[cfg(feature = "tls")]
pub use rustls_pki_types::CertificateDer;

/// Declares a handler for a path, served by [`serve`] and [`router`].
///
/// ```
/// #[webmesh::on("/echo")]
/// fn echo(data: serde_json::Value) -> serde_json::Value {
///     data
/// }
/// ```
///
/// The function is left as it is (it can still be called directly); the
/// attribute only registers it. It may be `async` or not, takes
/// [extractors](extract) and returns what [`IntoReply`] accepts. Errors in
/// the path or the signature are reported at compile time, on the
/// offending token.
pub use webmesh_macros::on;

/// Decides who may subscribe to the topics a pattern matches.
///
/// The function is a handler: it takes extractors ([`Connection`],
/// [`Path`](extract::Path) for the pattern's parameters, [`State`]) and
/// returns `Result<(), E>`: `Ok` accepts the subscription, `Err` refuses it
/// and the client sees the error. Without a matching subscribe handler,
/// subscribing is allowed.
///
/// ```
/// use webmesh::extract::Path;
/// use webmesh::{CallError, Connection};
///
/// #[webmesh::subscribe("/chat/{room}")]
/// async fn join(conn: Connection, Path(room): Path<String>) -> Result<(), CallError> {
///     match conn.extension::<String>() {
///         Some(_user) if room != "staff" => Ok(()),
///         _ => Err(CallError::new("forbidden", format!("you may not join {room}"))),
///     }
/// }
/// ```
///
/// A subscriber's pattern is matched against the handler's as a path: a
/// subscription to `/chat/*` reaches this handler with `room` = `"*"`.
pub use webmesh_macros::subscribe;

/// Allows clients to publish to the topics a pattern matches.
///
/// The function is a handler whose payload is the published data; `Ok`
/// publishes it, `Err` refuses it. Without a matching publish handler,
/// clients may not publish (servers always may, through [`Hub`]).
///
/// ```
/// #[webmesh::publish("/news/{*rest}")]
/// fn anyone_may_publish_news() {}
/// ```
pub use webmesh_macros::publish;

/// Not public API: used by the code `#[webmesh::on]` generates.
#[doc(hidden)]
pub mod __private {
    pub use inventory;

    pub use crate::handler::BoxedHandler;
    pub use crate::routing::{erase, Registration, RouteKind};
}
