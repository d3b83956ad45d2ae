//! Every metric the node exports, rendered as Prometheus text at `/metrics`.
//!
//! Counters are plain atomics, so updating one is a single relaxed add; hot
//! paths add once per batch or per event, never per event per connection.
//! Labelled series have bounded label sets (tenants, route templates).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A monotonically increasing counter.
#[derive(Default, Debug)]
pub struct Counter(AtomicU64);

impl Counter {
    /// A counter at zero (for statics).
    pub const fn new() -> Counter {
        Counter(AtomicU64::new(0))
    }
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The store's group commit, counted by its batch task (which runs beneath
/// the node's `Metrics`): one process has one store.
pub struct StoreBatches {
    /// Transactions the batch task ran (committed or not).
    pub batches: Counter,
    /// Writes run in them.
    pub writes: Counter,
    /// Batches that failed and were run again one write at a time.
    pub retried: Counter,
}

/// The process's store batch counters.
pub static STORE_BATCHES: StoreBatches = StoreBatches {
    batches: Counter::new(),
    writes: Counter::new(),
    retried: Counter::new(),
};

/// A value that goes up and down.
#[derive(Default, Debug)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// Sets the value.
    pub fn set(&self, n: i64) {
        self.0.store(n, Ordering::Relaxed);
    }
    /// Adds `n` (may be negative).
    pub fn add(&self, n: i64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// Current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A latency histogram with fixed buckets.
#[derive(Default, Debug)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

/// All of the node's metrics.
#[derive(Default, Debug)]
pub struct Metrics {
    /// Open SSE connections.
    pub connections: Gauge,
    /// SSE connections opened.
    pub connections_opened: Counter,
    /// Events appended through this node.
    pub events_published: Counter,
    /// Events the hub dispatched to local subscribers (from any node).
    pub events_dispatched: Counter,
    /// Event offers to connection queues (one per subscriber per event).
    pub fanout_offers: Counter,
    /// Event frames written to SSE connections (live and replay).
    pub events_sent: Counter,
    /// Event frames written from the log while catching up or resuming.
    pub events_replayed: Counter,
    /// Times a connection's queue overflowed and it fell back to the log.
    pub client_lagged: Counter,
    /// Connections closed because they accepted no bytes for the write deadline.
    pub write_deadline_closed: Counter,
    /// `reset` events sent (history no longer covered a resume).
    pub resets: Counter,
    /// Gap fills from the store after out-of-order fan-out.
    pub fanout_gap_fills: Counter,
    /// Tail checks that found events fan-out had not delivered.
    pub fanout_tail_fills: Counter,
    /// Ids skipped by the dispatcher because retention had removed them.
    pub fanout_gap_skipped: Counter,
    /// Failed publishes to the cross-node bus (Redis).
    pub fanout_publish_errors: Counter,
    /// Events removed by retention.
    pub retention_trimmed: Counter,
    /// Connections refused because the node is at its connection cap.
    pub connections_refused: Counter,
    /// Accept failures for lack of file descriptors.
    pub fd_exhausted: Counter,
    /// First request heads refused with 431 (over the size or line limit).
    pub heads_too_large: Counter,
    /// Connections closed because their first request head (or TLS
    /// handshake) came too slowly.
    pub head_timeouts: Counter,
    /// TLS handshakes that failed (a client that does not trust the
    /// certificate, or speaks no TLS).
    pub tls_handshake_failed: Counter,
    /// Responses with a 5xx status.
    pub http_errors: Counter,
    /// POSTs refused by the per-token rate limit.
    pub rate_limited: Counter,
    /// Streams refused by a per-user or per-tenant cap.
    pub streams_refused: Counter,
    /// Messages stored.
    pub messages_posted: Counter,
    /// Bids accepted for processing (202).
    pub bids_submitted: Counter,
    /// Bids decided `accepted`.
    pub bids_accepted: Counter,
    /// Bids decided `rejected`.
    pub bids_rejected: Counter,
    /// Queued bids (as of the last sweep).
    pub bids_queued: Gauge,
    /// Age of the oldest queued bid, ms (as of the last sweep).
    pub bids_queue_lag_ms: Gauge,
    /// Duration of decision rounds.
    pub bid_round_latency: Histogram,
    by_tenant: Mutex<BTreeMap<String, Arc<Gauge>>>,
    requests: Mutex<BTreeMap<(&'static str, String), Arc<RouteStats>>>,
}

/// Per-route request count and latency.
#[derive(Default, Debug)]
pub struct RouteStats {
    /// Requests per status class (index: 1xx..5xx).
    pub status: [Counter; 5],
    /// Latency.
    pub latency: Histogram,
}

impl Metrics {
    /// The connection gauge of one tenant (looked up once per connection).
    pub fn tenant_connections(&self, tenant: &str) -> Arc<Gauge> {
        let mut map = self.by_tenant.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(tenant.to_string()).or_default().clone()
    }

    /// Stats of one route template (e.g. `/api/events`).
    pub fn route(&self, method: &'static str, route: &str) -> Arc<RouteStats> {
        let mut map = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = map.get(&(method, route.to_string())) {
            return s.clone();
        }
        map.entry((method, route.to_string())).or_default().clone()
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let mut one = |name: &str, kind: &str, help: &str, v: String| {
            let _ = writeln!(out, "# HELP switchyard_{name} {help}");
            let _ = writeln!(out, "# TYPE switchyard_{name} {kind}");
            let _ = writeln!(out, "switchyard_{name} {v}");
        };
        one(
            "connections",
            "gauge",
            "Open SSE connections.",
            self.connections.get().to_string(),
        );
        let counters: [(&str, &str, &Counter); 29] = [
            (
                "connections_opened_total",
                "SSE connections opened.",
                &self.connections_opened,
            ),
            (
                "events_published_total",
                "Events appended through this node.",
                &self.events_published,
            ),
            (
                "events_dispatched_total",
                "Events dispatched to this node's subscribers.",
                &self.events_dispatched,
            ),
            (
                "fanout_offers_total",
                "Event offers to connection queues.",
                &self.fanout_offers,
            ),
            (
                "events_sent_total",
                "Event frames written to SSE connections.",
                &self.events_sent,
            ),
            (
                "events_replayed_total",
                "Event frames written from the log (resume and catch-up).",
                &self.events_replayed,
            ),
            (
                "client_lagged_total",
                "Connection queue overflows (the connection caught up from the log).",
                &self.client_lagged,
            ),
            (
                "write_deadline_closed_total",
                "Connections closed after accepting no bytes for the write deadline.",
                &self.write_deadline_closed,
            ),
            (
                "resets_total",
                "reset events sent because history no longer covered a resume.",
                &self.resets,
            ),
            (
                "fanout_gap_fills_total",
                "Out-of-order fan-out gaps filled from the store.",
                &self.fanout_gap_fills,
            ),
            (
                "fanout_tail_fills_total",
                "Tail checks that found undelivered events.",
                &self.fanout_tail_fills,
            ),
            (
                "fanout_gap_skipped_total",
                "Event ids skipped because retention removed them.",
                &self.fanout_gap_skipped,
            ),
            (
                "fanout_publish_errors_total",
                "Failed publishes to the cross-node bus.",
                &self.fanout_publish_errors,
            ),
            (
                "retention_trimmed_total",
                "Events removed by retention.",
                &self.retention_trimmed,
            ),
            (
                "connections_refused_total",
                "Connections refused at the connection cap.",
                &self.connections_refused,
            ),
            (
                "fd_exhausted_total",
                "Accept failures for lack of file descriptors.",
                &self.fd_exhausted,
            ),
            (
                "heads_too_large_total",
                "First request heads answered 431 (too large or too many lines).",
                &self.heads_too_large,
            ),
            (
                "head_timeouts_total",
                "Connections closed because the first request head (or TLS handshake) came too slowly.",
                &self.head_timeouts,
            ),
            (
                "tls_handshakes_failed_total",
                "TLS handshakes that failed.",
                &self.tls_handshake_failed,
            ),
            (
                "http_errors_total",
                "HTTP responses with a 5xx status.",
                &self.http_errors,
            ),
            (
                "rate_limited_total",
                "POSTs refused by the per-token rate limit.",
                &self.rate_limited,
            ),
            (
                "streams_refused_total",
                "Streams refused by a per-user or per-tenant cap.",
                &self.streams_refused,
            ),
            (
                "messages_posted_total",
                "Messages stored.",
                &self.messages_posted,
            ),
            (
                "store_batches_total",
                "Transactions run by the store's group commit.",
                &STORE_BATCHES.batches,
            ),
            (
                "store_batch_writes_total",
                "Writes (appends, messages, bids, rounds) run in those transactions.",
                &STORE_BATCHES.writes,
            ),
            (
                "store_batches_retried_total",
                "Failed batches run again one write at a time.",
                &STORE_BATCHES.retried,
            ),
            (
                "bids_submitted_total",
                "Bids accepted for processing (202).",
                &self.bids_submitted,
            ),
            (
                "bid_decisions_accepted_total",
                "Bids decided accepted.",
                &self.bids_accepted,
            ),
            (
                "bid_decisions_rejected_total",
                "Bids decided rejected.",
                &self.bids_rejected,
            ),
        ];
        for (name, help, c) in counters {
            one(name, "counter", help, c.get().to_string());
        }
        let _ = writeln!(
            out,
            "# HELP switchyard_tenant_connections Open SSE connections by tenant."
        );
        let _ = writeln!(out, "# TYPE switchyard_tenant_connections gauge");
        for (tenant, g) in self
            .by_tenant
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "switchyard_tenant_connections{{tenant=\"{tenant}\"}} {}",
                g.get()
            );
        }
        let routes = self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let _ = writeln!(
            out,
            "# HELP switchyard_http_requests_total HTTP requests by route and status class."
        );
        let _ = writeln!(out, "# TYPE switchyard_http_requests_total counter");
        for ((method, route), s) in &routes {
            for (i, c) in s.status.iter().enumerate() {
                let n = c.get();
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "switchyard_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{}xx\"}} {n}",
                        i + 1
                    );
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP switchyard_http_request_duration_seconds Time to the response head, by route."
        );
        let _ = writeln!(
            out,
            "# TYPE switchyard_http_request_duration_seconds histogram"
        );
        for ((method, route), s) in &routes {
            s.latency.render(
                &mut out,
                "switchyard_http_request_duration_seconds",
                &format!("method=\"{method}\",route=\"{route}\""),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::default();
        m.events_published.add(3);
        m.tenant_connections("acme").add(2);
        m.route("GET", "/health")
            .latency
            .observe(Duration::from_millis(3));
        let text = m.render();
        assert!(text.contains("switchyard_events_published_total 3"));
        assert!(text.contains("switchyard_tenant_connections{tenant=\"acme\"} 2"));
        assert!(text.contains(
            "switchyard_http_request_duration_seconds_bucket{method=\"GET\",route=\"/health\",le=\"0.005\"} 1"
        ));
    }
}
