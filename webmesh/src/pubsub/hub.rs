//! The registry of subscriptions, and publishing to them.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use serde::Serialize;

use super::grants::{self, Gate};
use super::{validate_topic, LagPolicy, Pushed, TopicPattern};
use crate::protocol::{Compression, Envelope, Frame, WireFormat};
use crate::{Connection, Error};

/// Publishes events to the subscribers of a server.
///
/// Get it in a handler as an extractor, or before the server starts from
/// [`ServerBuilder::hub`](crate::ServerBuilder::hub) to publish from
/// anywhere (a timer, a database listener). Cheap to clone.
///
/// ```
/// use webmesh::Hub;
///
/// #[webmesh::on("/say")]
/// async fn say(hub: Hub, text: String) -> Result<usize, webmesh::Error> {
///     // How many connections the event was queued for.
///     hub.publish("/chat/lobby", &text)
/// }
/// ```
///
/// Publishing never waits: each subscriber's connection has a bounded queue,
/// and a subscriber that does not keep up loses events according to its
/// [`LagPolicy`], without slowing anyone else. Each event is encoded once
/// per wire format in use, and the bytes are shared by all subscribers.
/// Events from one publisher to one topic reach each subscriber in the order
/// they were published.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    registry: RwLock<Registry>,
    compression: Compression,
    /// The server's subscribe handlers, once it runs.
    gate: OnceLock<Arc<dyn Gate>>,
    /// The most subscriptions per connection, and in all.
    limits: OnceLock<(usize, usize)>,
}

/// A subscription's connection and wishes; keyed by (connection, subscription) id.
#[derive(Clone)]
struct Subscriber {
    connection: Connection,
    lag: LagPolicy,
    /// A wildcard that may match guarded topics: checked at delivery.
    gated: bool,
}

type Key = (u64, u64);

/// A subscription an event is for.
struct Target {
    connection: Connection,
    subscription: u64,
    lag: LagPolicy,
    gated: bool,
}

#[derive(Default)]
struct Registry {
    /// Subscriptions without wildcards, by topic.
    exact: HashMap<String, HashMap<Key, Subscriber>>,
    /// Subscriptions with wildcards.
    patterns: HashMap<Key, (TopicPattern, Subscriber)>,
    /// How many subscriptions there are.
    count: usize,
    /// Each connection's subscriptions, id to pattern, to remove them.
    by_connection: HashMap<u64, HashMap<u64, String>>,
}

impl Hub {
    pub(crate) fn new(compression: Compression) -> Self {
        let inner = Inner { registry: RwLock::default(), compression, gate: OnceLock::new(), limits: OnceLock::new() };
        Self { inner: Arc::new(inner) }
    }

    /// Sets the most subscriptions per connection and in all.
    pub(crate) fn set_limits(&self, per_connection: usize, total: usize) {
        let _ = self.inner.limits.set((per_connection, total));
    }

