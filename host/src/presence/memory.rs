//! `MemoryPresence`: presence counted in this process (embedded mode).
//! Every transition is decided under one lock, so each is decided once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::{
    Change, Counts, Decision, Entry, Held, Left, Membership, PresenceStore, Swept, Unavailable,
};

/// Counts per (tenant, topic) in this process.
#[derive(Default)]
pub struct MemoryPresence(Mutex<State>);

#[derive(Default)]
struct State {
    topics: HashMap<(String, String), Topic>,
    /// Members whose last stream closed: (tenant, topic, user) -> due.
    pending: HashMap<(String, String, String), Instant>,
}

#[derive(Default)]
struct Topic {
    streams: u64,
    /// Streams per user.
    users: HashMap<String, u32>,
    /// The counts last appended (none yet: zero).
    last: Counts,
    /// When the last decision was made.
    decided: Option<Instant>,
    /// When the member set was last checked.
    checked: Option<Instant>,
    /// Members announced (members topics only), with their data.
    members: HashMap<String, String>,
    /// The cap was passed: no member events until the topic empties.
    truncated: bool,
    /// The last transition's `v`.
    v: u64,
}

impl Topic {
    /// The next `v`: microseconds since the epoch, and above the last, so
    /// it keeps rising across restarts.
    fn next_v(&mut self) -> u64 {
        self.v = micros().max(self.v + 1);
        self.v
    }

    fn idle(&self) -> bool {
        self.streams == 0 && self.users.is_empty() && self.members.is_empty() && !self.truncated
    }
}

/// Microseconds since the epoch.
fn micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn key(tenant: &str, topic: &str) -> (String, String) {
    (tenant.to_string(), topic.to_string())
}

#[async_trait::async_trait]
impl PresenceStore for MemoryPresence {
    async fn join(
        &self,
        e: Entry<'_>,
        member: Option<Membership<'_>>,
    ) -> Result<Option<Change>, Unavailable> {
        let mut st = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let State { topics, pending } = &mut *st;
        let t = topics.entry(key(e.tenant, e.topic)).or_default();
        t.streams += 1;
        let Some(user) = e.user else {
            return Ok(None);
        };
        let n = t.users.entry(user.to_string()).or_default();
        *n += 1;
        let (true, Some(member)) = (*n == 1, member) else {
            return Ok(None);
        };
        let back = pending
            .remove(&(e.tenant.to_string(), e.topic.to_string(), user.to_string()))
            .is_some();
        if back || t.truncated || t.members.contains_key(user) {
            return Ok(None);
        }
        if t.members.len() >= member.cap {
            t.members.clear();
            t.truncated = true;
            return Ok(Some(Change::Truncated(t.next_v())));
        }
        t.members
            .insert(user.to_string(), member.claims.to_string());
        Ok(Some(Change::Joined(t.next_v())))
    }

    async fn leave(&self, e: Entry<'_>, linger: Option<Duration>) {
        let mut st = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let State { topics, pending } = &mut *st;
        let Some(t) = topics.get_mut(&key(e.tenant, e.topic)) else {
            return;
        };
        t.streams = t.streams.saturating_sub(1);
        let Some(user) = e.user else {
            return;
        };
        let Some(n) = t.users.get_mut(user) else {
            return;
        };
        *n -= 1;
        if *n > 0 {
            return;
        }
        t.users.remove(user);
        if let (Some(linger), true) = (linger, t.members.contains_key(user)) {
            pending.insert(
                (e.tenant.to_string(), e.topic.to_string(), user.to_string()),
                Instant::now() + linger,
            );
        }
        if t.users.is_empty() {
            t.truncated = false;
        }
    }

    async fn sweep(&self, _linger: Duration) -> Swept {
        let mut st = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let State { topics, pending } = &mut *st;
        let now = Instant::now();
        let due: Vec<(String, String, String)> = pending
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        let mut out = Vec::new();
        for k in due {
            pending.remove(&k);
            let (tenant, topic, user) = k;
            let Some(t) = topics.get_mut(&(tenant.clone(), topic.clone())) else {
                continue;
            };
            if t.users.contains_key(&user) || t.members.remove(&user).is_none() {
                continue;
            }
            let v = t.next_v();
            out.push(Left {
                tenant,
                topic,
                user,
                v,
            });
        }
        // Every stream of this process is live: nothing else to find.
        Swept {
            leaves: out,
            topics: Vec::new(),
        }
    }

    async fn decide(
        &self,
        tenant: &str,
        topic: &str,
        interval: Duration,
        _linger: Duration,
    ) -> Decision {
        let mut st = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let k = key(tenant, topic);
        let Some(t) = st.topics.get_mut(&k) else {
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
            if counts == Counts::default() && t.idle() {
                // Empty and said so: nothing left to remember.
                st.topics.remove(&k);
            }
            return Decision::Unchanged;
        }
        let was = t.last;
        t.last = counts;
        Decision::Changed { counts, was }
    }

    async fn forget(&self, tenant: &str, topic: &str) {
        let mut st = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = st.topics.get_mut(&key(tenant, topic)) {
            // Anything but the current counts, so the next decision appends.
            t.last = Counts {
                streams: u64::MAX,
                users: u64::MAX,
            };
        }
    }

    async fn held(
        &self,
        tenant: &str,
        topic: &str,
        period: Duration,
    ) -> Result<Option<Held>, Unavailable> {
        let mut st = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let Some(t) = st.topics.get_mut(&key(tenant, topic)) else {
            // Nothing held: no member, and no transition to be above but
            // those of before (the clock's microseconds).
            return Ok(Some(Held {
                members: Vec::new(),
                truncated: false,
                v: micros(),
            }));
        };
        let now = Instant::now();
        if t.checked.is_some_and(|c| now.duration_since(c) < period) {
            return Ok(None);
        }
        t.checked = Some(now);
        let mut members: Vec<(String, String)> = t
            .members
            .iter()
            .map(|(u, c)| (u.clone(), c.clone()))
            .collect();
        members.sort();
        Ok(Some(Held {
            members,
            truncated: t.truncated,
            v: t.next_v(),
        }))
    }
}
