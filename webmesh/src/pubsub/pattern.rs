//! Topic patterns: which topics a subscription receives.
//!
//! | pattern | topic | matches |
//! |---|---|---|
//! | `/chat/lobby` | `/chat/lobby` | yes |
//! | `/chat/lobby` | `/chat/lobby/typing` | no |
//! | `/chat/{room}` | `/chat/lobby` | yes |
//! | `/chat/*` | `/chat/lobby` | yes |
//! | `/chat/*` | `/chat` | no |
//! | `/chat/*` | `/chat/lobby/typing` | no |
//! | `/chat/{*rest}` | `/chat/lobby/typing` | yes |
//! | `/chat/{*rest}` | `/chat` | no |
//! | `/prices/*/usd` | `/prices/btc/usd` | yes |
//! | `/prices/*/usd` | `/prices/btc/eur` | no |
//! | `/{*all}` | `/any/topic/at/all` | yes |

/// The longest pattern or topic a server takes by default, in bytes.
pub const DEFAULT_MAX_TOPIC_LENGTH: usize = 1024;

/// The most segments in a pattern or topic a server takes by default.
pub const DEFAULT_MAX_TOPIC_SEGMENTS: usize = 32;

/// The most segments a server can be configured to take: the subscription
/// index walks a pattern's segments recursively.
pub(crate) const MAX_TOPIC_SEGMENTS_CEILING: usize = 256;

/// How long a pattern or topic may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TopicLimits {
    /// In bytes.
    pub(crate) length: usize,
    pub(crate) segments: usize,
}

impl TopicLimits {
    /// A server's, unless configured otherwise.
    pub(crate) const DEFAULT: Self = Self { length: DEFAULT_MAX_TOPIC_LENGTH, segments: DEFAULT_MAX_TOPIC_SEGMENTS };
    /// For patterns the program itself wrote (its routes, its client's subscriptions).
    pub(crate) const NONE: Self = Self { length: usize::MAX, segments: usize::MAX };
}

/// Why a pattern or topic was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PatternError {
    /// Well formed, but longer or deeper than the limits.
    Limit(String),
    /// Not a pattern.
    Invalid(String),
}

impl std::fmt::Display for PatternError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PatternError::Limit(message) | PatternError::Invalid(message) => f.write_str(message),
        }
    }
}

/// A parsed subscription pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TopicPattern {
    segments: Vec<Segment>,
}

/// One `/`-separated part of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    /// Matches itself.
    Literal(Box<str>),
    /// `*` or `{name}`: any one non-empty segment.
    One,
    /// `{*name}`, last: one or more segments, the first non-empty.
    Rest,
}

impl TopicPattern {
    /// Parses a pattern the program wrote: no limits on its size.
    pub(crate) fn parse(pattern: &str) -> Result<Self, PatternError> {
        Self::parse_within(pattern, TopicLimits::NONE)
    }

