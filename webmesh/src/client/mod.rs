//! The client: calls and emits to a webmesh server over one multiplexed connection.

mod builder;
mod driver;
mod handle;
mod push;
mod reconnect;
mod shared;
mod subscription;

pub use builder::{ClientBuilder, DEFAULT_TIMEOUT};
pub use handle::Client;
pub use push::{Push, Pushes};
pub use reconnect::{ConnectionState, Reconnect, WhileDisconnected};
pub use subscription::{Event, Subscription};
