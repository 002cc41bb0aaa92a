//! Publish/subscribe: topics are paths, subscribers use patterns.

mod grants;
mod hub;
mod lag;
mod pattern;
mod queue;

pub use hub::Hub;
pub use lag::{LagPolicy, SubscribeOptions};

pub(crate) use grants::{Check, Gate, Grants};
pub(crate) use pattern::{validate_topic, TopicPattern};
pub(crate) use queue::{EventQueue, Pushed};
