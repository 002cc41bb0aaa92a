//! The mesh over NATS: calls, events and membership go through a NATS
//! cluster instead of direct links (PROTOCOL.md, "The mesh over NATS").
//!
//! - Calls: each node serves its routes as queue-group subscriptions, so
//!   NATS gives each call to one of the nodes that serve its path; each
//!   node also serves its own subject, for calls to it alone.
//! - Events: a node subscribes on NATS to the patterns its subscribers hold
//!   (one NATS subscription per distinct subject filter), and sends its
//!   own events to their topics' subjects.
//! - Membership: each node reports itself on its status subject, and keeps
//!   its record in a JetStream key-value bucket.
//! - Wills: a dead node's will, and those of its clients (of which each
//!   node keeps a copy in the bucket), are published by the survivor whose
//!   compare-and-set delete of its record succeeds: once, without a
//!   coordinator.

// The subjects are compiled for tests and internals without the feature.
#[cfg(feature = "nats")]
mod calls;
#[cfg(feature = "nats")]
mod events;
#[cfg(feature = "nats")]
mod members;
pub(crate) mod subject;
#[cfg(feature = "nats")]
mod transport;
#[cfg(feature = "nats")]
mod wills;
#[cfg(feature = "nats")]
mod wire;

#[cfg(feature = "nats")]
pub(crate) use self::calls::Inbox;
#[cfg(feature = "nats")]
pub use self::transport::DEFAULT_NATS_PREFIX;
#[cfg(feature = "nats")]
pub(crate) use self::transport::{Nats, Settings};
#[cfg(feature = "nats")]
pub(crate) use self::wire::{answered_value, read_answered};
