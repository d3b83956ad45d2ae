//! Topic patterns of publisher tokens: `status:*` (a prefix ending in `*`)
//! or a whole topic (`service:status`).

/// Most patterns one token may carry.
pub const MAX_PATTERNS: usize = 32;

/// Checks a token's patterns; the message names the first bad one.
pub fn validate(patterns: &[String]) -> Result<(), String> {
    if patterns.is_empty() {
        return Err("at least one topic pattern is required".into());
    }
    if patterns.len() > MAX_PATTERNS {
        return Err(format!("at most {MAX_PATTERNS} topic patterns"));
    }
    for p in patterns {
        let ok = match p.strip_suffix('*') {
            // A prefix: what a topic may start with (no wildcard elsewhere).
            Some(prefix) => {
                prefix.len() <= 160
                    && prefix.chars().all(|c| {
                        c.is_ascii_alphanumeric() || matches!(c, ':' | '-' | '_' | '.' | '@')
                    })
            }
            None => crate::event::classify_topic(p).is_ok(),
        };
        if !ok {
            let shown: String = p.chars().take(80).collect();
            return Err(format!(
                "topic pattern {shown:?} must be a topic (kind:id) or a prefix ending in `*` (status:*)"
            ));
        }
    }
    Ok(())
}

/// True when `topic` matches one of `patterns`.
pub fn allows(patterns: &[String], topic: &str) -> bool {
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => topic.starts_with(prefix),
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
        for bad in ["sta*tus:*", "no spaces:*", "Feed:1", ""] {
            assert!(validate(&[bad.to_string()]).is_err(), "{bad:?}");
        }
        assert!(validate(&[]).is_err());
    }
}