    /// Parses a pattern from the network, within `limits`.
    pub(crate) fn parse_within(pattern: &str, limits: TopicLimits) -> Result<Self, PatternError> {
        // Checked before anything is split or copied: a compressed message
        // can carry megabytes of `/a/a/a...`.
        if pattern.len() > limits.length {
            let head: String = pattern.chars().take(32).collect();
            let length = limits.length;
            return Err(PatternError::Limit(format!(
                "`{head}...` is {} bytes long, more than the limit of {length} (max_topic_length)",
                pattern.len()
            )));
        }
        let segments = pattern.bytes().filter(|b| *b == b'/').count();
        if segments > limits.segments {
            let most = limits.segments;
            return Err(PatternError::Limit(format!(
                "`{pattern}` has {segments} segments, more than the limit of {most} (max_topic_segments)"
            )));
        }
        let invalid = |message: String| Err(PatternError::Invalid(message));
        let Some(rest) = pattern.strip_prefix('/') else {
            return invalid(format!("pattern `{pattern}` must start with `/`"));
        };
        let parts: Vec<&str> = rest.split('/').collect();
        let mut segments = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let segment = match *part {
                "*" => Segment::One,
                p if p.starts_with("{*") && p.ends_with('}') => {
                    if i + 1 != parts.len() {
                        return invalid(format!("`{p}` must end the pattern `{pattern}`"));
                    }
                    Segment::Rest
                }
                p if p.starts_with('{') && p.ends_with('}') && p.len() > 2 => Segment::One,
                p if p.contains(['{', '}', '*']) => {
                    return invalid(format!(
                        "`{p}` in `{pattern}`: wildcards are whole segments, `*`, `{{name}}` or `{{*name}}`"
                    ))
                }
                p => Segment::Literal(p.into()),
            };
            segments.push(segment);
        }
        Ok(Self { segments })
    }

    /// Its first segment, if a literal: every topic it matches starts with it.
    pub(crate) fn first_literal(&self) -> Option<&str> {
        match self.segments.first() {
            Some(Segment::Literal(literal)) => Some(literal),
            _ => None,
        }
    }

    /// Its segments, in order.
    pub(crate) fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Whether the pattern has no wildcard, i.e. names one topic.
    pub(crate) fn is_exact(&self) -> bool {
        self.segments.iter().all(|s| matches!(s, Segment::Literal(_)))
    }

    /// Whether some topic could match both this pattern and `route`, a
    /// subscribe handler's route. Never `false` when one could: a route's
    /// `{*rest}` is taken to match even nothing, whatever the router does.
    pub(crate) fn overlaps(&self, route: &TopicPattern) -> bool {
        fn overlap(pattern: &[Segment], route: &[Segment]) -> bool {
            match (pattern.split_first(), route.split_first()) {
                (None, None) => true,
                (_, Some((Segment::Rest, _))) => true,
                (None, Some(_)) | (Some(_), None) => false,
                (Some((Segment::Rest, _)), Some(_)) => true,
                (Some((p, pattern)), Some((r, route))) => {
                    let fits = match (p, r) {
                        (Segment::Literal(a), Segment::Literal(b)) => a == b,
                        (Segment::Literal(a), Segment::One) | (Segment::One, Segment::Literal(a)) => !a.is_empty(),
                        _ => true,
                    };
                    fits && overlap(pattern, route)
                }
            }
        }
        overlap(&self.segments, &route.segments)
    }

    pub(crate) fn matches(&self, topic: &str) -> bool {
        let Some(topic) = topic.strip_prefix('/') else { return false };
        let mut parts = topic.split('/');
        for segment in &self.segments {
            match segment {
                Segment::Rest => return parts.next().is_some_and(|p| !p.is_empty()),
                Segment::One => {
                    if parts.next().is_none_or(str::is_empty) {
                        return false;
                    }
                }
                Segment::Literal(literal) => {
                    if parts.next() != Some(&**literal) {
                        return false;
                    }
                }
            }
        }
        parts.next().is_none()
    }
}

