//! Presence: how many streams and users are on a topic, as events in the
//! topic's own log.
//!
//! For a topic `T` with open streams (any topic but `user:` ones and the
//! derived topics themselves), the node appends a retained `occupancy`
//! event on `T~occupancy` (`{"streams":N,"users":M}`; anonymous streams
//! count as streams, not users) when the counts changed since the last one
//! appended, at most once per interval per topic. It takes the tenant's
//! next id like any event, so a stream of `T~occupancy` gets the counts as
//! its `snapshot` and exactly the changes on resume.
//!
//! The counting is a [`PresenceStore`]: in this process (`MemoryPresence`,
//! embedded mode) or in Redis (cluster mode, in `backend::cluster`), where
//! the counts are cluster-wide, a dead node's streams drop out when their
//! leases expire, and one node per topic and interval decides whether to
//! append. The cost stays off delivery: presence work happens when a
//! stream opens or closes and on the interval, never per event.

pub mod memory;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::bus::publisher::Publisher;
use crate::event::{Derived, NewEvent};

pub use memory::MemoryPresence;

/// Presence settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// At most one `occupancy` event per topic per interval.
    pub interval: Duration,
}

/// A topic's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Counts {
    /// Open streams on the topic.
    pub streams: u64,
    /// Distinct signed-in users among them.
    pub users: u64,
}

/// What a store decided for a topic at one interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Another decision (this node's or another's) was made within the
    /// interval: ask again later.
    Lost,
    /// Decided: the counts are the ones last appended.
    Unchanged,
    /// Decided: append these counts (already recorded as the last ones).
    Changed(Counts),
}

/// One stream's place on one topic.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    /// This node's connection id.
    pub conn: u64,
    /// Tenant slug.
    pub tenant: &'a str,
    /// The topic (a base topic, never a derived one).
    pub topic: &'a str,
    /// The user, for a client token; `None` counts as a stream only.
    pub user: Option<&'a str>,
}

/// The presence store could not be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("presence counts are unavailable")]
pub struct Unavailable;

