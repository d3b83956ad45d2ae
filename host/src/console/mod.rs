//! What the operator's API sees of running nodes: each user's open streams
//! (with the node holding each and its age) and the way to end them, and
//! each node's live figures.
//!
//! A node keeps its own signed-in streams in [`LocalStreams`] (a session
//! holds its place, [`Listed`], until it ends; the place holds the
//! [`Kicker`] that ends it). A [`Directory`], the mode's service, makes
//! that cluster-wide: [`MemoryDirectory`] is this process (embedded mode);
//! cluster mode's (`backend/cluster/console.rs`) mirrors the places into
//! Redis, carries a disconnect to every node, and keeps each node's figures
//! there with an expiry, so one request shows every live node. The figures
//! are sampled here (`stats.rs`), every [`STATS_INTERVAL`].
//!
//! Nothing here runs per event: a stream's place is taken on its open and
//! given back on its close, and the figures are read from the metrics'
//! atomics once per interval.

pub mod stats;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::bus::hub::Kicker;

pub use stats::NodeStats;

/// How often a node samples its figures (and, in cluster mode, publishes
/// them).
pub const STATS_INTERVAL: Duration = Duration::from_secs(2);

/// How long a node's published figures stand for it: a node not heard of
/// for this long is gone from the listing, and its streams with it.
pub const STATS_TTL: Duration = Duration::from_secs(10);

/// One open stream of a signed-in user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StreamInfo {
    /// The node holding it.
    pub node: String,
    /// Its id on that node.
    pub id: u64,
    /// The tenant.
    #[schema(pattern = "^[a-z0-9][a-z0-9-]*$")]
    pub tenant: String,
    /// The user.
    #[schema(pattern = "^[A-Za-z0-9._@-]+$")]
    pub user: String,
    /// The topics it reads.
    pub topics: Vec<String>,
    /// When it opened: milliseconds since the Unix epoch.
    pub opened_at: i64,
}

/// The directory could not be reached (Redis down).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the stream directory is unavailable")]
pub struct Unavailable;

/// Where streams and figures are known across the deployment.
#[async_trait::async_trait]
pub trait Directory: Send + Sync + 'static {
    /// A stream opened on this node (never blocks: queued if it must go
    /// elsewhere).
    fn opened(&self, s: &StreamInfo);
    /// It closed.
    fn closed(&self, s: &StreamInfo);
    /// A user's open streams on every live node.
    async fn user_streams(&self, tenant: &str, user: &str) -> Result<Vec<StreamInfo>, Unavailable>;
    /// Ends a user's streams on every node (this node's at once).
    async fn disconnect(&self, tenant: &str, user: &str) -> Result<(), Unavailable>;
    /// Keeps this node's latest figures (for [`STATS_TTL`]).
    async fn publish_stats(&self, stats: &NodeStats);
    /// Every live node's latest figures.
    async fn stats(&self) -> Result<Vec<NodeStats>, Unavailable>;
}

/// A stream's entry here: what is shown, and what ends it.
struct Entry {
    info: Arc<StreamInfo>,
    kicker: Kicker,
}

/// This node's open streams of signed-in users, by tenant and user.
pub struct LocalStreams {
    node: String,
    by_user: Mutex<HashMap<(String, String), Vec<Entry>>>,
    next: std::sync::atomic::AtomicU64,
}

impl LocalStreams {
    /// An empty list for node `node`.
    pub fn new(node: &str) -> Arc<LocalStreams> {
        Arc::new(LocalStreams {
            node: node.to_string(),
            by_user: Mutex::new(HashMap::new()),
            next: std::sync::atomic::AtomicU64::new(1),
        })
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.node
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Vec<Entry>>> {
        self.by_user.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn add(&self, tenant: &str, user: &str, topics: &[String], kicker: Kicker) -> Arc<StreamInfo> {
        let info = Arc::new(StreamInfo {
            node: self.node.clone(),
            id: self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            tenant: tenant.to_string(),
            user: user.to_string(),
            topics: topics.to_vec(),
            opened_at: crate::event::now_ms(),
        });
        self.lock()
            .entry((info.tenant.clone(), info.user.clone()))
            .or_default()
            .push(Entry {
                info: info.clone(),
                kicker,
            });
        info
    }

    fn remove(&self, info: &StreamInfo) {
        let mut map = self.lock();
        let key = (info.tenant.clone(), info.user.clone());
        if let Some(list) = map.get_mut(&key) {
            list.retain(|e| e.info.id != info.id);
            if list.is_empty() {
                map.remove(&key);
            }
        }
    }

    /// A user's streams on this node.
    pub fn of(&self, tenant: &str, user: &str) -> Vec<StreamInfo> {
        self.lock()
            .get(&(tenant.to_string(), user.to_string()))
            .map(|l| l.iter().map(|e| StreamInfo::clone(&e.info)).collect())
            .unwrap_or_default()
    }

    /// Ends a user's streams on this node; how many were asked to end.
    pub fn kick(&self, tenant: &str, user: &str) -> usize {
        let map = self.lock();
        let Some(list) = map.get(&(tenant.to_string(), user.to_string())) else {
            return 0;
        };
        for e in list {
            e.kicker.kick();
        }
        list.len()
    }
}

/// The console's view: this node's streams and the deployment's directory.
#[derive(Clone)]
pub struct Console {
    /// This node's streams.
    pub local: Arc<LocalStreams>,
    /// Every node's.
    pub directory: Arc<dyn Directory>,
}

impl Console {
    /// Lists a signed-in user's stream until the returned place is dropped.
    pub fn list(&self, tenant: &str, user: &str, topics: &[String], kicker: Kicker) -> Listed {
        let info = self.local.add(tenant, user, topics, kicker);
        self.directory.opened(&info);
        Listed {
            console: self.clone(),
            info,
        }
    }
}

/// A stream's place in the listing, held by its session (its entry is
/// shared with the node's list: one copy per stream).
pub struct Listed {
    console: Console,
    info: Arc<StreamInfo>,
}

impl Drop for Listed {
    fn drop(&mut self) {
        self.console.local.remove(&self.info);
        self.console.directory.closed(&self.info);
    }
}

/// The directory of one process (embedded mode): its own streams and
/// figures.
pub struct MemoryDirectory {
    local: Arc<LocalStreams>,
    stats: Mutex<Option<NodeStats>>,
}

impl MemoryDirectory {
    /// Over this node's streams.
    pub fn new(local: Arc<LocalStreams>) -> MemoryDirectory {
        MemoryDirectory {
            local,
            stats: Mutex::new(None),
        }
    }
}

#[async_trait::async_trait]
impl Directory for MemoryDirectory {
    fn opened(&self, _: &StreamInfo) {}

    fn closed(&self, _: &StreamInfo) {}

    async fn user_streams(&self, tenant: &str, user: &str) -> Result<Vec<StreamInfo>, Unavailable> {
        Ok(self.local.of(tenant, user))
    }

    async fn disconnect(&self, tenant: &str, user: &str) -> Result<(), Unavailable> {
        self.local.kick(tenant, user);
        Ok(())
    }

    async fn publish_stats(&self, stats: &NodeStats) {
        *self.stats.lock().unwrap_or_else(|p| p.into_inner()) = Some(stats.clone());
    }

    async fn stats(&self) -> Result<Vec<NodeStats>, Unavailable> {
        Ok(self
            .stats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .into_iter()
            .collect())
    }
}
