//! The registry of subscriptions, and publishing to them.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};

use serde::Serialize;

use super::cache::TopicCache;
use super::grants::{self, Gate};
use super::index::{Index, Key};
use super::pattern::TopicLimits;
use super::small_map::SmallMap;
use super::{validate_topic, LagPolicy, Pushed, TopicPattern};
use crate::memory::{Charge, Direction};
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
    /// Each topic's matches, while no subscription that matches it changes.
    cache: TopicCache<Matches>,
    compression: Compression,
    /// The server's subscribe handlers, once it runs.
    gate: OnceLock<Arc<dyn Gate>>,
    limits: OnceLock<Limits>,
    /// The patterns of this server's own subscribers, kept once a mesh asks.
    interest: OnceLock<Arc<Interest>>,
    /// Where this server's own events also go, beyond its subscribers:
    /// the other nodes of a mesh that has no links to carry them.
    #[cfg(feature = "nats")]
    uplink: OnceLock<Arc<dyn Uplink>>,
    /// Events published, and dropped for subscribers that lagged.
    published: AtomicU64,
    dropped: AtomicU64,
}

/// The distinct patterns of the subscriptions that are not a mesh link's,
/// with how many subscriptions hold each: what a mesh node tells its peers
/// it wants. Kept only once a mesh asks for it.
pub(crate) struct Interest {
    /// Patterns under this prefix are not counted (the mesh's own topics).
    excluded: &'static str,
    patterns: Mutex<HashMap<Box<str>, usize>>,
    /// Bumped when a pattern comes or goes.
    changed: tokio::sync::watch::Sender<u64>,
}

impl Interest {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, usize>> {
        self.patterns.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The patterns held now.
    pub(crate) fn patterns(&self) -> Vec<String> {
        self.lock().keys().map(|p| p.to_string()).collect()
    }

    /// Changes whenever a pattern comes or goes.
    pub(crate) fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn add(&self, raw: &str) {
        if raw.starts_with(self.excluded) {
            return;
        }
        let mut patterns = self.lock();
        let count = patterns.entry(raw.into()).or_default();
        *count += 1;
        if *count == 1 {
            self.changed.send_modify(|n| *n += 1);
        }
    }

    fn remove(&self, raw: &str) {
        if raw.starts_with(self.excluded) {
            return;
        }
        let mut patterns = self.lock();
        if let Some(count) = patterns.get_mut(raw) {
            *count -= 1;
            if *count == 0 {
                patterns.remove(raw);
                self.changed.send_modify(|n| *n += 1);
            }
        }
    }
}

/// Takes the events published on a hub (not those relayed from other
/// nodes) to the other nodes of a mesh, as MessagePack encoded once.
#[cfg(feature = "nats")]
pub(crate) trait Uplink: Send + Sync {
    /// `topic`'s event, its data as MessagePack. Never waits.
    fn event(&self, topic: &str, data: bytes::Bytes);
}

/// What a server allows: [`ServerBuilder`](crate::ServerBuilder)'s settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) per_connection: usize,
    pub(crate) total: usize,
    pub(crate) topics: TopicLimits,
}

impl Limits {
    /// A hub that no server configured has none on subscriptions.
    const UNSET: Self = Self { per_connection: usize::MAX, total: usize::MAX, topics: TopicLimits::DEFAULT };
}

/// A subscription's connection and wishes.
struct Subscriber {
    connection: Connection,
    lag: LagPolicy,
    /// A wildcard that may match guarded topics: checked at delivery.
    gated: bool,
    /// What it holds in the registry, on its connection's account.
    _held: Charge,
}

#[derive(Default)]
struct Registry {
    /// Subscriptions without wildcards, by topic: one lookup, and no tree
    /// nodes for a deep topic.
    exact: HashMap<Box<str>, SmallMap<Key, Subscriber>>,
    /// Subscriptions with wildcards.
    wild: Index<Subscriber>,
    /// How many subscriptions there are.
    count: usize,
    /// Each connection's subscriptions, id to pattern, to remove them.
    by_connection: HashMap<u64, HashMap<u64, Box<str>>>,
    /// The mesh links among the connections with subscriptions: theirs are
    /// not their server's own interest.
    relays: HashSet<u64>,
}

/// The subscriptions matching a topic, by connection: one event each.
struct Matches {
    /// By connection id.
    groups: Vec<Group>,
    /// The subscription ids of all groups, each group's a slice.
    subscriptions: Vec<u64>,
}

