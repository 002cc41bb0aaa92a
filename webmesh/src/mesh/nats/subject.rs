//! Topics as NATS subjects, and patterns as NATS wildcards.
//!
//! A topic's segments are the subject's tokens, under a prefix:
//! `/chat/lobby` is `webmesh.chat.lobby`. NATS forbids in a token what
//! webmesh allows in a segment (`.`, white space, `*` and `>` as tokens,
//! emptiness), so each segment is escaped: bytes other than ASCII letters,
//! digits, `-` and `_` become `%XX` (upper-case hex), and an empty segment
//! is the token `%`. Subjects are then plain ASCII, and the escaping
//! round-trips.
//!
//! A pattern's `*` and `{name}` are `*`, a final `{*rest}` is `>`: both
//! match one or more whole tokens as webmesh does segments. NATS is only
//! the coarse filter: `*` also matches the token of an empty segment, which
//! webmesh's `*` does not, so a node hands what arrives to its hub, whose
//! matcher decides which subscribers get it.

use crate::pubsub::{Segment, TopicPattern};

/// The subjects of one mesh: its topics and patterns under `prefix`.
#[derive(Debug, Clone)]
pub(crate) struct Subjects {
    prefix: String,
}

impl Subjects {
    /// `prefix` is one or more tokens, e.g. `webmesh` or `webmesh.prod`.
    pub(crate) fn new(prefix: impl Into<String>) -> Self {
        Self { prefix: prefix.into() }
    }

    /// The subject of `topic` (a path starting with `/`).
    pub(crate) fn of_topic(&self, topic: &str) -> String {
        // Its length, unless segments need escaping: one allocation per
        // call or event.
        let mut subject = String::with_capacity(self.prefix.len() + topic.len() + 1);
        subject.push_str(&self.prefix);
        for segment in topic.strip_prefix('/').unwrap_or(topic).split('/') {
            subject.push('.');
            escape(segment, &mut subject);
        }
        subject
    }

    /// The subject filter of `pattern`.
    pub(crate) fn of_pattern(&self, pattern: &TopicPattern) -> String {
        let mut subject = self.prefix.clone();
        for segment in pattern.segments() {
            subject.push('.');
            match segment {
                Segment::Literal(literal) => escape(literal, &mut subject),
                Segment::One => subject.push('*'),
                Segment::Rest => subject.push('>'),
            }
        }
        subject
    }

    /// The subject filter of a call route (`/stock/{sku}`, `/files/{*path}`):
    /// a segment with a parameter in it is any one token, a catch-all the
    /// rest. A node that receives a call checks the path against its routes.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn of_route(&self, route: &str) -> String {
        let mut subject = self.prefix.clone();
        for segment in route.strip_prefix('/').unwrap_or(route).split('/') {
            subject.push('.');
            if segment.starts_with("{*") {
                subject.push('>');
                break;
            } else if segment.contains('{') {
                subject.push('*');
            } else {
                escape(segment, &mut subject);
            }
        }
        subject
    }

    /// The subject of `name` under the prefix, escaped as one token.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn of_name(&self, name: &str) -> String {
        let mut subject = self.prefix.clone();
        subject.push('.');
        escape(name, &mut subject);
        subject
    }

    /// The filter of every subject one token under the prefix.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn any(&self) -> String {
        format!("{}.*", self.prefix)
    }

    /// The topic whose subject is `subject`; `None` for a subject that is
    /// not one of this mesh's topics.
    pub(crate) fn to_topic(&self, subject: &str) -> Option<String> {
        let tokens = subject.strip_prefix(&self.prefix)?.strip_prefix('.')?;
        let mut topic = String::with_capacity(tokens.len() + 1);
        for token in tokens.split('.') {
            topic.push('/');
            unescape(token, &mut topic)?;
        }
        Some(topic)
    }
}

/// `name` as a key of a JetStream key-value bucket (which allows `=` but not `%`).
#[cfg_attr(not(feature = "nats"), allow(dead_code))]
pub(crate) fn key(name: &str) -> String {
    let mut key = String::with_capacity(name.len());
    escape(name, &mut key);
    key.replace('%', "=")
}

fn is_plain(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_'
}

