//! Each topic's subscriptions as last found, so that publishing to a topic
//! again takes no lock that subscribing takes, and copies nothing.
//!
//! Publishers on different topics meet on different shards. An entry is
//! filled under the registry's read lock and forgotten under its write lock
//! when a subscription that matches it comes or goes, so it is never stale.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

const SHARDS: usize = 16;
/// Topics kept per shard: 1,024 in all, as nats-server's sublist cache.
const TOPICS_PER_SHARD: usize = 64;
/// Matches kept per shard, whatever the topics: 262,144 in all, at most
/// about 10 MiB. A topic with more subscribers than a shard keeps is found
/// anew each time, a cost its deliveries dwarf.
const MATCHES_PER_SHARD: usize = 1 << 14;

/// Values (of `size` matches each) by topic.
pub(crate) struct TopicCache<V> {
    hasher: RandomState,
    shards: [Shard<V>; SHARDS],
}

/// Aligned apart, so that publishers on two shards share no cache line.
#[repr(align(128))]
struct Shard<V>(RwLock<Entries<V>>);

struct Entries<V> {
    topics: HashMap<Box<str>, (Arc<V>, usize)>,
    size: usize,
}

impl<V> Default for TopicCache<V> {
    fn default() -> Self {
        Self {
            hasher: RandomState::new(),
            shards: std::array::from_fn(|_| Shard(RwLock::new(Entries { topics: HashMap::new(), size: 0 }))),
        }
    }
}

impl<V> TopicCache<V> {
    fn shard(&self, topic: &str) -> &Shard<V> {
        &self.shards[self.hasher.hash_one(topic) as usize % SHARDS]
    }

    pub(crate) fn get(&self, topic: &str) -> Option<Arc<V>> {
        self.shard(topic).read().topics.get(topic).map(|(value, _)| value.clone())
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
        if let Some((_, replaced)) = shard.topics.insert(topic.into(), (value.clone(), size)) {
            shard.size -= replaced;
        }
    }

    /// Forgets one topic. Call it under the registry's write lock.
    pub(crate) fn forget(&self, topic: &str) {
        self.shard(topic).write().forget(topic);
    }

    /// Forgets every topic `stale` says is. Call it under the registry's
    /// write lock.
    pub(crate) fn forget_where(&self, mut stale: impl FnMut(&str, &V) -> bool) {
        for shard in &self.shards {
            // Looked over first for reading: most changes touch few topics.
            let topics: Vec<Box<str>> =
                shard.read().topics.iter().filter(|(t, (v, _))| stale(t, v)).map(|(t, _)| t.clone()).collect();
            if !topics.is_empty() {
                let mut shard = shard.write();
                topics.iter().for_each(|topic| shard.forget(topic));
            }
        }
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
        if let Some((_, size)) = self.topics.remove(topic) {
            self.size -= size;
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
        cache.forget_where(|topic, _| topic.starts_with("/t/"));
        assert_eq!(cache.len(), 1);
        cache.forget("/kept");
        assert_eq!(cache.len(), 0);
    }
}