struct Group {
    connection: Connection,
    subscriptions: Range<usize>,
    /// The strictest of its subscriptions'.
    lag: LagPolicy,
    /// Whether all its subscriptions are gated wildcards.
    gated: bool,
}

impl Hub {
    pub(crate) fn new(compression: Compression) -> Self {
        let inner = Inner {
            registry: RwLock::default(),
            cache: TopicCache::default(),
            compression,
            gate: OnceLock::new(),
            limits: OnceLock::new(),
            interest: OnceLock::new(),
            #[cfg(feature = "nats")]
            uplink: OnceLock::new(),
            published: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        };
        Self { inner: Arc::new(inner) }
    }

    /// Sets the server's limits.
    pub(crate) fn set_limits(&self, limits: Limits) {
        let _ = self.inner.limits.set(limits);
    }

    pub(crate) fn limits(&self) -> Limits {
        self.inner.limits.get().copied().unwrap_or(Limits::UNSET)
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
    /// Finding the subscriptions costs the topic's depth and its matches, not
    /// the number of subscriptions; publishing to a topic again reuses what
    /// was found until a subscription that matches it comes or goes.
    ///
    /// Fails if `topic` has wildcards, is over the server's limits on topics
    /// ([`ServerBuilder::max_topic_length`](crate::ServerBuilder::max_topic_length)),
    /// or `data` cannot be encoded.
    pub fn publish<T: Serialize + ?Sized>(&self, topic: &str, data: &T) -> Result<usize, Error> {
        self.publish_to(topic, data, true)
    }

    /// Publishes an event that came from another node of a mesh: to this
    /// server's own subscribers, not to the links of other nodes (each node
    /// gets a node's events from that node: one hop).
    pub(crate) fn publish_relayed<T: Serialize + ?Sized>(&self, topic: &str, data: &T) -> Result<usize, Error> {
        self.publish_to(topic, data, false)
    }

    fn publish_to<T: Serialize + ?Sized>(&self, topic: &str, data: &T, to_relays: bool) -> Result<usize, Error> {
        validate_topic(topic, self.limits().topics).map_err(|e| Error::Config(e.to_string()))?;
        self.inner.published.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "nats")]
        if let Some(uplink) = self.inner.uplink.get().filter(|_| to_relays) {
            let bytes = rmp_serde::to_vec_named(data).map_err(|e| Error::Protocol(e.to_string()))?;
            uplink.event(topic, bytes.into());
        }
        let matches = self.matches(topic);
        let mut frames: Vec<(WireFormat, Frame)> = Vec::new();
        let mut reached = 0;
        let gate = self.inner.gate.get();
        // Whether a subscribe handler guards the topic, looked up once, if needed.
        let mut covered = None;
        for group in &matches.groups {
            let connection = &group.connection;
            // Gone since its matches were kept: nothing to queue for it.
            if connection.is_unsubscribed_all() || (!to_relays && connection.is_relay()) {
                continue;
            }
            let subscriptions = &matches.subscriptions[group.subscriptions.clone()];
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
            match gate {
                Some(gate) if group.gated && *covered.get_or_insert_with(|| gate.covers(topic)) => {
                    if grants::deliver(gate, connection, topic, frame, subscriptions, group.lag) {
                        reached += 1;
                    }
                }
                _ => match connection.push_event(frame, subscriptions, group.lag) {
                    Pushed::Queued => reached += 1,
                    Pushed::DroppedOldest => {
                        reached += 1;
                        self.inner.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    Pushed::DroppedNewest | Pushed::Overflow => {
                        self.inner.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                },
            }
        }
        Ok(reached)
    }

    /// The subscriptions matching `topic`: kept, or found and kept.
    fn matches(&self, topic: &str) -> Arc<Matches> {
        if let Some(matches) = self.inner.cache.get(topic) {
            return matches;
        }
        // Found and kept under the read lock, so no change comes between.
        let registry = self.read();
        let mut found = Vec::new();
        if let Some(subscribers) = registry.exact.get(topic) {
            subscribers.for_each(|key, subscriber| found.push((*key, subscriber)));
        }
        registry.wild.for_each_match(topic, |key, subscriber| found.push((key, subscriber)));
        found.sort_unstable_by_key(|(key, _)| *key);
        let mut matches = Matches { groups: Vec::new(), subscriptions: Vec::with_capacity(found.len()) };
        for ((connection, subscription), subscriber) in found {
            let start = matches.subscriptions.len();
            matches.subscriptions.push(subscription);
            match matches.groups.last_mut() {
                Some(group) if group.connection.id() == connection => {
                    group.subscriptions.end += 1;
                    group.lag = group.lag.strictest(subscriber.lag);
                    group.gated &= subscriber.gated;
                }
                _ => matches.groups.push(Group {
                    connection: subscriber.connection.clone(),
                    subscriptions: start..start + 1,
                    lag: subscriber.lag,
                    gated: subscriber.gated,
                }),
            }
        }
        let matches = Arc::new(matches);
        self.inner.cache.insert(topic, &matches, matches.subscriptions.len());
        matches
    }

    /// Adds a subscription; a second one with the same id replaces the first.
    /// Does nothing once the connection was removed. Fails, adding nothing,
    /// past the limits on subscriptions per connection or in all, or on the
    /// bytes the connection's subscriptions hold.
    pub(crate) fn subscribe(
        &self,
        connection: &Connection,
        id: u64,
        pattern: TopicPattern,
        raw: &str,
        lag: LagPolicy,
    ) -> Result<(), String> {
        let key = (connection.id(), id);
        let relay = connection.is_relay();
        // A mesh link's subscriptions carry interest its node authorised.
        let gated = !pattern.is_exact() && !relay && self.inner.gate.get().is_some_and(|gate| gate.guards(&pattern));
        let account = connection.account();
        let bytes = registry_bytes(raw, &pattern);
        let mut registry = self.write();
        // Read under the lock `remove_connection` sets it under.
        if connection.is_unsubscribed_all() {
            return Ok(());
        }
        let Limits { per_connection, total, .. } = self.limits();
        let mine = registry.by_connection.get(&key.0);
        let replaced = mine.and_then(|subs| subs.get(&id));
        if replaced.is_none() {
            // A mesh link carries all the patterns of its node's subscribers.
            if mine.map_or(0, HashMap::len) >= per_connection && !relay {
                let message = "subscriptions on one connection (max_subscriptions_per_connection)";
                return Err(format!("the limit of {per_connection} {message} is reached"));
            }
            if registry.count >= total {
                let message = "subscriptions on the server (max_subscriptions)";
                return Err(format!("the limit of {total} {message} is reached"));
            }
        }
        let freed = replaced.map_or(0, |old| registry_bytes(old, &TopicPattern::parse(old).expect("registered")));
        if !account.has_room(Direction::Subscriptions, bytes.saturating_sub(freed)) {
            let limit = account.limit();
            return Err(format!(
                "the subscriptions of this connection would hold more than {limit} bytes (connection_memory)"
            ));
        }
        let subscriber = Subscriber {
            connection: connection.clone(),
            lag,
            gated,
            _held: account.charge(Direction::Subscriptions, bytes),
        };
        self.remove(&mut registry, key);
        // A pattern without wildcards is the topic it names.
        if pattern.is_exact() {
            self.inner.cache.forget(raw);
            registry.exact.entry(raw.into()).or_default().insert(key, subscriber);
        } else {
            registry.wild.insert(&pattern, key, subscriber);
            self.inner.cache.forget_under(pattern.first_literal());
        }
        registry.by_connection.entry(key.0).or_default().insert(id, raw.into());
        registry.count += 1;
        if relay {
            registry.relays.insert(key.0);
        } else if let Some(interest) = self.inner.interest.get() {
            interest.add(raw);
        }
        Ok(())
    }

    /// Removes one subscription; `false` if there was none.
    pub(crate) fn unsubscribe(&self, connection: u64, id: u64) -> bool {
        let mut registry = self.write();
        self.remove(&mut registry, (connection, id))
    }

    /// Removes every subscription of a connection, for good: a subscription
    /// that its handler allows later is not made.
    pub(crate) fn remove_connection(&self, connection: &Connection) {
        let id = connection.id();
        let mut ids: Vec<u64> = {
            let registry = self.write();
            connection.mark_unsubscribed_all();
            registry.by_connection.get(&id).map(|s| s.keys().copied().collect()).unwrap_or_default()
        };
        // A few at a time: thousands of long patterns would hold the lock
        // for milliseconds. Nothing is added meanwhile (it is marked), and
        // publishers skip it.
        while !ids.is_empty() {
            let mut registry = self.write();
            for sub in ids.drain(ids.len().saturating_sub(64)..) {
                self.remove(&mut registry, (id, sub));
            }
        }
        // Kept matches that a wildcard change made stale may still name it:
        // they would keep its connection, and its account, alive.
        self.inner.cache.forget_where(|_, matches| matches.names(id));
    }

    fn remove(&self, registry: &mut Registry, (connection, id): (u64, u64)) -> bool {
        let Some(subs) = registry.by_connection.get_mut(&connection) else { return false };
        let Some(raw) = subs.remove(&id) else { return false };
        let emptied = subs.is_empty();
        if emptied {
            registry.by_connection.remove(&connection);
        } else {
            shrink(subs);
        }
        registry.count -= 1;
        let relay = if emptied { registry.relays.remove(&connection) } else { registry.relays.contains(&connection) };
        if let Some(interest) = self.inner.interest.get().filter(|_| !relay) {
            interest.remove(&raw);
        }
        let pattern = TopicPattern::parse(&raw).expect("registered patterns parse");
        if pattern.is_exact() {
            if let Some(subscribers) = registry.exact.get_mut(&*raw) {
                subscribers.remove(&(connection, id));
                if subscribers.is_empty() {
                    registry.exact.remove(&*raw);
                    shrink(&mut registry.exact);
                }
            }
            self.inner.cache.forget(&raw);
        } else {
            registry.wild.remove(&pattern, (connection, id));
            self.inner.cache.forget_under(pattern.first_literal());
        }
        true
    }

    /// How many subscriptions exist, on all connections.
    pub fn subscription_count(&self) -> usize {
        self.read().count
    }

    /// The events published since the hub was made.
    pub(crate) fn published(&self) -> u64 {
        self.inner.published.load(Ordering::Relaxed)
    }

    /// The events dropped for subscribers that lagged.
    pub(crate) fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Sends this server's own events to `uplink` too, from now on.
    #[cfg(feature = "nats")]
    pub(crate) fn set_uplink(&self, uplink: Arc<dyn Uplink>) {
        let _ = self.inner.uplink.set(uplink);
    }

    /// Starts keeping the patterns of this server's own subscribers (not
    /// mesh links'), except those under `excluded`; every call returns the
    /// same record.
    pub(crate) fn interest(&self, excluded: &'static str) -> Arc<Interest> {
        self.inner
            .interest
            .get_or_init(|| {
                // Counted under the lock, so that no subscription comes between.
                let registry = self.read();
                let interest =
                    Interest { excluded, patterns: Mutex::default(), changed: tokio::sync::watch::Sender::new(0) };
                for (connection, subs) in &registry.by_connection {
                    if !registry.relays.contains(connection) {
                        subs.values().for_each(|raw| interest.add(raw));
                    }
                }
                Arc::new(interest)
            })
            .clone()
    }

    /// Tells this server's own subscribers whose patterns could match a
    /// topic of `pattern` (all of them if `None`) that they lost events: a
    /// LAGGED notice with `missed`, where 0 stands for an unknown number.
    /// Subscriptions to topics under `excluded` are not told.
    pub(crate) fn report_lost(&self, pattern: Option<&TopicPattern>, missed: u64, excluded: &str) {
        let registry = self.read();
        for (connection, subs) in &registry.by_connection {
            if registry.relays.contains(connection) {
                continue;
            }
            let mut ids = Vec::new();
            let mut found = None;
            for (id, raw) in subs {
                if raw.starts_with(excluded) {
                    continue;
                }
                let Ok(parsed) = TopicPattern::parse(raw) else { continue };
                if pattern.is_none_or(|p| parsed.overlaps(p) || p.overlaps(&parsed)) {
                    ids.push(*id);
                    if found.is_none() {
                        found = registry.subscriber(&parsed, raw, (*connection, *id)).map(|s| s.connection.clone());
                    }
                }
            }
            let Some(conn) = found else { continue };
            if missed == 0 {
                conn.events().count_unknown_loss(&ids);
            } else {
                conn.events().count_missed_by(&ids, missed);
            }
        }
    }
}

impl Registry {
    fn subscriber(&self, pattern: &TopicPattern, raw: &str, key: Key) -> Option<&Subscriber> {
        if pattern.is_exact() {
            self.exact.get(raw)?.get(&key)
        } else {
            self.wild.get(pattern, key)
        }
    }
}

/// Gives back a table's room once it is mostly empty: what a client made it
/// hold at its peak is not charged once the subscriptions are gone.
fn shrink<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>) {
    if map.len() * 4 < map.capacity() {
        map.shrink_to(map.len() * 2);
    }
}

