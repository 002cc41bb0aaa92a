//! Each topic's subscriptions as last found, so that publishing to a topic
//! again takes no lock that subscribing takes, and copies nothing.
//!
//! Publishers on different topics meet on different shards. An entry is
//! filled under the registry's read lock and forgotten under its write lock
//! when a subscription that may match it comes or goes, so it is never
//! stale: one topic when the subscription names it; when it is a wildcard,
//! all the topics under its first segment if that is a literal (`/rooms/*`
//! forgets `/rooms/...`), else all topics. Both in constant time, by change
//! counters: looking for the kept topics a wildcard matches would cost each
//! SUBSCRIBE up to the whole cache, which a client chooses.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

const SHARDS: usize = 16;
/// Topics kept per shard: 1,024 in all, as nats-server's sublist cache.
const TOPICS_PER_SHARD: usize = 64;
/// Matches kept per shard, whatever the topics: 262,144 in all, at most
/// about 10 MiB. A topic with more subscribers than a shard keeps is found
/// anew each time, a cost its deliveries dwarf.
const MATCHES_PER_SHARD: usize = 1 << 14;

/// Buckets of first segments, each with its own change counter; topics
/// whose first segments share one are forgotten together.
const PREFIXES: usize = 256;

/// Values (of `size` matches each) by topic.
pub(crate) struct TopicCache<V> {
    hasher: RandomState,
    /// How many wildcard changes there were: an entry remembers the count
    /// when it was filled.
    changes: AtomicU64,
    /// The count at the last change of a wildcard that starts with one.
    any_changed: AtomicU64,
    /// The count at the last change of a wildcard that starts with a
    /// literal, by the literal's bucket.
    prefix_changed: [AtomicU64; PREFIXES],
    shards: [Shard<V>; SHARDS],
}

/// Aligned apart, so that publishers on two shards share no cache line.
#[repr(align(128))]
struct Shard<V>(RwLock<Entries<V>>);

struct Entries<V> {
    topics: HashMap<Box<str>, Entry<V>>,
    size: usize,
}

struct Entry<V> {
    value: Arc<V>,
    size: usize,
    /// The count of changes when it was filled.
    filled: u64,
}

impl<V> Default for TopicCache<V> {
    fn default() -> Self {
        Self {
            hasher: RandomState::new(),
            changes: AtomicU64::new(0),
            any_changed: AtomicU64::new(0),
            prefix_changed: std::array::from_fn(|_| AtomicU64::new(0)),
            shards: std::array::from_fn(|_| Shard(RwLock::new(Entries { topics: HashMap::new(), size: 0 }))),
        }
    }
}

impl<V> TopicCache<V> {
    fn shard(&self, topic: &str) -> &Shard<V> {
        &self.shards[self.hasher.hash_one(topic) as usize % SHARDS]
    }

    fn prefix(&self, first_segment: &str) -> &AtomicU64 {
        &self.prefix_changed[self.hasher.hash_one(first_segment) as usize % PREFIXES]
    }

    pub(crate) fn get(&self, topic: &str) -> Option<Arc<V>> {
        // Exactly one `/`: the first segment of `//a` is empty, as a
        // pattern's (`//*`) is.
        let first = topic.strip_prefix('/').unwrap_or(topic).split('/').next().unwrap_or_default();
        let changed = self.any_changed.load(Ordering::Acquire).max(self.prefix(first).load(Ordering::Acquire));
        let shard = self.shard(topic).read();
        shard.topics.get(topic).filter(|e| e.filled >= changed).map(|e| e.value.clone())
    }

    /// Keeps `value`, making room by forgetting others. Call it under the
    /// lock that changes the registry, held for reading.
    pub(crate) fn insert(&self, topic: &str, value: &Arc<V>, size: usize) {
        if size > MATCHES_PER_SHARD {
            return;
        }
        let mut shard = self.shard(topic).write();
        while shard.topics.len() >= TOPICS_PER_SHARD || shard.size + size > MATCHES_PER_SHARD {
            // Any one: the map's order is the hasher's, random per process.
            let Some(evicted) = shard.topics.keys().next().cloned() else { break };
            shard.forget(&evicted);
        }
        shard.size += size;
        let entry = Entry { value: value.clone(), size, filled: self.changes.load(Ordering::Acquire) };
        if let Some(replaced) = shard.topics.insert(topic.into(), entry) {
            shard.size -= replaced.size;
        }
    }

