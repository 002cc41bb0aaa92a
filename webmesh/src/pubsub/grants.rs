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

/// How many topics a connection may have decisions being made for at once;
/// past it, events of further undecided topics are lost to lag (and
/// reported as such).
pub(crate) const MAX_PENDING: usize = 64;

/// One connection's decisions, by topic.
#[derive(Default)]
pub(crate) struct Grants {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    topics: HashMap<Arc<str>, Grant>,
    pending: usize,
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

/// An event waiting for its topic's decision.
struct Waiting {
    frame: Frame,
    subs: Box<[u64]>,
    lag: LagPolicy,
    /// The connection's extensions version when it was published: it is
    /// delivered only on a decision made for that version.
    version: u64,
    _charge: Charge,
}

impl Grants {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
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
    let mut state = connection.grants().state();
    let pending = state.pending;
    match state.topics.get_mut(topic) {
        Some(Grant::Decided { allowed, version: decided }) if *decided == version => {
            let allowed = *allowed;
            drop(state);
            return allowed
                && matches!(connection.push_event(frame, subs, lag), Pushed::Queued | Pushed::DroppedOldest);
        }
        Some(Grant::Pending(waiting)) => {
            if let Some(charge) = room_to_wait(connection, waiting.len(), &frame) {
                waiting.push(Waiting { frame, subs: subs.into(), lag, version, _charge: charge });
            } else {
                drop(state);
                connection.events().count_missed(subs);
            }
            return false;
        }
        _ => {}
    }
    let charge = if pending < MAX_PENDING { room_to_wait(connection, 0, &frame) } else { None };
    let Some(charge) = charge else {
        drop(state);
        connection.events().count_missed(subs);
        return false;
    };
    if state.topics.len() >= MAX_GRANTS {
        // Forget one decision (any), not all: a connection that receives
        // more topics than the cache holds asks again for some, not for all.
        let decided = state.topics.iter().find(|(_, g)| matches!(g, Grant::Decided { .. })).map(|(t, _)| t.clone());
        if let Some(topic) = decided {
            state.topics.remove(&topic);
        }
    }
    let topic: Arc<str> = topic.into();
    let first = Waiting { frame, subs: subs.into(), lag, version, _charge: charge };
    state.topics.insert(topic.clone(), Grant::Pending(vec![first]));
    state.pending += 1;
    drop(state);
    ask(gate, connection, topic, version) > 0
}

/// Whether one more event may wait for a decision, beside `waiting` others:
/// the connection's event queue's bounds apply.
fn room_to_wait(connection: &Connection, waiting: usize, frame: &Frame) -> Option<Charge> {
    let account = connection.account();
    let fits = waiting < connection.events().capacity() && account.has_room_for_event(frame.len());
    (fits && !account.is_shed()).then(|| account.charge(Direction::Events, frame.len()))
}

/// Asks whether `connection` may receive `topic`, as of extensions
/// `version`, and delivers what waits once answered; returns how many
/// events were queued at once.
fn ask(gate: &Arc<dyn Gate>, connection: &Connection, topic: Arc<str>, version: u64) -> usize {
    // The handler runs without the lock: it may publish, or look at this
    // connection.
    let mut check = gate.check(connection, &topic);
    let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
    match check.as_mut().poll(&mut cx) {
        Poll::Ready(allowed) => decided(gate, connection, &topic, allowed, version),
        Poll::Pending => {
            let (gate, connection) = (gate.clone(), connection.clone());
            // A future may be polled by any waker: the task's own takes over.
            spawn(async move {
                let allowed = check.await;
                decided(&gate, &connection, &topic, allowed, version);
            });
            0
        }
    }
}

/// Records a decision and delivers, or drops, the events that waited for
/// it; returns how many were queued. Events published after the
/// connection's extensions changed wait for a decision of their own.
fn decided(gate: &Arc<dyn Gate>, connection: &Connection, topic: &Arc<str>, allowed: bool, version: u64) -> usize {
    let mut state = connection.grants().state();
    let waiting = match state.topics.insert(topic.clone(), Grant::Decided { allowed, version }) {
        Some(Grant::Pending(waiting)) => waiting,
        _ => return 0,
    };
    // A decision applies to the events published before it was asked for:
    // one published after a logout never rides on the login's answer.
    let (now, later): (Vec<Waiting>, Vec<Waiting>) = waiting.into_iter().partition(|w| w.version <= version);
    let mut queued = 0;
    // Delivered under the lock, so that an event published now, which finds
    // the decision, cannot overtake those that waited for it.
    for Waiting { frame, subs, lag, _charge, .. } in now {
        drop(_charge);
        if allowed && matches!(connection.push_event(frame, &subs, lag), Pushed::Queued | Pushed::DroppedOldest) {
            queued += 1;
        }
    }
    if later.is_empty() {
        state.pending -= 1;
        return queued;
    }
    let current = connection.extensions_version();
    state.topics.insert(topic.clone(), Grant::Pending(later));
    drop(state);
    queued + ask(gate, connection, topic.clone(), current)
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
