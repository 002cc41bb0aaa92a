//! The subscription index: a tree over a pattern's segments, so that finding
//! a topic's subscriptions costs the topic's depth and its matches, not the
//! number of subscriptions (the shape of nats-server's sublist and of MQTT
//! brokers' topic trees).
//!
//! Each node has a child per literal segment, one child for the one-segment
//! wildcard (`*`, `{name}`), and the subscriptions that end there: those
//! whose pattern ends at that node, and those whose `{*rest}` starts there.
//!
//! Nodes are small (a few children or subscriptions live in a vector, more
//! in a map) because a hostile client chooses the patterns' shapes.

use super::pattern::{Segment, TopicPattern};
use super::small_map::SmallMap;

/// A subscription's key: (connection id, subscription id).
pub(crate) type Key = (u64, u64);

/// Values of type `T` under patterns, found by topic.
pub(crate) struct Index<T> {
    root: Node<T>,
}

struct Node<T> {
    literal: SmallMap<Box<str>, Node<T>>,
    one: Option<Box<Node<T>>>,
    /// Boxed: most nodes on the way to a subscription hold none.
    ends: Option<Box<Ends<T>>>,
}

struct Ends<T> {
    /// Patterns that end here.
    here: SmallMap<Key, T>,
    /// Patterns whose `{*rest}` starts here.
    rest: SmallMap<Key, T>,
}

impl<T> Default for Node<T> {
    fn default() -> Self {
        Self { literal: SmallMap::default(), one: None, ends: None }
    }
}

impl<T> Default for Index<T> {
    fn default() -> Self {
        Self { root: Node::default() }
    }
}

impl<T> Index<T> {
    /// Adds `value` under `pattern`; replaces a value of the same key there.
    pub(crate) fn insert(&mut self, pattern: &TopicPattern, key: Key, value: T) {
        let mut node = &mut self.root;
        let mut rest = false;
        for segment in pattern.segments() {
            node = match segment {
                Segment::Literal(literal) => {
                    node.literal.get_or_insert_with(&**literal, || (literal.clone(), Node::default()))
                }
                Segment::One => node.one.get_or_insert_with(Box::default),
                Segment::Rest => {
                    rest = true;
                    break;
                }
            };
        }
        let ends =
            node.ends.get_or_insert_with(|| Box::new(Ends { here: SmallMap::default(), rest: SmallMap::default() }));
        if rest { &mut ends.rest } else { &mut ends.here }.insert(key, value);
    }

    /// Removes the value of `key` under `pattern`, and the nodes left empty.
    pub(crate) fn remove(&mut self, pattern: &TopicPattern, key: Key) -> Option<T> {
        Self::remove_below(&mut self.root, pattern.segments(), key)
    }

    fn remove_below(node: &mut Node<T>, segments: &[Segment], key: Key) -> Option<T> {
        let (removed, emptied) = match segments.split_first() {
            None | Some((Segment::Rest, _)) => {
                let ends = node.ends.as_mut()?;
                let set = if segments.is_empty() { &mut ends.here } else { &mut ends.rest };
                let removed = set.remove(&key);
                if ends.here.is_empty() && ends.rest.is_empty() {
                    node.ends = None;
                }
                return removed;
            }
            Some((Segment::Literal(literal), tail)) => {
                let child = node.literal.get_mut(&**literal)?;
                let removed = Self::remove_below(child, tail, key);
                (removed, child.is_empty().then_some(()))
            }
            Some((Segment::One, tail)) => {
                let child = node.one.as_mut()?;
                let removed = Self::remove_below(child, tail, key);
                (removed, child.is_empty().then_some(()))
            }
        };
        if emptied.is_some() {
            match &segments[0] {
                Segment::Literal(literal) => {
                    node.literal.remove(&**literal);
                }
                _ => node.one = None,
            }
        }
        removed
    }

    /// The value of `key` under `pattern`.
    pub(crate) fn get(&self, pattern: &TopicPattern, key: Key) -> Option<&T> {
        let mut node = &self.root;
        for segment in pattern.segments() {
            node = match segment {
                Segment::Literal(literal) => node.literal.get(&**literal)?,
                Segment::One => node.one.as_deref()?,
                Segment::Rest => return node.ends.as_ref()?.rest.get(&key),
            };
        }
        node.ends.as_ref()?.here.get(&key)
    }

    /// Calls `found` with each value whose pattern matches `topic` (the
    /// rules of [`TopicPattern::matches`]), each once.
    pub(crate) fn for_each_match<'a>(&'a self, topic: &str, mut found: impl FnMut(Key, &'a T)) {
        let Some(path) = topic.strip_prefix('/') else { return };
        // Topics are at most a few dozen segments: the server's limits.
        let parts: Vec<&str> = path.split('/').collect();
        self.root.visit(&parts, &mut found);
    }

    /// Whether nothing at all is held.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.root.is_empty()
    }
}

impl<T> Node<T> {
    fn is_empty(&self) -> bool {
        self.literal.is_empty() && self.one.is_none() && self.ends.is_none()
    }

