use std::fmt;
use std::sync::Arc;

use super::Connection;

/// Why a connection ended, as the disconnect hook sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The client closed the connection with this WebSocket close code and reason.
    Closed {
        /// The close code (1000 is a normal close).
        code: u16,
        /// The close reason the client gave.
        reason: String,
    },
    /// The connection ended without a close frame (the peer vanished).
    Gone,
    /// The transport failed.
    Transport(String),
    /// The server closed it because the client broke the protocol.
    Protocol(String),
    /// The server closed it because the client did not take what it was
    /// sent: a subscription with
    /// [`LagPolicy::Disconnect`](crate::LagPolicy::Disconnect) fell behind,
    /// more replies waited for it than its connection may hold, or a write to
    /// it made no progress within the write timeout.
    TooSlow(String),
    /// The server closed it (code 1013) because its memory budget was
    /// reached and this connection held the most bytes.
    OverBudget(String),
    /// The server shut down.
    Shutdown,
    /// The client stopped answering pings.
    TimedOut,
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DisconnectReason::Closed { code, reason } if reason.is_empty() => {
                write!(f, "closed by the client ({code})")
            }
            DisconnectReason::Closed { code, reason } => {
                write!(f, "closed by the client ({code}: {reason})")
            }
            DisconnectReason::Gone => f.write_str("the client vanished"),
            DisconnectReason::Transport(e) => write!(f, "transport error: {e}"),
            DisconnectReason::Protocol(e) => write!(f, "protocol violation: {e}"),
            DisconnectReason::TooSlow(e) => write!(f, "too slow: {e}"),
            DisconnectReason::OverBudget(e) => write!(f, "shed: {e}"),
            DisconnectReason::Shutdown => f.write_str("the server shut down"),
            DisconnectReason::TimedOut => f.write_str("the client stopped answering pings"),
        }
    }
}

pub(crate) type ConnectHook = Arc<dyn Fn(&Connection) + Send + Sync>;
pub(crate) type DisconnectHook = Arc<dyn Fn(&Connection, &DisconnectReason) + Send + Sync>;

/// The server's lifecycle callbacks.
#[derive(Clone, Default)]
pub(crate) struct Hooks {
    pub(crate) on_connect: Option<ConnectHook>,
    pub(crate) on_disconnect: Option<DisconnectHook>,
}
