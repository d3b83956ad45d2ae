//! `MemoryPresence`: presence counted in this process (embedded mode).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::{Counts, Decision, Entry, PresenceStore, Unavailable};

/// Counts per (tenant, topic) in this process.
#[derive(Default)]
pub struct MemoryPresence(Mutex<HashMap<(String, String), Topic>>);

#[derive(Default)]
struct Topic {
    streams: u64,
    /// Streams per user.
    users: HashMap<String, u32>,
    /// The counts last appended (none yet: zero).
    last: Counts,
    /// When the last decision was made.
    decided: Option<Instant>,
}

impl MemoryPresence {
    fn with<R>(&self, tenant: &str, topic: &str, f: impl FnOnce(&mut Topic) -> R) -> R {
        let mut topics = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let key = (tenant.to_string(), topic.to_string());
        f(topics.entry(key).or_default())
    }
}

#[async_trait::async_trait]
impl PresenceStore for MemoryPresence {
    async fn join(&self, e: Entry<'_>) -> Result<(), Unavailable> {
        self.with(e.tenant, e.topic, |t| {
            t.streams += 1;
            if let Some(u) = e.user {
                *t.users.entry(u.to_string()).or_default() += 1;
            }
        });
        Ok(())
    }

    async fn leave(&self, e: Entry<'_>) {
        self.with(e.tenant, e.topic, |t| {
            t.streams = t.streams.saturating_sub(1);
            if let Some(u) = e.user {
                if let Some(n) = t.users.get_mut(u) {
                    *n -= 1;
                    if *n == 0 {
                        t.users.remove(u);
                    }
                }
            }
        });
    }

    async fn decide(&self, tenant: &str, topic: &str, interval: Duration) -> Decision {
        let mut topics = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let key = (tenant.to_string(), topic.to_string());
        let Some(t) = topics.get_mut(&key) else {
            return Decision::Unchanged;
        };
        let now = Instant::now();
        if t.decided.is_some_and(|d| now.duration_since(d) < interval) {
            return Decision::Lost;
        }
        t.decided = Some(now);
        let counts = Counts {
            streams: t.streams,
            users: t.users.len() as u64,
        };
        if counts == t.last {
            if counts == Counts::default() {
                // Empty and said so: nothing left to remember.
                topics.remove(&key);
            }
            return Decision::Unchanged;
        }
        t.last = counts;
        Decision::Changed(counts)
    }

    async fn forget(&self, tenant: &str, topic: &str) {
        self.with(tenant, topic, |t| {
            // Anything but the current counts, so the next decision appends.
            t.last = Counts {
                streams: u64::MAX,
                users: u64::MAX,
            };
        });
    }
}
