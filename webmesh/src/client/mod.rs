//! The client: calls and emits to a webmesh server over one multiplexed connection.

mod budget;
mod builder;
mod dial;
mod driver;
mod handle;
mod outbox;
mod push;
mod reconnect;
mod shared;
#[cfg(test)]
mod stress_tests;
mod subscription;
mod will;

pub(crate) use budget::Budget;
pub use builder::{ClientBuilder, DEFAULT_OUTBOUND_BUFFER, DEFAULT_RECEIVE_BUFFER, DEFAULT_TIMEOUT};
pub use dial::DEFAULT_CONNECT_TIMEOUT;
pub use handle::Client;
pub use push::{Push, Pushes};
pub use reconnect::{ConnectionState, Reconnect, WhileDisconnected};
pub(crate) use shared::Relay;
pub use subscription::{Event, Subscription};
