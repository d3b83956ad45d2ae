//! A node's live figures: sampled from its metrics' atomics every
//! [`super::STATS_INTERVAL`], turned into rates over the interval, and
//! handed to the directory (which, in cluster mode, publishes them for the
//! other nodes to read).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use super::{Directory, STATS_INTERVAL};
use crate::metrics::Metrics;

/// One node's figures, as `GET /admin/stats` answers them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeStats {
    /// The node's id (random at each start).
    pub node: String,
    /// `embedded` or `cluster`.
    pub mode: String,
    /// When sampled: milliseconds since the Unix epoch.
    pub at: i64,
    /// The interval the rates are over, in milliseconds.
    pub interval_ms: u64,
    /// Open streams.
    pub streams: i64,
    /// Event frames written to streams per second.
    pub deliveries_per_s: f64,
    /// Events appended through this node per second.
    pub publishes_per_s: f64,
    /// Slow clients caught up from the log (queue overflows) per second.
    pub caught_up_per_s: f64,
    /// Streams closed for accepting no bytes within the write deadline, per second.
    pub streams_dropped_per_s: f64,
    /// Events never delivered because retention removed them first, in all.
    pub events_skipped: u64,
    /// Mean time from an event's commit to its dispatch here over the
    /// interval, in milliseconds (`null`: no event in the interval).
    #[schema(required = true)]
    pub bus_lag_ms: Option<f64>,
    /// Plugin calls (active versions) per second.
    pub plugin_calls_per_s: f64,
    /// By tenant (those with open streams or events published here).
    pub tenants: Vec<TenantStats>,
    /// What `/ready` says of each dependency.
    pub ready: Vec<DependencyState>,
}

/// One tenant's figures on one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantStats {
    /// The tenant.
    pub tenant: String,
    /// Open streams.
    pub streams: i64,
    /// Events appended per second.
    pub publishes_per_s: f64,
    /// Live event frames offered to its streams here per second.
    #[serde(default)]
    pub deliveries_per_s: f64,
}

/// One dependency as `/ready` sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DependencyState {
    /// `store`, `redis`, `disk`, ...
    pub name: String,
    /// Whether it answers.
    pub ok: bool,
    /// Why not (`null` when it does).
    #[schema(required = true)]
    pub error: Option<String>,
}

/// What `/ready` asks, as names and answers.
pub type Readiness =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Vec<DependencyState>> + Send>> + Send + Sync>;

/// The counters a sample reads; rates are their differences.
#[derive(Default, Clone)]
struct Counters {
    sent: u64,
    published: u64,
    lagged: u64,
    dropped: u64,
    lag_sum: f64,
    lag_count: u64,
    plugin_calls: u64,
    tenant_published: Vec<(String, u64)>,
    tenant_delivered: Vec<(String, u64)>,
}

fn read(metrics: &Metrics, plugin_calls: &(dyn Fn() -> u64 + Send + Sync)) -> Counters {
    let (lag_sum, lag_count) = metrics.bus_lag_totals();
    Counters {
        sent: metrics.events_sent.get(),
        published: metrics.events_published.get(),
        lagged: metrics.client_lagged.get(),
        dropped: metrics.write_deadline_closed.get(),
        lag_sum,
        lag_count,
        plugin_calls: plugin_calls(),
        tenant_published: metrics.tenant_published_totals(),
        tenant_delivered: metrics.tenant_delivered_totals(),
    }
}

/// Samples the node's figures every [`STATS_INTERVAL`] until `stop`, and
/// hands each sample to `directory`.
pub fn start(
    node: String,
    mode: &'static str,
    metrics: Arc<Metrics>,
    plugin_calls: Arc<dyn Fn() -> u64 + Send + Sync>,
    readiness: Readiness,
    directory: Arc<dyn Directory>,
    stop: CancellationToken,
) {
    tokio::spawn(async move {
        let mut prev = read(&metrics, &*plugin_calls);
        let mut prev_at = Instant::now();
        let mut tick = tokio::time::interval(STATS_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = read(&metrics, &*plugin_calls);
            let secs = prev_at.elapsed().as_secs_f64().max(0.001);
            prev_at = Instant::now();
            let rate = |a: u64, b: u64| a.saturating_sub(b) as f64 / secs;
            let published: std::collections::HashMap<&str, u64> = prev
                .tenant_published
                .iter()
                .map(|(t, n)| (t.as_str(), *n))
                .collect();
            let mut tenants: std::collections::BTreeMap<String, TenantStats> = Default::default();
            for (tenant, n) in &now.tenant_published {
                let was = published.get(tenant.as_str()).copied().unwrap_or(0);
                tenants.insert(
                    tenant.clone(),
                    TenantStats {
                        tenant: tenant.clone(),
                        streams: 0,
                        publishes_per_s: rate(*n, was),
                        deliveries_per_s: 0.0,
                    },
                );
            }
            let delivered: std::collections::HashMap<&str, u64> = prev
                .tenant_delivered
                .iter()
                .map(|(t, n)| (t.as_str(), *n))
                .collect();
            for (tenant, n) in &now.tenant_delivered {
                let was = delivered.get(tenant.as_str()).copied().unwrap_or(0);
                tenants
                    .entry(tenant.clone())
                    .or_insert(TenantStats {
                        tenant: tenant.clone(),
                        streams: 0,
                        publishes_per_s: 0.0,
                        deliveries_per_s: 0.0,
                    })
                    .deliveries_per_s = rate(*n, was);
            }
            for (tenant, streams) in metrics.tenant_streams() {
                tenants
                    .entry(tenant.clone())
                    .or_insert(TenantStats {
                        tenant,
                        streams: 0,
                        publishes_per_s: 0.0,
                        deliveries_per_s: 0.0,
                    })
                    .streams = streams;
            }
            let lag_count = now.lag_count.saturating_sub(prev.lag_count);
            let ready = readiness().await;
            for d in &ready {
                metrics.dependency(&d.name, d.ok);
            }
            let stats = NodeStats {
                node: node.clone(),
                mode: mode.to_string(),
                at: crate::event::now_ms(),
                interval_ms: (secs * 1000.0) as u64,
                streams: metrics.connections.get(),
                deliveries_per_s: rate(now.sent, prev.sent),
                publishes_per_s: rate(now.published, prev.published),
                caught_up_per_s: rate(now.lagged, prev.lagged),
                streams_dropped_per_s: rate(now.dropped, prev.dropped),
                events_skipped: metrics.fanout_gap_skipped.get(),
                bus_lag_ms: (lag_count > 0)
                    .then(|| (now.lag_sum - prev.lag_sum) * 1000.0 / lag_count as f64),
                plugin_calls_per_s: rate(now.plugin_calls, prev.plugin_calls),
                tenants: tenants
                    .into_values()
                    .filter(|t| {
                        t.streams > 0 || t.publishes_per_s > 0.0 || t.deliveries_per_s > 0.0
                    })
                    .collect(),
                ready,
            };
            directory.publish_stats(&stats).await;
            prev = now;
        }
    });
}
