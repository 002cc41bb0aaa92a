//! The subscribe handlers, asked topic by topic for wildcard subscriptions
//! (see `pubsub/grants.rs`).

use std::future::ready;
use std::sync::{Arc, Weak};

use super::Shared;
use crate::extract::CallParts;
use crate::handler::ReplyKind;
use crate::pubsub::{Check, Gate, TopicPattern};
use crate::{Connection, Payload};

pub(crate) struct SubscribeGate {
    /// Weak: the hub that holds the gate is part of `Shared`.
    shared: Weak<Shared>,
    /// The subscribe routes, as patterns; `None` for one the topic syntax
    /// cannot express, which is taken to guard every topic.
    routes: Vec<Option<TopicPattern>>,
}

impl SubscribeGate {
    pub(crate) fn new(shared: &Arc<Shared>) -> Self {
        let routes = shared.subscribe_routes.patterns().iter().map(|p| TopicPattern::parse(p).ok()).collect();
        Self { shared: Arc::downgrade(shared), routes }
    }
}

impl Gate for SubscribeGate {
    fn guards(&self, pattern: &TopicPattern) -> bool {
        self.routes.iter().any(|route| route.as_ref().is_none_or(|route| pattern.overlaps(route)))
    }

    fn covers(&self, topic: &str) -> bool {
        self.shared.upgrade().is_some_and(|shared| shared.subscribe_routes.at(topic).is_some())
    }

    fn check(&self, connection: &Connection, topic: &str) -> Check {
        let Some(shared) = self.shared.upgrade() else { return Box::pin(ready(false)) };
        let Some((handler, params)) = shared.subscribe_routes.at(topic) else { return Box::pin(ready(true)) };
        let handler = handler.clone();
        let parts = CallParts { connection: connection.clone(), path: topic.into(), params, shared: shared.clone() };
        Box::pin(async move {
            match handler.call(parts, Payload::nil()).await.0 {
                ReplyKind::Value(_) | ReplyKind::Encoded(_) => true,
                ReplyKind::Error(error) => {
                    tracing::trace!(%error, "a wildcard subscription may not receive this topic");
                    false
                }
            }
        })
    }
}
