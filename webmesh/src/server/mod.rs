//! The server: accepts WebSocket connections and runs handlers for them.

pub(crate) mod admission;
mod builder;
mod connection;
mod dispatch;
mod gate;
mod hooks;
mod http;
mod serve;
mod session;
mod shutdown;
mod stats;
mod subscriptions;
mod upgrade;
mod watch;
mod wills;

pub use admission::{AuthError, Handshake};
pub use builder::{
    ServerBuilder, DEFAULT_ADDR, DEFAULT_CONNECTION_MEMORY, DEFAULT_EVENT_QUEUE, DEFAULT_MAX_CALLS_IN_FLIGHT,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_MAX_SUBSCRIPTIONS,
    DEFAULT_MAX_SUBSCRIPTIONS_PER_CONNECTION, DEFAULT_MAX_WILL_DELAY, DEFAULT_MEMORY_BUDGET, DEFAULT_OUTBOUND_QUEUE,
    DEFAULT_PENDING_WILLS_MEMORY, DEFAULT_READ_BUFFER_SIZE, DEFAULT_SHUTDOWN_TIMEOUT, DEFAULT_UPGRADE_TIMEOUT,
    DEFAULT_WRITE_TIMEOUT,
};
pub use connection::Connection;
pub use hooks::DisconnectReason;
pub use serve::{router, serve, Server};
pub use shutdown::Shutdown;
pub use stats::ServerStats;

pub(crate) use builder::Shared;
pub(crate) use connection::Callers;
pub(crate) use dispatch::call_local;
#[cfg(feature = "nats")]
pub(crate) use wills::HeldWill;
pub(crate) use wills::Wills;