    /// Puts the server's subscribe handlers in charge of wildcard deliveries.
    pub(crate) fn set_gate(&self, gate: Arc<dyn Gate>) {
        let _ = self.inner.gate.set(gate);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Registry> {
        self.inner.registry.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Registry> {
        self.inner.registry.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends `data` to every subscription whose pattern matches `topic`, and
    /// returns how many connections it was queued for.
    ///
    /// A connection subscribed only with wildcards receives the event only
    /// if the subscribe handler guarding `topic`, if any, allows it; see
    /// [`#[webmesh::subscribe]`](crate::subscribe). It is counted when allowed
    /// at once.
    ///
    /// The first event of a topic for such a connection runs that subscribe
    /// handler: inside this call if it answers without waiting, on a task of
    /// its own if it waits. So do not publish while holding a lock that your
    /// subscribe handlers take (a `std::sync::Mutex`): the handler would wait
    /// for it inside `publish`, for ever.
    ///
    /// Fails if `topic` has wildcards or `data` cannot be encoded.
    pub fn publish<T: Serialize + ?Sized>(&self, topic: &str, data: &T) -> Result<usize, Error> {
        validate_topic(topic).map_err(Error::Config)?;
        let mut targets = self.targets(topic);
        // One event per connection, for all its matching subscriptions.
        targets.sort_unstable_by_key(|t| (t.connection.id(), t.subscription));
        let mut frames: Vec<(WireFormat, Frame)> = Vec::new();
        let mut reached = 0;
        let mut subs = Vec::new();
        let gate = self.inner.gate.get();
        // Whether a subscribe handler guards the topic, looked up once, if needed.
        let mut covered = None;
        for (i, target) in targets.iter().enumerate() {
            subs.push(target.subscription);
            if targets.get(i + 1).is_some_and(|next| next.connection.id() == target.connection.id()) {
                continue;
            }
            let group = &targets[i + 1 - subs.len()..=i];
            let lag = group.iter().fold(target.lag, |lag, t| lag.strictest(t.lag));
            let connection = &target.connection;
            let format = connection.format();
            let frame = match frames.iter().find(|(f, _)| f.same_as(&format)) {
                Some((_, frame)) => frame.clone(),
                None => {
                    let frame = format
                        .encode(&Envelope::Event { path: topic, data }, self.inner.compression)
                        .map_err(|e| Error::Protocol(e.to_string()))?;
                    frames.push((format, frame.clone()));
                    frame
                }
            };
            // An exact subscription was authorised when made, and one that
            // cannot match a guarded topic needs none: only a connection
            // whose every matching subscription is a gated wildcard waits.
            let gated = group.iter().all(|t| t.gated);
            match gate {
                Some(gate) if gated && *covered.get_or_insert_with(|| gate.covers(topic)) => {
                    if grants::deliver(gate, connection, topic, frame, &subs, lag) {
                        reached += 1;
                    }
                }
                _ => match connection.push_event(frame, &subs, lag) {
                    Pushed::Queued | Pushed::DroppedOldest => reached += 1,
                    Pushed::DroppedNewest | Pushed::Overflow => {}
                },
            }
            subs.clear();
        }
        Ok(reached)
    }

    /// Every subscription matching `topic`.
    fn targets(&self, topic: &str) -> Vec<Target> {
        let registry = self.read();
        let exact = registry.exact.get(topic).into_iter().flatten();
        let wild = registry.patterns.iter().filter(|(_, (p, _))| p.matches(topic)).map(|(key, (_, sub))| (key, sub));
        exact
            .chain(wild)
            .map(|(&(_, subscription), s)| Target {
                connection: s.connection.clone(),
                subscription,
                lag: s.lag,
                gated: s.gated,
            })
            .collect()
    }

    /// Adds a subscription; a second one with the same id replaces the first.
    /// Does nothing once the connection was removed. Fails, adding nothing,
    /// past the limits on subscriptions per connection or in all.
    pub(crate) fn subscribe(
        &self,
        connection: &Connection,
        id: u64,
        pattern: TopicPattern,
        raw: &str,
        lag: LagPolicy,
    ) -> Result<(), String> {
        let key = (connection.id(), id);
        let gated = !pattern.is_exact() && self.inner.gate.get().is_some_and(|gate| gate.guards(&pattern));
        let subscriber = Subscriber { connection: connection.clone(), lag, gated };
        let mut registry = self.write();
        // Read under the lock `remove_connection` sets it under.
        if connection.is_unsubscribed_all() {
            return Ok(());
        }
        let (per_connection, total) = self.inner.limits.get().copied().unwrap_or((usize::MAX, usize::MAX));
        let mine = registry.by_connection.get(&key.0);
        if !mine.is_some_and(|subs| subs.contains_key(&id)) {
            if mine.is_some_and(|subs| subs.len() >= per_connection) {
                return Err(format!("a connection may have at most {per_connection} subscriptions"));
            }
            if registry.count >= total {
                return Err(format!("the server has its limit of {total} subscriptions"));
            }
        }
        registry.remove(key);
        if pattern.is_exact() {
            registry.exact.entry(raw.to_owned()).or_default().insert(key, subscriber);
        } else {
            registry.patterns.insert(key, (pattern, subscriber));
        }
        registry.by_connection.entry(key.0).or_default().insert(id, raw.to_owned());
        registry.count += 1;
        Ok(())
    }

    /// Removes one subscription; `false` if there was none.
    pub(crate) fn unsubscribe(&self, connection: u64, id: u64) -> bool {
        self.write().remove((connection, id))
    }

    /// Removes every subscription of a connection, for good: a subscription
    /// that its handler allows later is not made.
    pub(crate) fn remove_connection(&self, connection: &Connection) {
        let mut registry = self.write();
        connection.mark_unsubscribed_all();
        let id = connection.id();
        let ids: Vec<u64> = registry.by_connection.get(&id).map(|s| s.keys().copied().collect()).unwrap_or_default();
        for sub in ids {
            registry.remove((id, sub));
        }
    }

    /// How many subscriptions exist, on all connections.
    pub fn subscription_count(&self) -> usize {
        self.read().count
    }

    /// The longest event queue among the subscribed connections. Not public
    /// API: for tests.
    #[doc(hidden)]
    pub fn longest_event_queue(&self) -> usize {
        let registry = self.read();
        let exact = registry.exact.values().flat_map(HashMap::values);
        let wild = registry.patterns.values().map(|(_, s)| s);
        exact.chain(wild).map(|s| s.connection.events().len()).max().unwrap_or(0)
    }

    /// Whether nothing at all is left in the registry. Not public API: for tests.
    #[doc(hidden)]
    pub fn is_empty(&self) -> bool {
        let registry = self.read();
        registry.exact.is_empty() && registry.patterns.is_empty() && registry.by_connection.is_empty()
    }
}

impl Registry {
    fn remove(&mut self, key: Key) -> bool {
        let Some(subs) = self.by_connection.get_mut(&key.0) else { return false };
        let Some(raw) = subs.remove(&key.1) else { return false };
        self.count -= 1;
        if subs.is_empty() {
            self.by_connection.remove(&key.0);
        }
        if self.patterns.remove(&key).is_none() {
            if let Some(topic) = self.exact.get_mut(&raw) {
                topic.remove(&key);
                if topic.is_empty() {
                    self.exact.remove(&raw);
                }
            }
        }
        true
    }
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").field("subscriptions", &self.subscription_count()).finish()
    }
}
