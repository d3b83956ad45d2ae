//! Every metric the node exports, in one table (`metrics!` below), on the
//! `prometheus` crate: its registry renders the Prometheus text at
//! `/metrics`. The plugin slots' series come and go with tenants, so they
//! are gathered at each scrape from the registry's own atomics
//! ([`PluginSample`], through [`Metrics::gather_plugins`]); their names and
//! help texts are here too.
//!
//! Counters and gauges are atomics, so updating one is a single relaxed add;
//! hot paths add once per batch or per event, never per event per
//! connection. Labelled series have bounded label sets (tenants, route
//! templates); a per-connection series (a tenant's gauge) is looked up once
//! per connection, a route's once per request.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

/// Registers `metric` (names and help texts are fixed below, so a refusal
/// is a bug).
fn register<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: &M) {
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are valid and unique");
}

/// A monotonically increasing counter (an atomic).
#[derive(Clone)]
pub struct Counter(prometheus::IntCounter);

impl Counter {
    fn new(name: &str, help: &str) -> Counter {
        Counter(prometheus::IntCounter::new(name, help).expect("a valid counter name"))
    }
    fn registered(registry: &Registry, name: &str, help: &str) -> Counter {
        let c = Counter::new(name, help);
        register(registry, &c.0);
        c
    }
    /// Adds one.
    pub fn inc(&self) {
        self.0.inc();
    }
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.inc_by(n);
    }
    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.get()
    }
}

/// A value that goes up and down (an atomic).
#[derive(Clone)]
pub struct Gauge(prometheus::IntGauge);

impl Gauge {
    fn registered(registry: &Registry, name: &str, help: &str) -> Gauge {
        let g = Gauge(prometheus::IntGauge::new(name, help).expect("a valid gauge name"));
        register(registry, &g.0);
        g
    }
    /// Sets the value.
    pub fn set(&self, n: i64) {
        self.0.set(n);
    }
    /// Adds `n` (may be negative).
    pub fn add(&self, n: i64) {
        self.0.add(n);
    }
    /// Current value.
    pub fn get(&self) -> i64 {
        self.0.get()
    }
}

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A latency histogram with the fixed buckets (atomics, no lock).
#[derive(Clone)]
pub struct Histogram(prometheus::Histogram);

impl Histogram {
    fn registered(registry: &Registry, name: &str, help: &str) -> Histogram {
        let opts = HistogramOpts::new(name, help).buckets(BUCKETS.to_vec());
        let h = Histogram(prometheus::Histogram::with_opts(opts).expect("a valid histogram"));
        register(registry, &h.0);
        h
    }
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        self.0.observe(d.as_secs_f64());
    }
    /// The sum of the observations (seconds) and their count.
    pub fn totals(&self) -> (f64, u64) {
        (self.0.get_sample_sum(), self.0.get_sample_count())
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

/// The process's store batch counters (registered by every `Metrics`).
pub static STORE_BATCHES: LazyLock<StoreBatches> = LazyLock::new(|| StoreBatches {
    batches: Counter::new(
        "store_batches_total",
        "Transactions run by the store's group commit.",
    ),
    writes: Counter::new(
        "store_batch_writes_total",
        "Writes (appends, messages, bids, rounds) run in those transactions.",
    ),
    retried: Counter::new(
        "store_batches_retried_total",
        "Failed batches run again one write at a time.",
    ),
});

/// Each database's group-commit latency (the `COMMIT` of a batch), by the
/// database's name in the placement (`main` for `DATABASE_URL`, then the
/// names in `SWITCHYARD_DATABASES`: a bounded set). Process-wide, as the
/// stores are; registered by every `Metrics`.
pub static STORE_COMMIT_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    HistogramVec::new(
        HistogramOpts::new(
            "store_commit_seconds",
            "Time to commit one group-commit transaction, by database.",
        )
        .buckets(BUCKETS.to_vec()),
        &["database"],
    )
    .expect("a valid histogram")
});