    /// Forgets one topic. Call it under the registry's write lock.
    pub(crate) fn forget(&self, topic: &str) {
        self.shard(topic).write().forget(topic);
    }

    /// Forgets the topics a wildcard starting with `first_literal` may
    /// match: those under it, or all if it starts with a wildcard. Call it
    /// under the registry's write lock.
    pub(crate) fn forget_under(&self, first_literal: Option<&str>) {
        let count = self.changes.fetch_add(1, Ordering::AcqRel) + 1;
        match first_literal {
            Some(first) => self.prefix(first).store(count, Ordering::Release),
            None => self.any_changed.store(count, Ordering::Release),
        }
    }

    /// Forgets every kept topic, valid or not, that `stale` says is. Call
    /// it once the change is made: an entry is filled under the registry's
    /// read lock, so every entry filled before the change is here to see.
    pub(crate) fn forget_where(&self, mut stale: impl FnMut(&str, &V) -> bool) {
        for shard in &self.shards {
            let topics: Vec<Box<str>> =
                shard.read().topics.iter().filter(|(t, e)| stale(t, &e.value)).map(|(t, _)| t.clone()).collect();
            if !topics.is_empty() {
                let mut shard = shard.write();
                topics.iter().for_each(|topic| shard.forget(topic));
            }
        }
    }

    /// A kept topic, valid or not, that `found` says is.
    #[cfg(test)]
    pub(crate) fn find(&self, mut found: impl FnMut(&str, &V) -> bool) -> Option<Box<str>> {
        self.shards
            .iter()
            .find_map(|shard| shard.read().topics.iter().find(|(t, e)| found(t, &e.value)).map(|(t, _)| t.clone()))
    }

    /// How many topics are kept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().topics.len()).sum()
    }
}

impl<V> Shard<V> {
    fn read(&self) -> RwLockReadGuard<'_, Entries<V>> {
        self.0.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Entries<V>> {
        self.0.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<V> Entries<V> {
    fn forget(&mut self, topic: &str) {
        if let Some(entry) = self.topics.remove(topic) {
            self.size -= entry.size;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_keeps_at_most_its_capacity_and_forgets_what_it_is_told() {
        let cache = TopicCache::default();
        for n in 0..5000 {
            cache.insert(&format!("/t/{n}"), &Arc::new(n), 1);
        }
        assert!(cache.len() <= SHARDS * TOPICS_PER_SHARD);
        assert!(cache.len() >= SHARDS * TOPICS_PER_SHARD / 2, "{}", cache.len());
        cache.insert("/big", &Arc::new(0), MATCHES_PER_SHARD + 1);
        assert!(cache.get("/big").is_none());
        cache.insert("/kept", &Arc::new(7), 10);
        assert_eq!(cache.get("/kept").as_deref(), Some(&7));
        cache.forget("/kept");
        assert!(cache.get("/kept").is_none());
        // A cache with room, so that nothing is evicted.
        let cache = TopicCache::default();
        // A first segment in another bucket than `kept`'s.
        let other = (0..).map(|n| format!("other{n}")).find(|o| !std::ptr::eq(cache.prefix(o), cache.prefix("kept")));
        let other = other.expect("256 buckets");
        cache.insert("/kept", &Arc::new(8), 10);
        cache.insert(&format!("/{other}/x"), &Arc::new(1), 10);
        // A change under the other leaves `/kept` kept.
        cache.forget_under(Some(&other));
        assert!(cache.get(&format!("/{other}/x")).is_none());
        assert_eq!(cache.get("/kept").as_deref(), Some(&8));
        cache.forget_under(None);
        assert!(cache.get("/kept").is_none());
        cache.insert("/kept", &Arc::new(9), 10);
        assert_eq!(cache.get("/kept").as_deref(), Some(&9));
    }
}