impl Matches {
    /// Whether connection `id` is among them: groups are sorted by connection.
    fn names(&self, id: u64) -> bool {
        self.groups.binary_search_by_key(&id, |g| g.connection.id()).is_ok()
    }
}

/// What a subscription holds in the registry, about, as measured with
/// 200,000 subscriptions of each shape: its pattern twice (by connection,
/// and as the key of an exact topic or in the tree's literals), its entries,
/// and for a wildcard a tree node per segment. A 32-segment wildcard holds
/// about 4.4 KB, a short exact pattern 500 bytes.
fn registry_bytes(raw: &str, pattern: &TopicPattern) -> usize {
    let entries = if pattern.is_exact() { 180 } else { 130 * pattern.segments().len() };
    256 + 2 * raw.len() + entries
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").field("subscriptions", &self.subscription_count()).finish()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Subscribe { connection: usize, id: u64, pattern: &'static str },
        Unsubscribe { connection: usize, id: u64 },
        Disconnect { connection: usize },
        Publish { topic: &'static str },
    }

    const PATTERNS: [&str; 11] =
        ["/a", "/a/b", "/a/*", "/*/b", "/a/{*rest}", "/{*all}", "/b", "/b/{x}", "//*", "//{*r}", "/"];
    const TOPICS: [&str; 9] = ["/a", "/b", "/a/b", "/b/b", "/a/b/c", "/c", "//a", "//a/b", "/"];

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..4usize, 0..4u64, prop::sample::select(&PATTERNS[..]))
                .prop_map(|(connection, id, pattern)| Op::Subscribe { connection, id, pattern }),
            2 => (0..4usize, 0..4u64).prop_map(|(connection, id)| Op::Unsubscribe { connection, id }),
            1 => (0..4usize).prop_map(|connection| Op::Disconnect { connection }),
            4 => prop::sample::select(&TOPICS[..]).prop_map(|topic| Op::Publish { topic }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// Whatever the order of changes and publishes, each publish reaches
        /// exactly the connections the subscriptions then in place match: a
        /// kept result is never stale. Removing everything leaves nothing.
        #[test]
        fn publishes_reach_exactly_the_current_subscribers(ops in prop::collection::vec(op(), 1..60)) {
            let hub = Hub::new(Compression::default());
            // A disconnected connection is replaced by a new one, as a reconnect is.
            let mut connections: Vec<Connection> = (0..4).map(|i| Connection::detached(i, 1 << 20)).collect();
            let mut next_id = 4;
            let mut model: BTreeMap<(usize, u64), &str> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Subscribe { connection, id, pattern } => {
                        let parsed = TopicPattern::parse(pattern).unwrap();
                        hub.subscribe(&connections[connection], id, parsed, pattern, LagPolicy::default()).unwrap();
                        model.insert((connection, id), pattern);
                    }
                    Op::Unsubscribe { connection, id } => {
                        let removed = hub.unsubscribe(connections[connection].id(), id);
                        prop_assert_eq!(removed, model.remove(&(connection, id)).is_some());
                    }
                    Op::Disconnect { connection } => {
                        hub.remove_connection(&connections[connection]);
                        model.retain(|(c, _), _| *c != connection);
                        connections[connection] = Connection::detached(next_id, 1 << 20);
                        next_id += 1;
                    }
                    Op::Publish { topic } => {
                        let expected: BTreeSet<usize> = model
                            .iter()
                            .filter(|(_, p)| TopicPattern::parse(p).unwrap().matches(topic))
                            .map(|((c, _), _)| *c)
                            .collect();
                        prop_assert_eq!(hub.publish(topic, &1).unwrap(), expected.len(), "{}: {:?}", topic, model);
                    }
                }
                prop_assert_eq!(hub.subscription_count(), model.len());
            }
            for connection in &connections {
                hub.remove_connection(connection);
            }
            let registry = hub.read();
            prop_assert!(registry.wild.is_empty() && registry.exact.is_empty());
            prop_assert!(registry.by_connection.is_empty() && registry.count == 0);
            drop(registry);
            // Nothing kept still holds a connection, not even stale matches
            // (they would keep its account alive), nor bytes on its account.
            prop_assert!(connections.iter().all(|c| hub.inner.cache.find(|_, m| m.names(c.id())).is_none()));
            prop_assert!(TOPICS.iter().all(|topic| hub.matches(topic).groups.is_empty()));
            prop_assert!(connections.iter().all(|c| c.account().held_in(Direction::Subscriptions) == 0));
        }
    }

    #[test]
    fn each_connection_gets_one_event_for_all_its_matching_subscriptions() {
        let hub = Hub::new(Compression::default());
        let connection = Connection::detached(1, 16);
        for (id, pattern) in ["/a/b", "/a/*", "/{*all}"].into_iter().enumerate() {
            let parsed = TopicPattern::parse(pattern).unwrap();
            hub.subscribe(&connection, id as u64, parsed, pattern, LagPolicy::default()).unwrap();
        }
        assert_eq!(hub.publish("/a/b", &1).unwrap(), 1);
        assert_eq!(connection.events().len(), 1);
        let matches = hub.matches("/a/b");
        assert_eq!(matches.subscriptions, [0, 1, 2]);
    }

    fn subscribe(hub: &Hub, connection: &Connection, id: u64, pattern: &str) {
        let parsed = TopicPattern::parse(pattern).unwrap();
        hub.subscribe(connection, id, parsed, pattern, LagPolicy::default()).unwrap();
    }

    fn sorted(mut patterns: Vec<String>) -> Vec<String> {
        patterns.sort();
        patterns
    }

    #[test]
    fn interest_counts_the_own_subscribers_distinct_patterns_not_the_links() {
        let hub = Hub::new(Compression::default());
        let (one, two, link) = (Connection::detached(1, 16), Connection::detached(2, 16), Connection::detached(3, 16));
        link.mark_relay(false);
        subscribe(&hub, &one, 1, "/a/*");
        let interest = hub.interest("/_mesh/");
        let mut changes = interest.changes();
        assert_eq!(interest.patterns(), ["/a/*"], "what was there before is counted");
        subscribe(&hub, &two, 1, "/a/*");
        subscribe(&hub, &two, 2, "/_mesh/nodes/*");
        subscribe(&hub, &link, 1, "/b");
        assert!(!changes.has_changed().unwrap(), "a second holder, a reserved pattern, a link: no change");
        subscribe(&hub, &one, 2, "/c");
        assert!(changes.has_changed().unwrap());
        changes.mark_unchanged();
        assert_eq!(sorted(interest.patterns()), ["/a/*", "/c"]);
        // The same id again replaces its pattern.
        subscribe(&hub, &one, 2, "/d");
        assert_eq!(sorted(interest.patterns()), ["/a/*", "/d"]);
        hub.unsubscribe(1, 1);
        assert_eq!(sorted(interest.patterns()), ["/a/*", "/d"], "two still holds /a/*");
        hub.remove_connection(&two);
        hub.remove_connection(&link);
        assert_eq!(interest.patterns(), ["/d"]);
        hub.remove_connection(&one);
        assert!(interest.patterns().is_empty());
    }

    #[test]
    fn relayed_events_skip_links_and_losses_reach_the_overlapping_subscriptions() {
        let hub = Hub::new(Compression::default());
        let (own, link) = (Connection::detached(1, 16), Connection::detached(2, 16));
        link.mark_relay(false);
        subscribe(&hub, &own, 1, "/news/*");
        subscribe(&hub, &own, 2, "/weather/{*rest}");
        subscribe(&hub, &own, 3, "/_mesh/nodes/*");
        subscribe(&hub, &link, 1, "/news/*");
        assert_eq!(hub.publish("/news/a", &1).unwrap(), 2, "a local publish goes to the link too");
        assert_eq!(hub.publish_relayed("/news/a", &1).unwrap(), 1, "a relayed one does not");

        let missed = |connection: &Connection| {
            let mut events = Vec::new();
            connection.events().drain_into(&mut events).0
        };
        missed(&own);
        hub.report_lost(Some(&TopicPattern::parse("/news/{x}").unwrap()), 7, "/_mesh/");
        assert_eq!(missed(&own), BTreeMap::from([(1, 7)]), "only /news/*, with the count");
        hub.report_lost(None, 0, "/_mesh/");
        assert_eq!(missed(&own), BTreeMap::from([(1, 0), (2, 0)]), "all but the reserved, count unknown");
        assert!(missed(&link).is_empty(), "links are not told");
    }
}