/// Checks a topic to publish to: a path without wildcards, within `limits`.
pub(crate) fn validate_topic(topic: &str, limits: TopicLimits) -> Result<(), PatternError> {
    if TopicPattern::parse_within(topic, limits)?.is_exact() {
        Ok(())
    } else {
        Err(PatternError::Invalid(format!("cannot publish to `{topic}`: a topic has no wildcards")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table of the module docs and PROTOCOL.md, row by row.
    #[test]
    fn the_documented_table() {
        let table = include_str!("pattern.rs")
            .lines()
            .skip_while(|l| !l.starts_with("//! | `"))
            .take_while(|l| l.starts_with("//! | `"))
            .map(|l| l.trim_start_matches("//! ").split('|').map(|c| c.trim().trim_matches('`')).collect::<Vec<_>>())
            .collect::<Vec<_>>();
        assert_eq!(table.len(), 11);
        for row in table {
            let (pattern, topic, expected) = (row[1], row[2], row[3] == "yes");
            assert_eq!(TopicPattern::parse(pattern).unwrap().matches(topic), expected, "{pattern} ~ {topic}");
        }
    }

    #[test]
    fn protocol_md_has_the_same_table() {
        let doc = include_str!("../../../PROTOCOL.md");
        for line in include_str!("pattern.rs").lines().filter(|l| l.starts_with("//! | `")) {
            assert!(doc.contains(line.trim_start_matches("//! ")), "PROTOCOL.md lacks: {line}");
        }
    }

    #[test]
    fn overlong_patterns_are_refused_before_being_split() {
        let limits = TopicLimits::DEFAULT;
        let refusal = |pattern: &str| match TopicPattern::parse_within(pattern, limits) {
            Err(PatternError::Limit(message)) => message,
            other => panic!("{other:?}"),
        };
        let long = "/a".repeat(DEFAULT_MAX_TOPIC_LENGTH / 2 + 1);
        assert!(refusal(&long).contains("bytes long, more than the limit of 1024 (max_topic_length)"));
        let deep = "/a".repeat(DEFAULT_MAX_TOPIC_SEGMENTS + 1);
        assert!(refusal(&deep).contains("more than the limit of 32 (max_topic_segments)"));
        assert!(TopicPattern::parse_within(&"/a".repeat(DEFAULT_MAX_TOPIC_SEGMENTS), limits).is_ok());
        // The program's own patterns have no limits.
        assert!(TopicPattern::parse(&long).is_ok());
    }

    /// Every topic of up to five segments among `a`, `b`, `x` and the empty one.
    fn small_topics() -> Vec<String> {
        let mut topics = vec![String::new()];
        let mut all = Vec::new();
        for _ in 0..5 {
            topics = topics.iter().flat_map(|t| ["a", "b", "x", ""].map(|s| format!("{t}/{s}"))).collect();
            all.extend(topics.iter().cloned());
        }
        all
    }

    fn random_pattern(rng: &mut u64, with_rest: bool) -> String {
        let mut next = || {
            *rng ^= *rng << 13;
            *rng ^= *rng >> 7;
            *rng ^= *rng << 17;
            *rng
        };
        let depth = 1 + next() % 4;
        let mut pattern = String::new();
        for i in 0..depth {
            let last = i + 1 == depth;
            let segment = match next() % if with_rest && last { 5 } else { 4 } {
                0 => "a",
                1 => "b",
                2 => "*",
                3 => "{p}",
                _ => "{*rest}",
            };
            pattern = format!("{pattern}/{segment}");
        }
        pattern
    }

    /// `overlaps` against a brute-force search for a topic both match.
    #[test]
    fn overlap_is_never_wrong_to_say_no_and_exact_without_rest_in_the_route() {
        let topics = small_topics();
        let mut rng = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..3000 {
            let pattern = random_pattern(&mut rng, true);
            let route_has_rest = rng % 2 == 0;
            let route = random_pattern(&mut rng, route_has_rest);
            let (p, r) = (TopicPattern::parse(&pattern).unwrap(), TopicPattern::parse(&route).unwrap());
            let witness = topics.iter().find(|t| p.matches(t) && r.matches(t));
            if let Some(topic) = witness {
                assert!(p.overlaps(&r), "{pattern} and {route} both match {topic}");
            } else if !route.contains("{*") {
                assert!(!p.overlaps(&r), "{pattern} and {route} share no topic");
            }
        }
    }

    #[test]
    fn bad_patterns_and_topics() {
        for bad in ["chat", "/chat/{*rest}/x", "/chat/ab*", "/chat/{room"] {
            assert!(TopicPattern::parse(bad).is_err(), "{bad}");
        }
        let limits = TopicLimits::DEFAULT;
        assert!(validate_topic("/chat/lobby", limits).is_ok());
        assert!(matches!(validate_topic("/chat/*", limits), Err(PatternError::Invalid(_))));
        assert!(validate_topic("/chat/{room}", limits).is_err());
    }
}
