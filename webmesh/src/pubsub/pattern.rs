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

/// A parsed subscription pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TopicPattern {
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// Matches itself.
    Literal(String),
    /// `*` or `{name}`: any one non-empty segment.
    One,
    /// `{*name}`, last: one or more segments.
    Rest,
}

impl TopicPattern {
    pub(crate) fn parse(pattern: &str) -> Result<Self, String> {
        let Some(rest) = pattern.strip_prefix('/') else {
            return Err(format!("pattern `{pattern}` must start with `/`"));
        };
        let parts: Vec<&str> = rest.split('/').collect();
        let mut segments = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let segment = match *part {
                "*" => Segment::One,
                p if p.starts_with("{*") && p.ends_with('}') => {
                    if i + 1 != parts.len() {
                        return Err(format!("`{p}` must end the pattern `{pattern}`"));
                    }
                    Segment::Rest
                }
                p if p.starts_with('{') && p.ends_with('}') && p.len() > 2 => Segment::One,
                p if p.contains(['{', '}', '*']) => {
                    return Err(format!(
                        "`{p}` in `{pattern}`: wildcards are whole segments, `*`, `{{name}}` or `{{*name}}`"
                    ))
                }
                p => Segment::Literal(p.to_owned()),
            };
            segments.push(segment);
        }
        Ok(Self { segments })
    }

    /// Whether the pattern has no wildcard, i.e. names one topic.
    pub(crate) fn is_exact(&self) -> bool {
        self.segments.iter().all(|s| matches!(s, Segment::Literal(_)))
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
                    if parts.next() != Some(literal.as_str()) {
                        return false;
                    }
                }
            }
        }
        parts.next().is_none()
    }
}

/// Checks a topic to publish to: a path without wildcards.
pub(crate) fn validate_topic(topic: &str) -> Result<(), String> {
    let pattern = TopicPattern::parse(topic)?;
    if pattern.is_exact() {
        Ok(())
    } else {
        Err(format!("cannot publish to `{topic}`: a topic has no wildcards"))
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
    fn bad_patterns_and_topics() {
        for bad in ["chat", "/chat/{*rest}/x", "/chat/ab*", "/chat/{room"] {
            assert!(TopicPattern::parse(bad).is_err(), "{bad}");
        }
        assert!(validate_topic("/chat/lobby").is_ok());
        assert!(validate_topic("/chat/*").is_err());
        assert!(validate_topic("/chat/{room}").is_err());
    }
}
