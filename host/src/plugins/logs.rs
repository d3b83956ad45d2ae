//! The plugins' log lines, kept for the console: a bounded ring per version
//! label (`slot[@tenant]#version`), the latest [`LINES_PER_VERSION`] lines
//! of at most [`VERSIONS`] versions (the least recently written forgotten
//! first). Lines are also in the node's log as before; these are a copy.
//!
//! Never a secret: before a line is kept, every value of the version's
//! configuration (which may hold keys) of 4 characters or more, and
//! anything shaped like a JWT or a `Bearer` credential, is replaced by
//! `[redacted]`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, LazyLock, Mutex};

use serde::Serialize;

/// Lines kept per version.
pub const LINES_PER_VERSION: usize = 200;
/// Versions whose lines are kept.
pub const VERSIONS: usize = 256;

/// One line a plugin wrote.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = PluginLogLine)]
pub struct LogLine {
    /// Its number in this node's ring (ask `after` it for the next ones).
    pub seq: u64,
    /// When, ms since the epoch.
    pub at: i64,
    /// `debug`, `info`, `warn` or `error`.
    pub level: &'static str,
    /// The line (at most 1,024 bytes), secrets redacted.
    pub message: String,
}

#[derive(Default)]
struct Ring {
    lines: VecDeque<LogLine>,
    secrets: Vec<Arc<str>>,
    touched: u64,
}

#[derive(Default)]
struct Rings {
    by_label: HashMap<Arc<str>, Ring>,
    seq: u64,
}

static RINGS: LazyLock<Mutex<Rings>> = LazyLock::new(Mutex::default);

/// Registers the values a version's lines must never show (its
/// configuration's values).
pub fn secrets(label: &str, values: impl IntoIterator<Item = String>) {
    let values: Vec<Arc<str>> = values
        .into_iter()
        .filter(|v| v.chars().count() >= 4)
        .map(Arc::from)
        .collect();
    let mut r = RINGS.lock().unwrap_or_else(|p| p.into_inner());
    let seq = r.seq;
    ring(&mut r.by_label, label, seq).secrets = values;
}

fn ring<'a>(by_label: &'a mut HashMap<Arc<str>, Ring>, label: &str, seq: u64) -> &'a mut Ring {
    if !by_label.contains_key(label) && by_label.len() >= VERSIONS {
        if let Some(oldest) = by_label
            .iter()
            .min_by_key(|(_, r)| r.touched)
            .map(|(k, _)| k.clone())
        {
            by_label.remove(&oldest);
        }
    }
    let r = by_label.entry(Arc::from(label)).or_default();
    r.touched = seq;
    r
}

/// Keeps one line of the version labelled `label`.
pub fn push(label: &str, level: &'static str, message: &str) {
    let mut r = RINGS.lock().unwrap_or_else(|p| p.into_inner());
    r.seq += 1;
    let seq = r.seq;
    let ring = ring(&mut r.by_label, label, seq);
    let message = redact(message, &ring.secrets);
    if ring.lines.len() == LINES_PER_VERSION {
        ring.lines.pop_front();
    }
    ring.lines.push_back(LogLine {
        seq,
        at: crate::event::now_ms(),
        level,
        message,
    });
}

/// The kept lines of `label` after `after`, oldest first.
pub fn lines(label: &str, after: u64) -> Vec<LogLine> {
    let r = RINGS.lock().unwrap_or_else(|p| p.into_inner());
    r.by_label
        .get(label)
        .map(|ring| {
            ring.lines
                .iter()
                .filter(|l| l.seq > after)
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

const REDACTED: &str = "[redacted]";

/// `message` with `secrets`, JWTs and `Bearer` credentials replaced.
fn redact(message: &str, secrets: &[Arc<str>]) -> String {
    let mut out = message.to_string();
    for s in secrets {
        if out.contains(&**s) {
            out = out.replace(&**s, REDACTED);
        }
    }
    let words: Vec<&str> = out.split(' ').collect();
    let mut kept = Vec::with_capacity(words.len());
    let mut bearer = false;
    for w in words {
        let jwt = {
            let parts: Vec<&str> = w.split('.').collect();
            parts.len() == 3
                && parts[0].starts_with("eyJ")
                && parts.iter().all(|p| {
                    p.len() >= 2
                        && p.chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                })
        } || w.contains("eyJ") && w.len() > 40;
        if (bearer && !w.is_empty()) || jwt {
            kept.push(REDACTED);
        } else {
            kept.push(w);
        }
        bearer = w.eq_ignore_ascii_case("bearer");
    }
    kept.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_tokens_and_credentials_are_redacted() {
        let secrets = [Arc::from("s3cret-key")];
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1MSJ9.c2lnbmF0dXJl";
        let got = redact(
            &format!("key=s3cret-key token {jwt} auth: Bearer abc123 ok"),
            &secrets,
        );
        assert_eq!(
            got,
            "key=[redacted] token [redacted] auth: Bearer [redacted] ok"
        );
        assert_eq!(redact("nothing to hide", &secrets), "nothing to hide");
    }

    #[test]
    fn a_ring_keeps_the_latest_lines_after_a_point() {
        let label = "event-filter@logs-test#0123456789ab";
        secrets(label, ["hunter22".to_string(), "ab".to_string()]);
        for i in 0..(LINES_PER_VERSION + 5) {
            push(label, "info", &format!("line {i} hunter22 ab"));
        }
        let all = lines(label, 0);
        assert_eq!(all.len(), LINES_PER_VERSION);
        assert_eq!(all[0].message, "line 5 [redacted] ab");
        let last = all[all.len() - 2].seq;
        let rest = lines(label, last);
        assert_eq!(rest.len(), 1);
        assert!(rest[0]
            .message
            .starts_with(&format!("line {}", LINES_PER_VERSION + 4)));
        assert!(lines("event-filter@nobody#000000000000", 0).is_empty());
    }
}
