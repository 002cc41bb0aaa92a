//! A map that is a vector while small: most places in the subscription
//! registry hold one entry (a topic's only subscriber, a node's only child),
//! where a hash map's smallest table costs hundreds of bytes.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

/// Past this many entries the vector becomes a hash map.
const FEW: usize = 8;

pub(crate) enum SmallMap<K, V> {
    /// Searched in order.
    Few(Vec<(K, V)>),
    Many(HashMap<K, V>),
}

impl<K, V> Default for SmallMap<K, V> {
    fn default() -> Self {
        SmallMap::Few(Vec::new())
    }
}

impl<K: Hash + Eq, V> SmallMap<K, V> {
    pub(crate) fn get<Q: Hash + Eq + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        match self {
            SmallMap::Few(entries) => entries.iter().find(|(k, _)| k.borrow() == key).map(|(_, v)| v),
            SmallMap::Many(entries) => entries.get(key),
        }
    }

    pub(crate) fn get_mut<Q: Hash + Eq + ?Sized>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
    {
        match self {
            SmallMap::Few(entries) => entries.iter_mut().find(|(k, _)| k.borrow() == key).map(|(_, v)| v),
            SmallMap::Many(entries) => entries.get_mut(key),
        }
    }

    /// The value of `key`, inserted with `make` if missing.
    pub(crate) fn get_or_insert_with<Q: Hash + Eq + ?Sized>(&mut self, key: &Q, make: impl FnOnce() -> (K, V)) -> &mut V
    where
        K: Borrow<Q>,
    {
        if self.get(key).is_none() {
            let (k, v) = make();
            self.insert(k, v);
        }
        self.get_mut(key).expect("just inserted")
    }

    /// Inserts, returning the value `key` had.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        if let SmallMap::Few(entries) = self {
            if let Some(entry) = entries.iter_mut().find(|(k, _)| *k == key) {
                return Some(std::mem::replace(&mut entry.1, value));
            }
            if entries.len() < FEW {
                // One at a time: a vector's first allocation is four
                // entries, and most hold one.
                entries.reserve_exact(1);
                entries.push((key, value));
                return None;
            }
            *self = SmallMap::Many(std::mem::take(entries).into_iter().collect());
        }
        match self {
            SmallMap::Many(entries) => entries.insert(key, value),
            SmallMap::Few(_) => unreachable!("became a map above"),
        }
    }

    pub(crate) fn remove<Q: Hash + Eq + ?Sized>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        match self {
            SmallMap::Few(entries) => {
                let i = entries.iter().position(|(k, _)| k.borrow() == key)?;
                let (_, value) = entries.swap_remove(i);
                if entries.is_empty() {
                    // Give the allocation back.
                    *entries = Vec::new();
                }
                Some(value)
            }
            SmallMap::Many(entries) => {
                let value = entries.remove(key);
                if entries.len() <= FEW / 2 {
                    *self = SmallMap::Few(std::mem::take(entries).into_iter().collect());
                } else if entries.len() * 4 < entries.capacity() {
                    // Give back what the entries no longer need: a client
                    // could otherwise leave tables at their peak, uncharged.
                    entries.shrink_to(entries.len() * 2);
                }
                value
            }
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        match self {
            SmallMap::Few(entries) => entries.is_empty(),
            SmallMap::Many(entries) => entries.is_empty(),
        }
    }

    pub(crate) fn for_each<'a>(&'a self, mut f: impl FnMut(&'a K, &'a V)) {
        match self {
            SmallMap::Few(entries) => entries.iter().for_each(|(k, v)| f(k, v)),
            SmallMap::Many(entries) => entries.iter().for_each(|(k, v)| f(k, v)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_behaves_as_a_map_across_both_shapes() {
        let mut map = SmallMap::default();
        let mut oracle = HashMap::new();
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let key = rng % 24;
            if rng % 3 == 0 {
                assert_eq!(map.remove(&key), oracle.remove(&key));
            } else {
                assert_eq!(map.insert(key, rng), oracle.insert(key, rng));
            }
            assert_eq!(map.get(&key), oracle.get(&key));
            assert_eq!(map.is_empty(), oracle.is_empty());
        }
        // Emptied down to a few, a map gives its room back.
        let mut wide = SmallMap::default();
        for k in 0..2000u32 {
            wide.insert(k, k);
        }
        for k in 6..2000u32 {
            wide.remove(&k);
        }
        match &wide {
            SmallMap::Many(entries) => assert!(entries.capacity() < 64, "{}", entries.capacity()),
            SmallMap::Few(_) => panic!("six entries stay in the map shape"),
        }
        let mut seen = HashMap::new();
        map.for_each(|k, v| assert!(seen.insert(*k, *v).is_none()));
        assert_eq!(seen, oracle);
    }
}
