//! Topic patterns of publisher tokens: `status:*` (a prefix ending in `*`)
//! or a whole topic (`service:status`).

/// Most patterns one token may carry.
const MAX_PATTERNS: usize = 32;

/// Why a publisher token's patterns are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// No pattern at all.
    #[error("at least one topic pattern is required")]
    Empty,
    /// More than `MAX_PATTERNS`.
    #[error("at most {MAX_PATTERNS} topic patterns")]
    TooMany,
    /// A pattern that is neither a topic nor a prefix (shown cut to 80
    /// characters).
    #[error("topic pattern {0:?} must be a topic (kind:id) or a prefix ending in `*` (status:*)")]
    Invalid(String),
}

/// Checks a token's patterns; the error names the first bad one.
pub fn validate(patterns: &[String]) -> Result<(), PatternError> {
    if patterns.is_empty() {
        return Err(PatternError::Empty);
    }
    if patterns.len() > MAX_PATTERNS {
        return Err(PatternError::TooMany);
    }
    for p in patterns {
        let ok = match p.strip_suffix('*') {
            // A prefix: what a topic may start with (no wildcard elsewhere).
            // A bare `*` would reach every topic, users' private ones
            // included: a pattern names at least the start of a topic.
            Some("") => false,
            Some(prefix) => {
                prefix.len() <= 160
                    && prefix.chars().all(|c| {
                        c.is_ascii_alphanumeric() || matches!(c, ':' | '-' | '_' | '.' | '@')
                    })
            }
            None => crate::event::classify_topic(p).is_ok(),
        };
        if !ok {
            return Err(PatternError::Invalid(p.chars().take(80).collect()));
        }
    }
    Ok(())
}

/// True when `topic` matches one of `patterns`. A user's private topic
/// (`user:{id}`) is matched only by a pattern that itself starts with
/// `user:`: a prefix such as `u*` (or a bare `*` in a token minted before
/// those were refused) does not reach it.
pub fn allows(patterns: &[String], topic: &str) -> bool {
    let private = topic.starts_with("user:");
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => topic.starts_with(prefix) && (!private || prefix.starts_with("user:")),
        None => p == topic,
    })
}

/// Splits `a,b` into patterns (spaces trimmed, empty parts dropped).
pub fn split(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_and_topics() {
        let p = split("status:*, feed:1 ,");
        assert_eq!(p, vec!["status:*", "feed:1"]);
        assert!(validate(&p).is_ok());
        assert!(allows(&p, "status:db"));
        assert!(allows(&p, "feed:1"));
        assert!(!allows(&p, "feed:10"));
        assert!(!allows(&p, "user:alice"));
        assert!(!allows(&p, "statusx"));
        assert!(!allows(&["*".to_string()], "user:alice"));
        assert!(!allows(&["u*".to_string()], "user:alice"));
        assert!(allows(&["*".to_string()], "feed:1"));
        assert!(allows(&["user:*".to_string()], "user:alice"));
        for bad in ["sta*tus:*", "no spaces:*", "Feed:1", "", "*"] {
            assert!(validate(&[bad.to_string()]).is_err(), "{bad:?}");
        }
        assert!(validate(&[]).is_err());
    }
}