/// Log lines dropped: the log's queue was full, or writing to standard
/// error failed (a full disk, a closed pipe). Process-wide, as the log is
/// (see `logging.rs`); registered by every `Metrics`.
pub static LOG_LINES_DROPPED: LazyLock<Counter> = LazyLock::new(|| {
    Counter::new(
        "log_lines_dropped_total",
        "Log lines dropped (the log's queue was full or its destination failed).",
    )
});

/// The table of the node's unlabelled metrics: the field (with its doc),
/// its kind, its name (after `switchyard_`) and its help text.
macro_rules! metrics {
    ($( $(#[$doc:meta])* $field:ident: $kind:ident = $name:literal, $help:literal; )*) => {
        /// All of the node's metrics.
        pub struct Metrics {
            $( $(#[$doc])* pub $field: $kind, )*
            /// Open SSE connections by tenant.
            by_tenant: IntGaugeVec,
            /// Events appended through this node, by tenant.
            published_by_tenant: IntCounterVec,
            /// Live event frames offered to this node's streams, by tenant.
            delivered_by_tenant: IntCounterVec,
            /// Whether each dependency `/ready` checks answers (1) or not (0).
            dependencies: IntGaugeVec,
            /// Requests by method, route template and status class.
            requests: IntCounterVec,
            /// Time to the response head, by method and route template.
            durations: HistogramVec,
            /// Each source's series, by source name.
            sources: SourceSeries,
            /// The bus's shards read here (cluster mode), by shard.
            shards: ShardSeries,
            registry: Registry,
        }

        impl Default for Metrics {
            fn default() -> Metrics {
                let registry = Registry::new_custom(Some("switchyard".into()), None)
                    .expect("a valid prefix");
                $( let $field = $kind::registered(&registry, $name, $help); )*
                let by_tenant = IntGaugeVec::new(
                    Opts::new("tenant_connections", "Open SSE connections by tenant."),
                    &["tenant"],
                )
                .expect("a valid gauge");
                let requests = IntCounterVec::new(
                    Opts::new(
                        "http_requests_total",
                        "HTTP requests by route and status class.",
                    ),
                    &["method", "route", "status"],
                )
                .expect("a valid counter");
                let durations = HistogramVec::new(
                    HistogramOpts::new(
                        "http_request_duration_seconds",
                        "Time to the response head, by route.",
                    )
                    .buckets(BUCKETS.to_vec()),
                    &["method", "route"],
                )
                .expect("a valid histogram");
                let published_by_tenant = IntCounterVec::new(
                    Opts::new(
                        "tenant_events_published_total",
                        "Events appended through this node, by tenant.",
                    ),
                    &["tenant"],
                )
                .expect("a valid counter");
                let delivered_by_tenant = IntCounterVec::new(
                    Opts::new(
                        "tenant_events_delivered_total",
                        "Live event frames offered to this node's streams, by tenant (catch-up from the log not included).",
                    ),
                    &["tenant"],
                )
                .expect("a valid counter");
                let dependencies = IntGaugeVec::new(
                    Opts::new(
                        "dependency_up",
                        "Whether a dependency /ready checks answers (1) or not (0), as of the last sample.",
                    ),
                    &["dependency"],
                )
                .expect("a valid gauge");
                register(&registry, &by_tenant);
                register(&registry, &published_by_tenant);
                register(&registry, &delivered_by_tenant);
                register(&registry, &dependencies);
                register(&registry, &requests);
                register(&registry, &durations);
                let sources = SourceSeries::registered(&registry);
                let shards = ShardSeries::registered(&registry);
                for c in [
                    &STORE_BATCHES.batches,
                    &STORE_BATCHES.writes,
                    &STORE_BATCHES.retried,
                    &*LOG_LINES_DROPPED,
                ] {
                    register(&registry, &c.0);
                }
                register(&registry, &*STORE_COMMIT_SECONDS);
                Metrics {
                    $( $field, )*
                    by_tenant,
                    published_by_tenant,
                    delivered_by_tenant,
                    dependencies,
                    requests,
                    durations,
                    sources,
                    shards,
                    registry,
                }
            }
        }
    };
}

metrics! {
    /// Open SSE connections.
    connections: Gauge = "connections", "Open SSE connections.";
    /// SSE connections opened.
    connections_opened: Counter = "connections_opened_total", "SSE connections opened.";
    /// Events appended through this node.
    events_published: Counter = "events_published_total", "Events appended through this node.";
    /// Events the hub dispatched to local subscribers (from any node).
    events_dispatched: Counter = "events_dispatched_total",
        "Events dispatched to this node's subscribers.";
    /// Event offers to connection queues (one per subscriber per event).
    fanout_offers: Counter = "fanout_offers_total", "Event offers to connection queues.";
    /// Event frames written to SSE connections (live and replay).
    events_sent: Counter = "events_sent_total", "Event frames written to SSE connections.";
    /// Event frames written from the log while catching up or resuming.
    events_replayed: Counter = "events_replayed_total",
        "Event frames written from the log (resume and catch-up).";
    /// Times a connection's queue overflowed and it fell back to the log.
    client_lagged: Counter = "client_lagged_total",
        "Connection queue overflows (the connection caught up from the log).";
    /// Connections closed because they accepted no bytes for the write deadline.
    write_deadline_closed: Counter = "write_deadline_closed_total",
        "Connections closed after accepting no bytes for the write deadline.";
    /// `reset` events sent (history no longer covered a resume).
    resets: Counter = "resets_total",
        "reset events sent because history no longer covered a resume.";
    /// Gap fills from the store after out-of-order fan-out.
    fanout_gap_fills: Counter = "fanout_gap_fills_total",
        "Out-of-order fan-out gaps filled from the store.";
    /// Tail checks that found events fan-out had not delivered.
    fanout_tail_fills: Counter = "fanout_tail_fills_total",
        "Tail checks that found undelivered events.";
    /// Ids skipped by the dispatcher because retention had removed them.
    fanout_gap_skipped: Counter = "fanout_gap_skipped_total",
        "Event ids skipped because retention removed them.";
    /// Failed publishes to the cross-node bus (Redis).
    fanout_publish_errors: Counter = "fanout_publish_errors_total",
        "Failed publishes to the cross-node bus.";
    /// Events removed by retention.
    retention_trimmed: Counter = "retention_trimmed_total", "Events removed by retention.";
    /// Connections refused because the node is at its connection cap.
    connections_refused: Counter = "connections_refused_total",
        "Connections refused at the connection cap.";
    /// Accept failures for lack of file descriptors.
    fd_exhausted: Counter = "fd_exhausted_total",
        "Accept failures for lack of file descriptors.";
    /// First request heads refused with 431 (over the size or line limit).
    heads_too_large: Counter = "heads_too_large_total",
        "First request heads answered 431 (too large or too many lines).";
    /// Connections closed because their first request head (or TLS
    /// handshake) came too slowly.
    head_timeouts: Counter = "head_timeouts_total",
        "Connections closed because the first request head came too slowly.";
    /// Requests answered 408 because their body did not arrive in full
    /// within the body deadline.
    body_timeouts: Counter = "body_timeouts_total",
        "Requests whose body did not arrive within the body deadline (408).";
    /// Cookie-authenticated writes refused for their `Origin`.
    origin_refused: Counter = "origin_refused_total",
        "Cookie-authenticated writes refused because their Origin is not allowed.";
    /// TLS handshakes that failed (a client that does not trust the
    /// certificate, or speaks no TLS).
    tls_handshake_failed: Counter = "tls_handshakes_failed_total",
        "TLS handshakes that failed.";
    /// Admin actions that could not be recorded in the audit log.
    audit_errors: Counter = "audit_write_errors_total",
        "Admin actions taken but not recorded in the audit log (the store failed).";
    /// Responses with a 5xx status.
    http_errors: Counter = "http_errors_total", "HTTP responses with a 5xx status.";
    /// POSTs refused by the per-token rate limit.
    rate_limited: Counter = "rate_limited_total", "POSTs refused by the per-token rate limit.";
    /// Streams refused by a per-user or per-tenant cap.
    streams_refused: Counter = "streams_refused_total",
        "Streams refused by a per-user or per-tenant cap.";
    /// Messages stored.
    messages_posted: Counter = "messages_posted_total", "Messages stored.";
    /// Bids accepted for processing (202).
    bids_submitted: Counter = "bids_submitted_total", "Bids accepted for processing (202).";
    /// Bids decided `accepted`.
    bids_accepted: Counter = "bid_decisions_accepted_total", "Bids decided accepted.";
    /// Bids decided `rejected`.
    bids_rejected: Counter = "bid_decisions_rejected_total", "Bids decided rejected.";
    /// Queued bids (as of the last sweep).
    bids_queued: Gauge = "bids_queued", "Queued bids (as of the last sweep).";
    /// Age of the oldest queued bid, ms (as of the last sweep).
    bids_queue_lag_ms: Gauge = "bids_queue_lag_ms",
        "Age of the oldest queued bid in ms (as of the last sweep).";
    /// The node's connection cap (`SWITCHYARD_MAX_CONNECTIONS` or what the
    /// open-file limit allows).
    connection_cap: Gauge = "connection_cap", "The node's connection cap.";
    /// The stream cap per tenant (across every node).
    tenant_stream_cap: Gauge = "tenant_stream_cap",
        "Signed-in streams a tenant may hold across every node.";
    /// Time from an event's commit to its dispatch on this node.
    bus_lag: Histogram = "bus_lag_seconds",
        "Time from an event's commit to its dispatch to this node's subscribers.";
    /// Duration of decision rounds.
    bid_round_latency: Histogram = "bid_round_duration_seconds",
        "Duration of bid decision rounds.";
}

/// What the plugin registry reports at a scrape: the engine's compile
/// counters and every slot's calls.
#[derive(Debug, Default)]
pub struct PluginSample {
    /// Components compiled (not found in the code cache).
    pub compiled: u64,
    /// Time spent compiling them, in seconds.
    pub compile_seconds: f64,
    /// Components loaded from the compiled-code cache.
    pub cache_hits: u64,
    /// Stream requests left out of the record because its writer was behind.
    pub stream_records_dropped: u64,
    /// One entry per (slot, tenant) the registry holds.
    pub slots: Vec<SlotSample>,
}

/// One plugin slot of one tenant (`tenant` empty: the node-wide slot).
#[derive(Debug, Default)]
pub struct SlotSample {
    /// The slot's name.
    pub slot: &'static str,
    /// The tenant.
    pub tenant: String,
    /// Calls of the active version.
    pub calls: u64,
    /// Calls the guest failed, by kind.
    pub errors: Vec<(&'static str, u64)>,
    /// Calls the host could not run (not counted against the plugin).
    pub host_faults: u64,
    /// Active-version changes.
    pub swaps: u64,
    /// Shadow verdicts that differed from the active version's.
    pub shadow_disagreements: u64,
    /// Call latency: (upper bound in seconds, cumulative count) per bucket.
    pub buckets: Vec<(f64, u64)>,
    /// Sum of call latencies, in seconds.
    pub seconds: f64,
}

/// The plugin series' (name after `switchyard_`, help, type).
const PLUGIN_SERIES: [(&str, &str, MetricType); 10] = [
    (
        "plugin_compiles_total",
        "Components compiled (not found in the code cache).",
        MetricType::COUNTER,
    ),
    (
        "plugin_compile_seconds_total",
        "Time spent compiling components.",
        MetricType::COUNTER,
    ),
    (
        "plugin_cache_hits_total",
        "Components loaded from the compiled-code cache.",
        MetricType::COUNTER,
    ),
    (
        "plugin_stream_records_dropped_total",
        "Stream requests left out of the record (its writer was behind).",
        MetricType::COUNTER,
    ),
    (
        "plugin_calls_total",
        "Calls of the active plugin version.",
        MetricType::COUNTER,
    ),
    (
        "plugin_errors_total",
        "Plugin calls the plugin failed, by kind.",
        MetricType::COUNTER,
    ),
    (
        "plugin_host_faults_total",
        "Plugin calls the host could not run (not counted against the plugin).",
        MetricType::COUNTER,
    ),
    (
        "plugin_swaps_total",
        "Active-version changes.",
        MetricType::COUNTER,
    ),
    (
        "plugin_shadow_disagreements_total",
        "Shadow verdicts that differed from the active version's.",
        MetricType::COUNTER,
    ),
    (
        "plugin_call_seconds",
        "Plugin call latency.",
        MetricType::HISTOGRAM,
    ),
];

/// Gathers the plugin series from a [`PluginSample`] source at each scrape.
struct PluginCollector {
    descs: Vec<Desc>,
    source: Box<dyn Fn() -> PluginSample + Send + Sync>,
}

impl Collector for PluginCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let s = (self.source)();
        let slot_labels = |x: &SlotSample| vec![label("slot", x.slot), label("tenant", &x.tenant)];
        let (mut calls, mut errors, mut faults, mut swaps, mut disagreements, mut latency) = (
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        );
        for x in &s.slots {
            calls.push(counter(slot_labels(x), x.calls as f64));
            for (kind, n) in &x.errors {
                let mut l = slot_labels(x);
                l.push(label("kind", kind));
                errors.push(counter(l, *n as f64));
            }
            faults.push(counter(slot_labels(x), x.host_faults as f64));
            swaps.push(counter(slot_labels(x), x.swaps as f64));
            disagreements.push(counter(slot_labels(x), x.shadow_disagreements as f64));
            let mut h = proto::Histogram::default();
            h.set_sample_count(x.calls);
            h.set_sample_sum(x.seconds);
            h.set_bucket(
                x.buckets
                    .iter()
                    .map(|(le, n)| {
                        let mut b = proto::Bucket::default();
                        b.set_upper_bound(*le);
                        b.set_cumulative_count(*n);
                        b
                    })
                    .collect(),
            );
            let mut m = proto::Metric::default();
            m.set_label(slot_labels(x));
            m.set_histogram(h);
            latency.push(m);
        }
        // In the order of `PLUGIN_SERIES`.
        let families: [Vec<proto::Metric>; PLUGIN_SERIES.len()] = [
            vec![counter(vec![], s.compiled as f64)],
            vec![counter(vec![], s.compile_seconds)],
            vec![counter(vec![], s.cache_hits as f64)],
            vec![counter(vec![], s.stream_records_dropped as f64)],
            calls,
            errors,
            faults,
            swaps,
            disagreements,
            latency,
        ];
        PLUGIN_SERIES
            .iter()
            .zip(families)
            .map(|((name, help, kind), metrics)| {
                let mut f = MetricFamily::default();
                f.set_name(name.to_string());
                f.set_help(help.to_string());
                f.set_field_type(*kind);
                f.set_metric(metrics);
                f
            })
            .collect()
    }
}

fn label(name: &str, value: &str) -> proto::LabelPair {
    let mut l = proto::LabelPair::default();
    l.set_name(name.to_string());
    l.set_value(value.to_string());
    l
}

fn counter(labels: Vec<proto::LabelPair>, value: f64) -> proto::Metric {
    let mut c = proto::Counter::default();
    c.set_value(value);
    let mut m = proto::Metric::default();
    m.set_label(labels);
    m.set_counter(c);
    m
}

/// The series of the configured sources (`sources/`), labelled by source
/// name (a bounded set: the config file's).
struct SourceSeries {
    read: IntCounterVec,
    published: IntCounterVec,
    dead: IntCounterVec,
    lag_entries: IntGaugeVec,
    lag_ms: IntGaugeVec,
    state: IntGaugeVec,
    resumed: IntCounterVec,
}

/// One source's series (`Metrics::source`).
pub struct SourceCounters {
    /// Messages read.
    pub read: Counter,
    /// Events published (or, in shadow mode, that would have been).
    pub published: Counter,
    /// Dead letters.
    pub dead: Counter,
    /// Entries not yet read.
    pub lag_entries: Gauge,
    /// Age of the oldest entry not yet read.
    pub lag_ms: Gauge,
    /// Its state.
    pub state: Gauge,
    /// Streams that resumed after one of its entry ids (migration window).
    pub resumed: Counter,
    /// Streams whose entry id it had not stored (they started over).
    pub resume_unknown: Counter,
}

impl SourceSeries {
    fn registered(registry: &Registry) -> SourceSeries {
        let counter = |name: &str, help: &str| {
            let c =
                IntCounterVec::new(Opts::new(name, help), &["source"]).expect("a valid counter");
            register(registry, &c);
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGaugeVec::new(Opts::new(name, help), &["source"]).expect("a valid gauge");
            register(registry, &g);
            g
        };
        SourceSeries {
            read: counter("source_messages_read_total", "Messages a source read on this node."),
            published: counter(
                "source_events_published_total",
                "Events (or bids) a source published on this node; in shadow mode, would have.",
            ),
            dead: counter(
                "source_dead_letters_total",
                "Messages a source sent to a dead-letter topic on this node.",
            ),
            lag_entries: gauge(
                "source_lag_entries",
                "Entries not yet read by a source, where its kind can tell.",
            ),
            lag_ms: gauge(
                "source_lag_ms",
                "Age in ms of the oldest entry a source has not read, where its kind can tell.",
            ),
            state: gauge(
                "source_state",
                "A source's state on this node: 0 starting, 1 running, 2 standby, 3 failing, 4 stopped.",
            ),
            resumed: {
                let c = IntCounterVec::new(
                    Opts::new(
                        "source_migration_resumes_total",
                        "Streams opened with an entry id of a source in its migration window, \
                         by outcome: found (resumed after its event) or unknown (started over).",
                    ),
                    &["source", "outcome"],
                )
                .expect("a valid counter");
                register(registry, &c);
                c
            },
        }
    }
}

/// The series of the bus's shards this node reads (cluster mode), labelled
/// by shard number (a bounded set: `SWITCHYARD_BUS_SHARDS`).
struct ShardSeries {
    bytes: IntCounterVec,
    entries: IntCounterVec,
    lag_ms: IntGaugeVec,
    reading: IntGaugeVec,
}

/// One shard's series (`Metrics::bus_shard`).
pub struct ShardCounters {
    /// Bytes of entries read.
    pub bytes: Counter,
    /// Entries read.
    pub entries: Counter,
    /// Age of the newest entry read, when it was read.
    pub lag_ms: Gauge,
    /// 1 while this node reads the shard.
    pub reading: Gauge,
}

impl ShardSeries {
    fn registered(registry: &Registry) -> ShardSeries {
        let counter = |name: &str, help: &str| {
            let c = IntCounterVec::new(Opts::new(name, help), &["shard"]).expect("a valid counter");
            register(registry, &c);
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGaugeVec::new(Opts::new(name, help), &["shard"]).expect("a valid gauge");
            register(registry, &g);
            g
        };
        ShardSeries {
            bytes: counter(
                "bus_shard_read_bytes_total",
                "Bytes of bus entries this node read from a shard (event bodies and ids).",
            ),
            entries: counter(
                "bus_shard_entries_read_total",
                "Bus entries this node read from a shard.",
            ),
            lag_ms: gauge(
                "bus_shard_lag_ms",
                "Age in ms of the newest entry this node read from a shard, when it read it.",
            ),
            reading: gauge(
                "bus_shard_reading",
                "Whether this node reads a bus shard (1: a tenant of the shard has streams here).",
            ),
        }
    }
}

/// Each series of a one-label family: (label value, value).
fn labelled<T>(families: &[MetricFamily], value: impl Fn(&proto::Metric) -> T) -> Vec<(String, T)> {
    families
        .iter()
        .flat_map(|f| f.get_metric())
        .filter_map(|m| {
            let label = m.get_label().first()?.value().to_string();
            Some((label, value(m)))
        })
        .collect()
}

/// The `status` label of each status class (index: 1xx..5xx).
const STATUS: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

impl Metrics {
    /// One source's series (looked up once, when it starts): read,
    /// published, dead-lettered, lag in entries and in ms, state.
    pub fn source(&self, name: &str) -> SourceCounters {
        let s = &self.sources;
        SourceCounters {
            read: Counter(s.read.with_label_values(&[name])),
            published: Counter(s.published.with_label_values(&[name])),
            dead: Counter(s.dead.with_label_values(&[name])),
            lag_entries: Gauge(s.lag_entries.with_label_values(&[name])),
            lag_ms: Gauge(s.lag_ms.with_label_values(&[name])),
            state: Gauge(s.state.with_label_values(&[name])),
            resumed: Counter(s.resumed.with_label_values(&[name, "found"])),
            resume_unknown: Counter(s.resumed.with_label_values(&[name, "unknown"])),
        }
    }

    /// One bus shard's series (looked up once, when its reader starts).
    pub fn bus_shard(&self, shard: u16) -> ShardCounters {
        let s = &self.shards;
        let label = shard.to_string();
        ShardCounters {
            bytes: Counter(s.bytes.with_label_values(&[&label])),
            entries: Counter(s.entries.with_label_values(&[&label])),
            lag_ms: Gauge(s.lag_ms.with_label_values(&[&label])),
            reading: Gauge(s.reading.with_label_values(&[&label])),
        }
    }

    /// The connection gauge of one tenant (looked up once per connection).
    pub fn tenant_connections(&self, tenant: &str) -> Gauge {
        Gauge(self.by_tenant.with_label_values(&[tenant]))
    }

    /// Counts events appended for `tenant` (once per tenant per batch).
    pub fn tenant_published(&self, tenant: &str, n: u64) {
        self.published_by_tenant
            .with_label_values(&[tenant])
            .inc_by(n);
    }

    /// Events appended through this node so far, by tenant.
    pub fn tenant_published_totals(&self) -> Vec<(String, u64)> {
        labelled(&self.published_by_tenant.collect(), |m| {
            m.get_counter().get_value() as u64
        })
    }

    /// Counts live event frames offered to `tenant`'s streams (once per
    /// event, for all its subscribers here).
    pub fn tenant_delivered(&self, tenant: &str, n: u64) {
        self.delivered_by_tenant
            .with_label_values(&[tenant])
            .inc_by(n);
    }

    /// Live event frames offered so far, by tenant.
    pub fn tenant_delivered_totals(&self) -> Vec<(String, u64)> {
        labelled(&self.delivered_by_tenant.collect(), |m| {
            m.get_counter().get_value() as u64
        })
    }

    /// Open streams by tenant (those that ever had one here).
    pub fn tenant_streams(&self) -> Vec<(String, i64)> {
        labelled(&self.by_tenant.collect(), |m| {
            m.get_gauge().get_value() as i64
        })
    }

    /// Records whether dependency `name` answers (from the live figures'
    /// sample, every few seconds).
    pub fn dependency(&self, name: &str, up: bool) {
        self.dependencies
            .with_label_values(&[name])
            .set(i64::from(up));
    }

    /// The bus lag's sum (seconds) and count.
    pub fn bus_lag_totals(&self) -> (f64, u64) {
        self.bus_lag.totals()
    }

    /// Counts one answered request of a route template (e.g. `/api/events`)
    /// with its status class (1 to 5) and the time to its head.
    pub fn request(&self, method: &'static str, route: &str, class: usize, took: Duration) {
        let status = STATUS[class.clamp(1, 5) - 1];
        self.requests
            .with_label_values(&[method, route, status])
            .inc();
        self.durations
            .with_label_values(&[method, route])
            .observe(took.as_secs_f64());
    }

    /// Gathers the plugin series from `source` at every scrape (once per
    /// node, when its plugin registry exists).
    pub fn gather_plugins(&self, source: impl Fn() -> PluginSample + Send + Sync + 'static) {
        let descs = PLUGIN_SERIES
            .iter()
            .map(|(name, help, _)| {
                Desc::new(
                    name.to_string(),
                    help.to_string(),
                    Vec::new(),
                    Default::default(),
                )
                .expect("a valid name and help")
            })
            .collect();
        let collector = PluginCollector {
            descs,
            source: Box::new(source),
        };
        if let Err(e) = self.registry.register(Box::new(collector)) {
            tracing::error!(error = %e, "the plugin metrics are registered already");
        }
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        if let Err(e) =
            prometheus::TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out)
        {
            tracing::error!(error = %e, "cannot render the metrics");
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
        m.request("GET", "/health", 2, Duration::from_millis(3));
        let text = m.render();
        assert!(text.contains("switchyard_events_published_total 3"));
        assert!(text.contains("switchyard_tenant_connections{tenant=\"acme\"} 2"));
        assert!(text.contains(
            "switchyard_http_request_duration_seconds_bucket{method=\"GET\",route=\"/health\",le=\"0.005\"} 1"
        ));
        assert!(text.contains(
            "switchyard_http_requests_total{method=\"GET\",route=\"/health\",status=\"2xx\"} 1"
        ));
        // Names, types and help texts as the Prometheus text format has them.
        assert!(text.contains(
            "# HELP switchyard_events_published_total Events appended through this node.\n\
             # TYPE switchyard_events_published_total counter\n"
        ));
        assert!(text.contains("# TYPE switchyard_http_request_duration_seconds histogram\n"));
    }

    #[test]
    fn renders_the_plugin_series_gathered_at_each_scrape() {
        let m = Metrics::default();
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(2));
        let seen = calls.clone();
        m.gather_plugins(move || PluginSample {
            compiled: 1,
            compile_seconds: 0.25,
            cache_hits: 0,
            stream_records_dropped: 3,
            slots: vec![SlotSample {
                slot: "event-filter",
                tenant: "acme".into(),
                calls: seen.load(std::sync::atomic::Ordering::Relaxed),
                errors: vec![("timeout", 1), ("trap", 0)],
                host_faults: 4,
                swaps: 1,
                shadow_disagreements: 0,
                buckets: vec![(0.00001, 1), (0.0001, 2)],
                seconds: 0.00005,
            }],
        });
        let text = m.render();
        assert!(text.contains(
            "# HELP switchyard_plugin_compiles_total Components compiled (not found in the code cache).\n\
             # TYPE switchyard_plugin_compiles_total counter\n\
             switchyard_plugin_compiles_total 1\n"
        ));
        assert!(text.contains("switchyard_plugin_compile_seconds_total 0.25\n"));
        assert!(text.contains("switchyard_plugin_cache_hits_total 0\n"));
        assert!(text.contains("switchyard_plugin_stream_records_dropped_total 3\n"));
        assert!(text
            .contains("switchyard_plugin_calls_total{slot=\"event-filter\",tenant=\"acme\"} 2\n"));
        assert!(text.contains(
            "switchyard_plugin_errors_total{slot=\"event-filter\",tenant=\"acme\",kind=\"timeout\"} 1\n"
        ));
        assert!(text.contains(
            "switchyard_plugin_host_faults_total{slot=\"event-filter\",tenant=\"acme\"} 4\n"
        ));
        assert!(text.contains("# TYPE switchyard_plugin_call_seconds histogram\n"));
        assert!(text.contains(
            "switchyard_plugin_call_seconds_bucket{slot=\"event-filter\",tenant=\"acme\",le=\"0.0001\"} 2\n"
        ));
        assert!(text.contains(
            "switchyard_plugin_call_seconds_bucket{slot=\"event-filter\",tenant=\"acme\",le=\"+Inf\"} 2\n"
        ));
        assert!(text.contains(
            "switchyard_plugin_call_seconds_count{slot=\"event-filter\",tenant=\"acme\"} 2\n"
        ));
        // Gathered anew at each scrape, not copied once.
        calls.store(5, std::sync::atomic::Ordering::Relaxed);
        assert!(m
            .render()
            .contains("switchyard_plugin_calls_total{slot=\"event-filter\",tenant=\"acme\"} 5\n"));
    }
}