fn escape(segment: &str, out: &mut String) {
    if segment.is_empty() {
        out.push('%');
        return;
    }
    // Runs of plain bytes (ASCII, so whole characters) go in at once.
    let bytes = segment.as_bytes();
    let mut run = 0;
    for (at, &byte) in bytes.iter().enumerate() {
        if is_plain(byte) {
            continue;
        }
        if run < at {
            out.push_str(&segment[run..at]);
        }
        out.push('%');
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0xf)]));
        run = at + 1;
    }
    out.push_str(&segment[run..]);
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn unescape(token: &str, out: &mut String) -> Option<()> {
    if token == "%" {
        return Some(());
    }
    let mut bytes = Vec::with_capacity(token.len());
    let mut rest = token.as_bytes();
    while let Some((&first, tail)) = rest.split_first() {
        if first == b'%' {
            let hex = tail.get(..2)?;
            let value = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
            bytes.push(value);
            rest = &tail[2..];
        } else if is_plain(first) {
            bytes.push(first);
            rest = tail;
        } else {
            return None;
        }
    }
    // An empty token is no segment's: empty segments are `%`.
    if bytes.is_empty() {
        return None;
    }
    out.push_str(&String::from_utf8(bytes).ok()?);
    Some(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn subjects() -> Subjects {
        Subjects::new("webmesh")
    }

    #[test]
    fn routes_names_and_keys_map_as_documented() {
        let calls = Subjects::new("webmesh._mesh.call");
        assert_eq!(calls.of_route("/stock/{sku}"), "webmesh._mesh.call.stock.*");
        assert_eq!(calls.of_route("/files/{*path}"), "webmesh._mesh.call.files.>");
        assert_eq!(calls.of_route("/img/{name}.png"), "webmesh._mesh.call.img.*");
        assert_eq!(calls.of_topic("/img/a.png"), "webmesh._mesh.call.img.a%2Epng");
        let nodes = Subjects::new("webmesh._mesh.nodes");
        assert_eq!(nodes.of_name("a.b"), "webmesh._mesh.nodes.a%2Eb");
        assert_eq!(nodes.any(), "webmesh._mesh.nodes.*");
        assert_eq!(key("a.b c"), "a=2Eb=20c");
        assert_eq!(key("0123abcdef"), "0123abcdef");
    }

    #[test]
    fn topics_and_patterns_map_as_documented() {
        let s = subjects();
        assert_eq!(s.of_topic("/chat/lobby"), "webmesh.chat.lobby");
        assert_eq!(s.of_topic("/"), "webmesh.%");
        assert_eq!(s.of_topic("/a.b/c d//*>"), "webmesh.a%2Eb.c%20d.%.%2A%3E");
        assert_eq!(s.of_topic("/café"), "webmesh.caf%C3%A9");
        let pattern = |p: &str| s.of_pattern(&TopicPattern::parse(p).unwrap());
        assert_eq!(pattern("/chat/*"), "webmesh.chat.*");
        assert_eq!(pattern("/chat/{room}/typing"), "webmesh.chat.*.typing");
        assert_eq!(pattern("/chat/{*rest}"), "webmesh.chat.>");
        assert_eq!(pattern("/{*all}"), "webmesh.>");
        assert_eq!(s.to_topic("webmesh.chat.lobby").as_deref(), Some("/chat/lobby"));
        assert_eq!(s.to_topic("other.chat"), None);
        assert_eq!(s.to_topic("webmeshx.chat"), None);
        assert_eq!(s.to_topic("webmesh.a%2"), None);
        assert_eq!(s.to_topic("webmesh.a..b"), None);
    }

    /// A segment webmesh accepts in a topic: anything but `/`, `*`, `{`, `}`.
    fn segment() -> impl Strategy<Value = String> {
        proptest::string::string_regex("[^/*{}]{0,8}").unwrap()
    }

    fn topic() -> impl Strategy<Value = String> {
        proptest::collection::vec(segment(), 1..6).prop_map(|segments| format!("/{}", segments.join("/")))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn every_topic_round_trips_through_a_valid_subject(topic in topic()) {
            let s = subjects();
            let subject = s.of_topic(&topic);
            // What NATS accepts in a published subject: printable ASCII
            // tokens, none empty, none a wildcard.
            prop_assert!(subject.bytes().all(|b| b.is_ascii_graphic()), "{subject}");
            prop_assert!(subject.split('.').all(|t| !t.is_empty() && t != "*" && t != ">"), "{subject}");
            prop_assert_eq!(subject.split('.').count(), topic.split('/').count());
            prop_assert_eq!(s.to_topic(&subject), Some(topic));
        }

        #[test]
        fn a_subject_filter_matches_at_least_the_topics_the_pattern_does(
            topic in topic(),
            wildcards in proptest::collection::vec(0u8..4, 1..6),
        ) {
            // A pattern made from the topic, some segments made wildcards.
            let segments: Vec<&str> = topic[1..].split('/').collect();
            let mut pattern = String::new();
            for (i, segment) in segments.iter().enumerate() {
                pattern.push('/');
                match wildcards.get(i) {
                    Some(1) => pattern.push('*'),
                    Some(2) if i + 1 == segments.len() => pattern.push_str("{*rest}"),
                    _ => pattern.push_str(segment),
                }
            }
            let parsed = TopicPattern::parse(&pattern).unwrap();
            let s = subjects();
            if parsed.matches(&topic) {
                prop_assert!(nats_matches(&s.of_pattern(&parsed), &s.of_topic(&topic)), "{pattern} ~ {topic}");
            }
        }
    }

    /// NATS's own rule: `*` one token, `>` one or more, the rest literally.
    fn nats_matches(filter: &str, subject: &str) -> bool {
        let filter: Vec<&str> = filter.split('.').collect();
        let subject: Vec<&str> = subject.split('.').collect();
        for (i, token) in filter.iter().enumerate() {
            match *token {
                ">" => return subject.len() > i,
                "*" if i < subject.len() => {}
                literal if subject.get(i) == Some(&literal) => {}
                _ => return false,
            }
        }
        filter.len() == subject.len()
    }
}
