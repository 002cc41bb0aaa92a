//! Authorising wildcard subscriptions topic by topic, at delivery.
//!
//! A subscription to one topic is authorised when it is made, by the
//! subscribe handler of that topic. A wildcard subscription names no topic,
//! so it cannot be: if its pattern could match a topic some subscribe handler
//! guards, each event on such a topic is delivered only once the handler has
//! allowed that topic for that connection. The decision is cached per
//! connection and topic ([`MAX_GRANTS`] topics), and asked again after the
//! connection's extensions change (a login, a logout). A pattern that can
//! match no guarded topic costs nothing at delivery.
//!
//! A handler that answers at once is run inline, while publishing; one that
//! waits (a database lookup) runs on its own task, and the events of that
//! topic wait for it, in order, counted against the connection's bytes.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use super::{LagPolicy, Pushed, TopicPattern};
use crate::memory::{Charge, Direction};
use crate::protocol::Frame;
use crate::Connection;

/// How many topics' decisions a connection keeps; past it, the decided ones
/// are forgotten (and asked again when needed).
pub(crate) const MAX_GRANTS: usize = 256;

/// A decision being made: whether a connection may receive a topic.
pub(crate) type Check = Pin<Box<dyn Future<Output = bool> + Send>>;

/// The subscribe handlers, as the hub asks them.
pub(crate) trait Gate: Send + Sync + 'static {
    /// Whether a subscription to `pattern` could receive a topic that a
    /// subscribe handler guards (then its deliveries are checked).
    fn guards(&self, pattern: &TopicPattern) -> bool;

    /// Whether a subscribe handler guards `topic`.
    fn covers(&self, topic: &str) -> bool;

    /// Asks the subscribe handler of `topic` whether `connection` may receive it.
    fn check(&self, connection: &Connection, topic: &str) -> Check;
}

/// One connection's decisions, by topic.
#[derive(Default)]
pub(crate) struct Grants {
    topics: Mutex<HashMap<Arc<str>, Grant>>,
}

enum Grant {
    Decided {
        allowed: bool,
        /// The connection's extensions version it was decided for.
        version: u64,
    },
    /// Asked; the events that came meanwhile wait here, in order.
    Pending(Vec<Waiting>),
}

struct Waiting {
    frame: Frame,
    subs: Box<[u64]>,
    lag: LagPolicy,
    _charge: Charge,
}

impl Grants {
    fn topics(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Grant>> {
        self.topics.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Delivers an event on `topic` to `connection`, for its subscriptions
/// `subs`, all of them wildcards that `gate` guards: at once if the topic is
/// allowed, never if it is refused, once decided if it is being asked.
/// Returns whether it was queued at once.
pub(crate) fn deliver(
    gate: &Arc<dyn Gate>,
    connection: &Connection,
    topic: &str,
    frame: Frame,
    subs: &[u64],
    lag: LagPolicy,
) -> bool {
    let version = connection.extensions_version();
    let mut topics = connection.grants().topics();
    match topics.get_mut(topic) {
        Some(Grant::Decided { allowed, version: decided }) if *decided == version => {
            let allowed = *allowed;
            drop(topics);
            return allowed
                && matches!(connection.push_event(frame, subs, lag), Pushed::Queued | Pushed::DroppedOldest);
        }
        Some(Grant::Pending(waiting)) => {
            let account = connection.account();
            if waiting.len() >= connection.events().capacity() || !account.has_room(Direction::Outgoing, frame.len()) {
                drop(topics);
                connection.events().count_missed(subs);
                return false;
            }
            let charge = account.charge(Direction::Outgoing, frame.len());
            waiting.push(Waiting { frame, subs: subs.into(), lag, _charge: charge });
            return false;
        }
        _ => {}
    }
    if topics.len() >= MAX_GRANTS {
        topics.retain(|_, grant| matches!(grant, Grant::Pending(_)));
    }
    let topic: Arc<str> = topic.into();
    let charge = connection.account().charge(Direction::Outgoing, frame.len());
    let first = Waiting { frame, subs: subs.into(), lag, _charge: charge };
    topics.insert(topic.clone(), Grant::Pending(vec![first]));
    // The handler runs without the lock: it may publish, or look at this
    // connection.
    drop(topics);
    let mut check = gate.check(connection, &topic);
    let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
    match check.as_mut().poll(&mut cx) {
        Poll::Ready(allowed) => decided(connection, &topic, allowed, version) > 0,
        Poll::Pending => {
            let connection = connection.clone();
            // A future may be polled by any waker: the task's own takes over.
            spawn(async move {
                let allowed = check.await;
                decided(&connection, &topic, allowed, version);
            });
            false
        }
    }
}

/// Records a decision and delivers, or drops, the events that waited for it;
/// returns how many were queued.
fn decided(connection: &Connection, topic: &Arc<str>, allowed: bool, version: u64) -> usize {
    let mut topics = connection.grants().topics();
    let waiting = match topics.insert(topic.clone(), Grant::Decided { allowed, version }) {
        Some(Grant::Pending(waiting)) => waiting,
        _ => Vec::new(),
    };
    // Delivered under the lock, so that an event published now, which finds
    // the decision, cannot overtake those that waited for it.
    if !allowed {
        return 0;
    }
    let mut queued = 0;
    for Waiting { frame, subs, lag, _charge } in waiting {
        drop(_charge);
        if matches!(connection.push_event(frame, &subs, lag), Pushed::Queued | Pushed::DroppedOldest) {
            queued += 1;
        }
    }
    queued
}

/// Runs `task` on the current Tokio runtime, or on a thread of its own when
/// publishing from outside one.
fn spawn(task: impl Future<Output = ()> + Send + 'static) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => drop(runtime.spawn(task)),
        Err(_) => drop(std::thread::spawn(move || {
            if let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                runtime.block_on(task);
            }
        })),
    }
}