/// Where streams on topics are counted.
#[async_trait::async_trait]
pub trait PresenceStore: Send + Sync + 'static {
    /// A stream opened on a topic.
    async fn join(&self, e: Entry<'_>) -> Result<(), Unavailable>;
    /// The stream closed.
    async fn leave(&self, e: Entry<'_>);
    /// Decides, at most once per `interval` per topic across every node,
    /// whether the topic's counts changed since the last ones appended.
    async fn decide(&self, tenant: &str, topic: &str, interval: Duration) -> Decision;
    /// The counts decided were not appended: let the next decision append
    /// whatever the counts are then.
    async fn forget(&self, tenant: &str, topic: &str);
}

/// A topic, by tenant.
type Key = (String, String);

/// This node's presence: joins and leaves of its streams, and the interval
/// that appends occupancy.
#[derive(Clone)]
pub struct Presence {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn PresenceStore>,
    publisher: Publisher,
    settings: Settings,
    /// Streams of this node per topic.
    local: Mutex<HashMap<Key, usize>>,
    /// Topics whose counts may have changed since their last decision.
    dirty: Mutex<HashSet<Key>>,
}

/// How often every topic with streams here is decided again, whether or
/// not it changed here: counts change elsewhere too (a dead node's leases
/// expire).
const SWEEP: Duration = Duration::from_secs(10);
/// Decisions run at once per tick.
const PARALLEL: usize = 16;

impl Presence {
    /// Presence over `store`, appending through `publisher` until `stop`.
    pub fn start(
        settings: Settings,
        store: Arc<dyn PresenceStore>,
        publisher: Publisher,
        stop: CancellationToken,
    ) -> Presence {
        let p = Presence {
            inner: Arc::new(Inner {
                store,
                publisher,
                settings,
                local: Mutex::default(),
                dirty: Mutex::default(),
            }),
        };
        tokio::spawn(p.clone().run(stop));
        p
    }

    /// Counts a stream of `tenant` on `topics` (base topics only: the
    /// caller leaves out `user:` and derived topics) until the returned
    /// guard is dropped.
    pub async fn join(&self, tenant: &str, topics: Vec<String>, user: Option<&str>) -> Guard {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let conn = NEXT.fetch_add(1, Ordering::Relaxed);
        let joins = topics.iter().map(|topic| {
            self.inner.store.join(Entry {
                conn,
                tenant,
                topic,
                user,
            })
        });
        let results = futures_util::future::join_all(joins).await;
        if results.iter().any(Result::is_err) {
            tracing::warn!(tenant, "cannot count a stream's presence");
        }
        {
            let mut local = self.inner.local.lock().unwrap_or_else(|p| p.into_inner());
            for t in &topics {
                *local.entry((tenant.to_string(), t.clone())).or_default() += 1;
            }
        }
        self.mark(tenant, &topics);
        Guard {
            presence: self.clone(),
            conn,
            tenant: tenant.to_string(),
            topics,
            user: user.map(str::to_string),
        }
    }

    fn mark(&self, tenant: &str, topics: &[String]) {
        let mut dirty = self.inner.dirty.lock().unwrap_or_else(|p| p.into_inner());
        for t in topics {
            dirty.insert((tenant.to_string(), t.clone()));
        }
    }

    async fn run(self, stop: CancellationToken) {
        let period = (self.inner.settings.interval / 4).max(Duration::from_millis(10));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sweep = tokio::time::interval(SWEEP);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = sweep.tick() => {
                    let local: Vec<Key> = self
                        .inner
                        .local
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .keys()
                        .cloned()
                        .collect();
                    self.inner
                        .dirty
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .extend(local);
                }
                _ = tick.tick() => self.decide_dirty().await,
            }
        }
    }

    /// Decides every dirty topic; those another decision got first stay
    /// dirty.
    async fn decide_dirty(&self) {
        let dirty: Vec<Key> =
            std::mem::take(&mut *self.inner.dirty.lock().unwrap_or_else(|p| p.into_inner()))
                .into_iter()
                .collect();
        if dirty.is_empty() {
            return;
        }
        let again: Vec<Key> = futures_util::stream::iter(dirty)
            .map(|key| async move {
                let keep = self.decide(&key.0, &key.1).await;
                keep.then_some(key)
            })
            .buffer_unordered(PARALLEL)
            .filter_map(|k| async move { k })
            .collect()
            .await;
        if !again.is_empty() {
            self.inner
                .dirty
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(again);
        }
    }

    /// One topic's decision; true when it must be asked again.
    async fn decide(&self, tenant: &str, topic: &str) -> bool {
        let inner = &self.inner;
        match inner
            .store
            .decide(tenant, topic, inner.settings.interval)
            .await
        {
            Decision::Lost => true,
            Decision::Unchanged => false,
            Decision::Changed(counts) => {
                let event = NewEvent {
                    tenant: tenant.to_string(),
                    topic: Derived::Occupancy.of(topic),
                    kind: "occupancy".into(),
                    data: serde_json::to_string(&counts).expect("two numbers serialize"),
                    retain: true,
                };
                match inner.publisher.publish(vec![event]).await {
                    Ok(_) => false,
                    Err(e) => {
                        tracing::warn!(tenant, error = %e, "cannot append a topic's occupancy");
                        inner.store.forget(tenant, topic).await;
                        true
                    }
                }
            }
        }
    }
}

/// Held while a stream is open; dropping it counts the stream out.
pub struct Guard {
    presence: Presence,
    conn: u64,
    tenant: String,
    topics: Vec<String>,
    user: Option<String>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let presence = self.presence.clone();
        let conn = self.conn;
        let tenant = std::mem::take(&mut self.tenant);
        let topics = std::mem::take(&mut self.topics);
        let user = self.user.take();
        {
            let mut local = presence
                .inner
                .local
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            for t in &topics {
                let key = (tenant.clone(), t.clone());
                if let Some(n) = local.get_mut(&key) {
                    *n -= 1;
                    if *n == 0 {
                        local.remove(&key);
                    }
                }
            }
        }
        // The leave is recorded before the topic is marked, so the next
        // decision counts it.
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            let leaves = topics.iter().map(|topic| {
                presence.inner.store.leave(Entry {
                    conn,
                    tenant: &tenant,
                    topic,
                    user: user.as_deref(),
                })
            });
            futures_util::future::join_all(leaves).await;
            presence.mark(&tenant, &topics);
        });
    }
}