    /// Each node is visited at most once per topic: a node stands for one
    /// sequence of choices, so the cost is bounded by the tree's size along
    /// the topic's path, not by the number of subscriptions.
    fn visit<'a>(&'a self, parts: &[&str], found: &mut impl FnMut(Key, &'a T)) {
        let Some((first, tail)) = parts.split_first() else {
            if let Some(ends) = &self.ends {
                ends.here.for_each(|key, value| found(*key, value));
            }
            return;
        };
        // Wildcards take only non-empty segments.
        if !first.is_empty() {
            if let Some(ends) = &self.ends {
                ends.rest.for_each(|key, value| found(*key, value));
            }
            if let Some(one) = &self.one {
                one.visit(tail, found);
            }
        }
        if let Some(child) = self.literal.get(*first) {
            child.visit(tail, found);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    fn segment() -> impl Strategy<Value = &'static str> {
        prop_oneof![Just("a"), Just("b"), Just(""), Just("*"), Just("{p}")]
    }

    /// Patterns of up to 5 segments over a tiny alphabet, so that they meet.
    fn pattern() -> impl Strategy<Value = String> {
        (prop::collection::vec(segment(), 0..5), any::<bool>()).prop_map(|(segments, rest)| {
            let mut pattern: String = segments.iter().map(|s| format!("/{s}")).collect();
            if rest || pattern.is_empty() {
                pattern.push_str(if rest { "/{*rest}" } else { "/" });
            }
            pattern
        })
    }

    fn topic() -> impl Strategy<Value = String> {
        prop::collection::vec(prop_oneof![Just("a"), Just("b"), Just("c"), Just("")], 1..7)
            .prop_map(|segments| segments.iter().map(|s| format!("/{s}")).collect())
    }

    /// What the pattern table's rules (the matcher) say.
    fn oracle(subscriptions: &[(Key, TopicPattern)], topic: &str) -> BTreeSet<Key> {
        subscriptions.iter().filter(|(_, p)| p.matches(topic)).map(|(key, _)| *key).collect()
    }

    fn found(index: &Index<()>, topic: &str) -> BTreeSet<Key> {
        let mut keys = Vec::new();
        index.for_each_match(topic, |key, _| keys.push(key));
        let set: BTreeSet<Key> = keys.iter().copied().collect();
        assert_eq!(set.len(), keys.len(), "a subscription was found twice for {topic}");
        set
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// The index finds exactly what the matcher says, after insertions,
        /// replacements and removals, and removing everything leaves nothing.
        #[test]
        fn the_index_finds_exactly_the_matches_of_the_matcher(
            patterns in prop::collection::vec((0u64..4, 0u64..6, pattern()), 1..40),
            removals in prop::collection::vec((0u64..4, 0u64..6), 0..20),
            topics in prop::collection::vec(topic(), 1..20),
        ) {
            let mut index = Index::default();
            let mut subscriptions: Vec<(Key, TopicPattern)> = Vec::new();
            for (connection, id, raw) in patterns {
                let key = (connection, id);
                let pattern = TopicPattern::parse(&raw).unwrap();
                // The same key again replaces: as the hub does, remove first.
                if let Some(i) = subscriptions.iter().position(|(k, _)| *k == key) {
                    let (_, old) = subscriptions.remove(i);
                    prop_assert!(index.remove(&old, key).is_some());
                }
                index.insert(&pattern, key, ());
                subscriptions.push((key, pattern));
            }
            for key in removals {
                if let Some(i) = subscriptions.iter().position(|(k, _)| *k == key) {
                    let (_, pattern) = subscriptions.remove(i);
                    prop_assert!(index.remove(&pattern, key).is_some());
                }
            }
            for topic in &topics {
                prop_assert_eq!(found(&index, topic), oracle(&subscriptions, topic), "topic {}", topic);
            }
            for (key, pattern) in subscriptions.drain(..) {
                prop_assert!(index.remove(&pattern, key).is_some());
                prop_assert!(index.remove(&pattern, key).is_none());
            }
            prop_assert!(index.is_empty());
        }
    }

    /// Past a few children a node's literals move to a map: both kinds
    /// find, and lose, the same.
    #[test]
    fn many_literal_children() {
        let mut index = Index::default();
        let patterns: Vec<TopicPattern> = (0..40)
            .flat_map(|i| [format!("/x{i}/*"), format!("/x{i}"), format!("/x{i}/y/{{*r}}")])
            .map(|p| TopicPattern::parse(&p).unwrap())
            .collect();
        for (n, pattern) in patterns.iter().enumerate() {
            index.insert(pattern, (0, n as u64), ());
        }
        let subscriptions: Vec<(Key, TopicPattern)> =
            patterns.iter().enumerate().map(|(n, p)| ((0, n as u64), p.clone())).collect();
        for topic in ["/x0", "/x7/a", "/x39/y/z", "/x40", "/x12/y"] {
            assert_eq!(found(&index, topic), oracle(&subscriptions, topic), "{topic}");
        }
        for (key, pattern) in &subscriptions {
            assert!(index.remove(pattern, *key).is_some());
        }
        assert!(index.is_empty());
    }

    #[test]
    fn the_documented_table_through_the_index() {
        let rows = [
            ("/chat/{room}", "/chat/lobby", true),
            ("/chat/*", "/chat", false),
            ("/chat/{*rest}", "/chat/lobby/typing", true),
            ("/chat/{*rest}", "/chat", false),
            ("/chat/{*rest}", "/chat//x", false),
            ("/prices/*/usd", "/prices/btc/usd", true),
            ("/{*all}", "/any/topic/at/all", true),
            ("/", "/", true),
        ];
        for (pattern, topic, expected) in rows {
            let mut index = Index::default();
            index.insert(&TopicPattern::parse(pattern).unwrap(), (1, 1), ());
            assert_eq!(!found(&index, topic).is_empty(), expected, "{pattern} ~ {topic}");
        }
    }
}
