//! Publish/subscribe: topics are paths, subscribers use patterns.

mod cache;
mod grants;
mod hub;
mod index;
mod lag;
mod pattern;
mod queue;
mod small_map;

pub use hub::Hub;
pub use lag::{LagPolicy, SubscribeOptions};
pub use pattern::{DEFAULT_MAX_TOPIC_LENGTH, DEFAULT_MAX_TOPIC_SEGMENTS};

pub(crate) use grants::{Check, Gate, Grants};
#[cfg(feature = "nats")]
pub(crate) use hub::Uplink;
pub(crate) use hub::{Interest, Limits};
pub(crate) use pattern::{validate_topic, PatternError, TopicLimits, TopicPattern, MAX_TOPIC_SEGMENTS_CEILING};
pub(crate) use queue::{EventQueue, Pushed};
// For the mesh's NATS subjects.
#[cfg(any(test, feature = "__internals", feature = "nats"))]
pub(crate) use pattern::Segment;
