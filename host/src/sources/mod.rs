//! Sources: the systems a team already runs publish through Switchyard
//! without changing their code. Each `[[sources]]` entry of the config file
//! (or of `SWITCHYARD_SOURCES`, a JSON array of the same objects) is one
//! source: what it reads, how a message maps to tenant, topic, type and data
//! (`mapping.rs`), and whether it publishes (`live`) or only shows what it
//! would publish (`shadow`).
//!
//! One file per kind, each a [`Source`]: `redis_stream.rs` (a consumer
//! group; exactly once, in order), `redis_pubsub.rs` (`PSUBSCRIBE`; at most
//! once), `redis_list.rs` (a list of bids, moved off atomically, decided
//! exactly once), `postgres_outbox.rs` (an outbox table the application
//! writes in its own transactions; exactly once, in transaction order),
//! `nats.rs` (a JetStream durable pull consumer; exactly once, in order).
//! Another broker (Kafka, RabbitMQ) is one more file implementing
//! [`Source`]. A kind reads, maps and hands its messages to [`Ctx`],
//! which appends them (under the entry's idempotency key where the kind
//! has one), sends what does not map to a dead-letter topic, counts, and in
//! shadow mode records instead; the kind acknowledges only after that has
//! committed. The runner here holds a lease per source (`lease.rs`), so in
//! cluster mode one node reads a source at a time and another takes over
//! when it dies; it restarts a kind that fails, after a pause.

mod lease;
pub mod mapping;
pub mod migration;
mod nats;
mod postgres_outbox;
mod redis_list;
mod redis_pubsub;
mod redis_stream;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::stream::{FuturesOrdered, StreamExt};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use crate::bids::queue::BidWakeups;
use crate::bus::publisher::Publisher;
use crate::event::NewEvent;
use crate::metrics::Metrics;
use crate::store::bids::BidStore;
use crate::store::{Keyed, PublishKey, Store};
use mapping::{Mapped, Mapping, Pattern, Reason, Template};

/// The dead-letter event's type.
pub const DEAD_LETTER_KIND: &str = "source.dead_letter";
/// Most bytes of a bad message kept in its dead letter.
const RAW_KEPT: usize = 16 * 1024;
/// Topics a shadow source keeps counts for (the rest are counted together).
const SHADOW_TOPICS: usize = 1_000;
/// Examples kept per topic of a shadow source.
const SHADOW_EXAMPLES: usize = 3;

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

/// A source as written in the config file (`[[sources]]`) or in
/// `SWITCHYARD_SOURCES`; checked into a [`Spec`] at start.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Its name: 1-64 of `a-z`, `0-9`, `-`, `_` (metrics, `/admin/sources`).
    pub name: String,
    /// `redis-stream`, `redis-pubsub`, `redis-list-bids`, `postgres-outbox`
    /// or `nats-jetstream`.
    pub kind: String,
    /// The Redis it reads (default: the node's `REDIS_URL`).
    pub redis_url: Option<String>,
    /// The application's database (`postgres-outbox`; may differ from the
    /// node's `DATABASE_URL`).
    pub database_url: Option<String>,
    /// The outbox table (`postgres-outbox`, default `switchyard_outbox`;
    /// `schema.table` allowed).
    pub table: Option<String>,
    /// The NATS server (`nats-jetstream`, default `nats://127.0.0.1:4222`).
    pub nats_url: Option<String>,
    /// The JetStream stream (`nats-jetstream`).
    pub stream: Option<String>,
    /// The stream's or list's key.
    pub key: Option<String>,
    /// The channel pattern of `redis-pubsub`, or the subject pattern of
    /// `nats-jetstream` (`*` captures: `{1}`, `{2}`..).
    pub pattern: Option<String>,
    /// The consumer group of `redis-stream`, or the durable consumer of
    /// `nats-jetstream` (default `switchyard`, or `switchyard-shadow` in
    /// shadow mode).
    pub group: Option<String>,
    /// Where a new group starts: `new` (default: entries added from now on)
    /// or `all` (the whole stream).
    pub start: Option<String>,
    /// `json` (type from `type`, the whole message as data), `laravel`
    /// (`{"event","data"}`), `event-payload` (a stream entry's `event`
    /// and `payload` fields), `outbox` (the columns of `switchyard_outbox`;
    /// the default of `postgres-outbox`) or `debezium` (Debezium's outbox
    /// columns `aggregatetype`, `aggregateid`, `type`, `payload`).
    pub preset: Option<String>,
    /// Tenant template.
    pub tenant: Option<String>,
    /// Topic template.
    pub topic: Option<String>,
    /// Type template.
    #[serde(rename = "type")]
    pub kind_template: Option<String>,
    /// JSON pointer of the data (empty: the whole message).
    pub data: Option<String>,
    /// Keep each event as its topic's retained state.
    pub retain: Option<bool>,
    /// `live` (default) or `shadow`.
    pub mode: Option<String>,
    /// Most entries read and committed at once (default 100).
    pub batch: Option<usize>,
    /// The list a bid waits in while it is stored (default `{key}:processing`).
    pub processing_key: Option<String>,
    /// Fields of a queued bid (JSON pointers).
    pub fields: Option<BidFieldsConfig>,
    /// The end of a migration window (RFC 3339, `redis-stream`): until then
    /// a stream's `Last-Event-ID` may be an entry id of this Redis stream
    /// (as the SSE service being replaced sent them), and the stream starts
    /// right after the event that entry became (`migration.rs`).
    pub migration_until: Option<String>,
}

/// The fields of a queued bid, as JSON pointers (seed format by default:
/// `{"productId","bidderId","amount","timestamp"}`).
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BidFieldsConfig {
    /// The product's id (default `/productId`).
    pub product: Option<String>,
    /// The bidder's user id (default `/bidderId`).
    pub bidder: Option<String>,
    /// The amount, a positive integer (default `/amount`).
    pub amount: Option<String>,
}

/// What a source reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A Redis stream through a consumer group.
    RedisStream,
    /// Redis channels by pattern.
    RedisPubsub,
    /// A Redis list of bids.
    RedisListBids,
    /// An outbox table in the application's PostgreSQL.
    PostgresOutbox,
    /// A NATS JetStream stream through a durable pull consumer.
    NatsJetstream,
}

/// Whether a source publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SourceMode {
    /// Publishes what it reads.
    Live,
    /// Reads and maps, publishes nothing, records what it would have.
    Shadow,
}

/// The fields of a queued bid, checked.
#[derive(Debug, Clone)]
pub struct BidFields {
    /// The product's id.
    pub product: Template,
    /// The bidder.
    pub bidder: Template,
    /// JSON pointer of the amount.
    pub amount: String,
}

/// A checked source.
#[derive(Clone)]
pub struct Spec {
    /// Its name.
    pub name: String,
    /// Its kind.
    pub kind: Kind,
    /// The Redis it reads (may hold a password: never logged; empty for
    /// the kinds that read no Redis).
    pub redis_url: String,
    /// The Redis holding its lease (its own, else the node's `REDIS_URL`);
    /// `None`: a node without Redis (embedded) reads it alone, unleased.
    pub lease_url: Option<String>,
    /// The database or NATS URL of `postgres-outbox` and `nats-jetstream`
    /// (may hold a password: never logged).
    pub url: String,
    /// The outbox table (`postgres-outbox`) or the stream (`nats-jetstream`).
    pub table: String,
    /// The stream or list key (empty for pub/sub).
    pub key: String,
    /// The pub/sub pattern (streams and lists: their key, no captures).
    pub pattern: Pattern,
    /// The consumer group (streams).
    pub group: String,
    /// A new group reads the whole stream.
    pub start_all: bool,
    /// How messages map (bids: the tenant only).
    pub mapping: Mapping,
    /// Live or shadow.
    pub mode: SourceMode,
    /// Most entries per read.
    pub batch: usize,
    /// The processing list (bids).
    pub processing_key: String,
    /// Bid fields (bids).
    pub bid_fields: Option<BidFields>,
    /// The end of its migration window, in ms since the epoch.
    pub migration_until_ms: Option<i64>,
}

// The Redis URL may hold a password: Debug leaves it out.
impl std::fmt::Debug for Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spec")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

/// Checks the configured sources: `default_redis` is the node's `REDIS_URL`.
pub fn check(all: &[SourceConfig], default_redis: Option<&str>) -> Result<Vec<Spec>, String> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(all.len());
    for c in all {
        let spec = check_one(c, default_redis).map_err(|e| format!("source {:?}: {e}", c.name))?;
        if !seen.insert(spec.name.clone()) {
            return Err(format!("source {:?} is configured twice", spec.name));
        }
        out.push(spec);
    }
    Ok(out)
}

fn check_one(c: &SourceConfig, default_redis: Option<&str>) -> Result<Spec, String> {
    let name_ok = !c.name.is_empty()
        && c.name.len() <= 64
        && c.name
            .chars()
            .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-' || ch == '_');
    if !name_ok {
        return Err("`name` must be 1-64 characters of a-z, 0-9, '-' and '_'".into());
    }
    let kind = match c.kind.as_str() {
        "redis-stream" => Kind::RedisStream,
        "redis-pubsub" => Kind::RedisPubsub,
        "redis-list-bids" => Kind::RedisListBids,
        "postgres-outbox" => Kind::PostgresOutbox,
        "nats-jetstream" => Kind::NatsJetstream,
        other => {
            return Err(format!(
                "`kind` {other:?} is not one of redis-stream, redis-pubsub, redis-list-bids, \
                 postgres-outbox, nats-jetstream"
            ))
        }
    };
    let reads_redis = matches!(
        kind,
        Kind::RedisStream | Kind::RedisPubsub | Kind::RedisListBids
    );
    let (redis_url, lease_url) = if reads_redis {
        let u = match (c.redis_url.as_deref(), default_redis) {
            (Some(u), _) if !u.trim().is_empty() => u.trim().to_string(),
            (_, Some(u)) => u.to_string(),
            _ => return Err("`redis_url` is needed (the node has no REDIS_URL)".into()),
        };
        // One server, or a Redis Cluster's seed nodes separated by commas.
        let list = crate::backend::cluster::conn::urls(&u);
        if list.is_empty() || list.iter().any(|one| redis::Client::open(*one).is_err()) {
            return Err(
                "`redis_url` is not a Redis URL (or a comma-separated list of them)".into(),
            );
        }
        (u.clone(), Some(u))
    } else {
        if c.redis_url.is_some() {
            return Err("`redis_url` is for the Redis kinds".into());
        }
        (String::new(), default_redis.map(str::to_string))
    };
    if kind != Kind::PostgresOutbox && (c.database_url.is_some() || c.table.is_some()) {
        return Err("`database_url` and `table` are for postgres-outbox".into());
    }
    if kind != Kind::NatsJetstream && (c.nats_url.is_some() || c.stream.is_some()) {
        return Err("`nats_url` and `stream` are for nats-jetstream".into());
    }
    let (url, table) = match kind {
        Kind::PostgresOutbox => {
            let u = c
                .database_url
                .as_deref()
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .ok_or("`database_url` (the application's database) is needed")?;
            u.parse::<sqlx::postgres::PgConnectOptions>()
                .map_err(|_| "`database_url` is not a PostgreSQL URL")?;
            let t = c.table.as_deref().unwrap_or("switchyard_outbox");
            postgres_outbox::check_table(t)?;
            (u.to_string(), t.to_string())
        }
        Kind::NatsJetstream => {
            let u = c
                .nats_url
                .as_deref()
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .unwrap_or("nats://127.0.0.1:4222");
            u.parse::<async_nats::ServerAddr>()
                .map_err(|_| "`nats_url` is not a NATS URL")?;
            let s = c.stream.as_deref().ok_or("`stream` is needed")?;
            nats::check_stream_name(s)?;
            (u.to_string(), s.to_string())
        }
        _ => (String::new(), String::new()),
    };
    let mode = match c.mode.as_deref() {
        None | Some("live") => SourceMode::Live,
        Some("shadow") => SourceMode::Shadow,
        Some(m) => return Err(format!("`mode` {m:?} is neither live nor shadow")),
    };
    let key_of = |what: &str| -> Result<String, String> {
        match c.key.as_deref() {
            Some(k) if !k.is_empty() && k.len() <= 256 && !k.contains(char::is_control) => {
                Ok(k.to_string())
            }
            Some(_) => Err("`key` must be 1-256 characters, none a control character".into()),
            None => Err(format!("`key` (the {what}'s key) is needed")),
        }
    };
    let (key, pattern) = match kind {
        Kind::RedisPubsub | Kind::NatsJetstream => {
            if c.key.is_some() {
                return Err(
                    "`key` is for Redis streams and lists; this kind takes `pattern`".into(),
                );
            }
            let p = c.pattern.as_deref().ok_or("`pattern` is needed")?;
            if kind == Kind::NatsJetstream {
                nats::check_subject_pattern(p)?;
            }
            (String::new(), Pattern::new(p)?)
        }
        Kind::PostgresOutbox => {
            if c.key.is_some() || c.pattern.is_some() {
                return Err("an outbox takes `table`, not `key` or `pattern`".into());
            }
            (String::new(), Pattern::new(&table)?)
        }
        Kind::RedisStream | Kind::RedisListBids => {
            if c.pattern.is_some() {
                return Err("`pattern` is for pub/sub; a stream or list takes `key`".into());
            }
            let what = if kind == Kind::RedisStream {
                "stream"
            } else {
                "list"
            };
            let k = key_of(what)?;
            // A key's `*` is no wildcard here: nothing is captured.
            (k.clone(), Pattern::new(&k.replace('*', "_"))?)
        }
    };
    let preset = match (c.preset.as_deref(), kind) {
        (None, Kind::PostgresOutbox) => Some("outbox"),
        (p, _) => p,
    };
    // (tenant, topic, type, data) a preset gives where the config does not.
    let (preset_tenant, preset_topic, preset_type, preset_data) = match preset {
        None => (None, None, None, None),
        Some("json") => (None, None, Some("{/type}"), Some("")),
        Some("laravel") => (None, None, Some("{/event}"), Some("/data")),
        Some("event-payload") => (None, None, Some("{/event}"), Some("/payload")),
        Some("outbox") if kind == Kind::PostgresOutbox => (
            Some("{/tenant}"),
            Some("{/topic}"),
            Some("{/type}"),
            Some("/data"),
        ),
        Some("debezium") if kind == Kind::PostgresOutbox => (
            None,
            Some("{/aggregatetype}:{/aggregateid}"),
            Some("{/type}"),
            Some("/payload"),
        ),
        Some(p @ ("outbox" | "debezium")) => {
            return Err(format!("`preset` {p:?} is for postgres-outbox"))
        }
        Some(p) => {
            return Err(format!(
                "`preset` {p:?} is not one of json, laravel, event-payload, outbox, debezium"
            ))
        }
    };
    let caps = pattern.captures();
    let tenant = Template::new(
        c.tenant
            .as_deref()
            .or(preset_tenant)
            .ok_or("`tenant` is needed")?,
        caps,
    )
    .map_err(|e| format!("`tenant`: {e}"))?;
    let data = c
        .data
        .clone()
        .or(preset_data.map(str::to_string))
        .unwrap_or_default();
    if !data.is_empty() && !data.starts_with('/') {
        return Err(format!(
            "`data` {data:?} must be a JSON pointer (`/field`) or empty"
        ));
    }
    let (topic, kind_t, bid_fields) = if kind == Kind::RedisListBids {
        if c.topic.is_some() || c.kind_template.is_some() || c.preset.is_some() {
            return Err(
                "a bid queue takes no `topic`, `type` or `preset`: a bid's decision goes to its product's topic"
                    .into(),
            );
        }
        if mode == SourceMode::Shadow {
            return Err(
                "a bid queue cannot run in shadow mode: reading it takes the bids off the list"
                    .into(),
            );
        }
        let f = c.fields.clone().unwrap_or_default();
        let ptr = |v: Option<String>, d: &str| -> Result<String, String> {
            let p = v.unwrap_or_else(|| d.to_string());
            if p.starts_with('/') {
                Ok(p)
            } else {
                Err(format!("`fields`: {p:?} must be a JSON pointer (`/field`)"))
            }
        };
        let product = ptr(f.product, "/productId")?;
        let bidder = ptr(f.bidder, "/bidderId")?;
        let amount = ptr(f.amount, "/amount")?;
        let fields = BidFields {
            product: Template::new(&format!("{{{product}}}"), 0)?,
            bidder: Template::new(&format!("{{{bidder}}}"), 0)?,
            amount,
        };
        // Placeholders: a bid's events are the decision's own.
        (
            Template::new("global", 0)?,
            Template::new("bid", 0)?,
            Some(fields),
        )
    } else {
        if c.fields.is_some() || c.processing_key.is_some() {
            return Err("`fields` and `processing_key` are for bid queues".into());
        }
        let topic = Template::new(
            c.topic
                .as_deref()
                .or(preset_topic)
                .ok_or("`topic` is needed")?,
            caps,
        )
        .map_err(|e| format!("`topic`: {e}"))?;
        let kt = c
            .kind_template
            .as_deref()
            .or(preset_type)
            .ok_or("`type` (or a `preset`) is needed")?;
        let kind_t = Template::new(kt, caps).map_err(|e| format!("`type`: {e}"))?;
        if let Some(t) = kind_t.literal() {
            crate::event::validate_kind(t).map_err(|e| format!("`type`: {e}"))?;
        }
        (topic, kind_t, None)
    };
    if let Some(t) = tenant.literal() {
        crate::event::validate_slug(t).map_err(|e| format!("`tenant`: {e}"))?;
    }
    let start_all = match c.start.as_deref() {
        None | Some("new") => false,
        Some("all") => true,
        Some(s) => return Err(format!("`start` {s:?} is neither new nor all")),
    };
    if kind == Kind::PostgresOutbox && mode == SourceMode::Shadow {
        return Err("an outbox cannot run in shadow mode: its rows are deleted once read".into());
    }
    let streamed = matches!(kind, Kind::RedisStream | Kind::NatsJetstream);
    if c.start.is_some() && !streamed {
        return Err("`start` is for streams".into());
    }
    if c.group.is_some() && !streamed {
        return Err("`group` is for streams".into());
    }
    if kind == Kind::NatsJetstream {
        if let Some(g) = c.group.as_deref() {
            nats::check_stream_name(g).map_err(|e| format!("`group`: {e}"))?;
        }
    }
    let group = match (c.group.as_deref(), mode) {
        (Some(g), _) if !g.is_empty() && g.len() <= 128 && !g.contains(char::is_control) => {
            g.to_string()
        }
        (Some(_), _) => return Err("`group` must be 1-128 characters".into()),
        (None, SourceMode::Live) => "switchyard".into(),
        (None, SourceMode::Shadow) => "switchyard-shadow".into(),
    };
    let batch = c.batch.unwrap_or(100);
    if !(1..=1000).contains(&batch) {
        return Err("`batch` must be 1-1000".into());
    }
    let processing_key = match c.processing_key.as_deref() {
        Some(k) if !k.is_empty() && k != key => k.to_string(),
        Some(_) => return Err("`processing_key` must be set and differ from `key`".into()),
        None => format!("{key}:processing"),
    };
    let migration_until_ms = match c.migration_until.as_deref() {
        None => None,
        Some(_) if kind != Kind::RedisStream => {
            return Err("`migration_until` is for Redis streams (their entry ids)".into())
        }
        Some(_) if mode == SourceMode::Shadow => {
            return Err(
                "`migration_until` needs a live source: a shadow source stores no events to resume after"
                    .into(),
            )
        }
        Some(t) => Some(migration::parse_until(t).map_err(|e| format!("`migration_until`: {e}"))?),
    };
    Ok(Spec {
        name: c.name.clone(),
        kind,
        redis_url,
        lease_url,
        url,
        table,
        key,
        pattern,
        group,
        start_all,
        mapping: Mapping {
            tenant,
            topic,
            kind: kind_t,
            data,
            retain: c.retain.unwrap_or(false),
        },
        mode,
        batch,
        processing_key,
        bid_fields,
        migration_until_ms,
    })
}

/// Reads `SWITCHYARD_SOURCES`: a JSON array of sources.
pub fn parse_json(text: &str) -> Result<Vec<SourceConfig>, String> {
    serde_json::from_str(text)
        .map_err(|e| format!("SWITCHYARD_SOURCES is not a JSON array of sources: {e}"))
}

// ---------------------------------------------------------------------------
// Status, shadow records, metrics
// ---------------------------------------------------------------------------

/// What a source is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Connecting, or taking its lease.
    Starting,
    /// Reading (this node holds its lease).
    Running,
    /// Another node reads it; this one takes over when that one's lease
    /// runs out.
    Standby,
    /// Its last attempt failed (`last_error`); it tries again shortly.
    Failing,
    /// The node is shutting down.
    Stopped,
}

impl State {
    fn code(self) -> i64 {
        match self {
            State::Starting => 0,
            State::Running => 1,
            State::Standby => 2,
            State::Failing => 3,
            State::Stopped => 4,
        }
    }
}

/// One topic a shadow source would have published to.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ShadowTopic {
    /// Tenant.
    pub tenant: String,
    /// Topic (`*` for the topics past the first 1,000).
    pub topic: String,
    /// Events it would have published there.
    pub count: u64,
    /// The first few, as `{"type","data"}`.
    #[schema(value_type = Vec<Object>)]
    pub examples: Vec<serde_json::Value>,
}

#[derive(Default)]
struct Shadow {
    topics: BTreeMap<(String, String), (u64, Vec<serde_json::Value>)>,
}

/// The per-source counters (`switchyard_source_*{source}`).
type SourceMetrics = crate::metrics::SourceCounters;

/// A source's live status (what `/admin/sources` and `/ready` show).
pub struct Status {
    spec: Spec,
    state: Mutex<State>,
    last_error: Mutex<Option<String>>,
    shadow: Mutex<Shadow>,
    m: SourceMetrics,
}

impl Status {
    fn set(&self, s: State) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = s;
        self.m.state.set(s.code());
    }

    fn failed(&self, e: &str) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
        self.set(State::Failing);
    }

    /// Records the lag: entries not yet read and the age of the oldest.
    fn lag(&self, entries: Option<u64>, oldest_ms: Option<u64>) {
        if let Some(n) = entries {
            self.m.lag_entries.set(n.min(i64::MAX as u64) as i64);
        }
        if let Some(ms) = oldest_ms {
            self.m.lag_ms.set(ms.min(i64::MAX as u64) as i64);
        }
    }
}

/// What `GET /admin/sources` shows of one source.
#[derive(Debug, Serialize, ToSchema)]
pub struct SourceView {
    /// Its name.
    pub name: String,
    /// What it reads.
    pub kind: Kind,
    /// Live or shadow.
    pub mode: SourceMode,
    /// What it is doing on this node.
    pub state: State,
    /// The key or pattern it reads.
    pub reads: String,
    /// Messages read (this node, since it started).
    pub read: u64,
    /// Events published (live) or that would have been (shadow).
    pub published: u64,
    /// Messages sent to a dead-letter topic.
    pub dead_lettered: u64,
    /// Entries not yet read, where the kind can tell.
    pub lag_entries: i64,
    /// Age of the oldest entry not yet read, in ms, where the kind can tell.
    pub lag_ms: i64,
    /// The last failure, if any.
    pub last_error: Option<String>,
    /// Shadow mode: what it would have published, per topic.
    pub shadow: Vec<ShadowTopic>,
}

/// A source's state, for `/ready`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SourceState {
    /// Its name.
    pub name: String,
    /// Its state.
    pub state: State,
}

/// The node's sources; cheap to clone.
#[derive(Clone, Default)]
pub struct Sources {
    all: Arc<Vec<Arc<Status>>>,
}

impl Sources {
    /// Every source as `/admin/sources` shows it.
    pub fn views(&self) -> Vec<SourceView> {
        self.all
            .iter()
            .map(|s| {
                let shadow = s
                    .shadow
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .topics
                    .iter()
                    .map(|((tenant, topic), (count, ex))| ShadowTopic {
                        tenant: tenant.clone(),
                        topic: topic.clone(),
                        count: *count,
                        examples: ex.clone(),
                    })
                    .collect();
                SourceView {
                    name: s.spec.name.clone(),
                    kind: s.spec.kind,
                    mode: s.spec.mode,
                    state: *s.state.lock().unwrap_or_else(|p| p.into_inner()),
                    reads: match s.spec.kind {
                        Kind::RedisPubsub => s.spec.pattern.as_str().to_string(),
                        Kind::PostgresOutbox => s.spec.table.clone(),
                        Kind::NatsJetstream => {
                            format!("{} {}", s.spec.table, s.spec.pattern.as_str())
                        }
                        _ => s.spec.key.clone(),
                    },
                    read: s.m.read.get(),
                    published: s.m.published.get(),
                    dead_lettered: s.m.dead.get(),
                    lag_entries: s.m.lag_entries.get(),
                    lag_ms: s.m.lag_ms.get(),
                    last_error: s
                        .last_error
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .clone(),
                    shadow,
                }
            })
            .collect()
    }

    /// Each source's state, for `/ready`.
    pub fn states(&self) -> Vec<SourceState> {
        self.all
            .iter()
            .map(|s| SourceState {
                name: s.spec.name.clone(),
                state: *s.state.lock().unwrap_or_else(|p| p.into_inner()),
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------
// What a kind hands its messages to
// ---------------------------------------------------------------------------

/// One message a kind read, ready to be handed on.
pub struct Item {
    /// Where it came from, for the dead letter (`entry 1700-0`, `channel x`).
    pub origin: String,
    /// Its idempotency key within the source (a stream entry's id), for
    /// exactly-once kinds; `None`: at most once.
    pub key: Option<String>,
    /// The bytes as read (kept, truncated, in a dead letter).
    pub raw: Vec<u8>,
    /// The event, or why it has none.
    pub mapped: Result<Mapped, Reason>,
}

/// What every kind shares: where events go and what is counted.
pub struct Ctx {
    status: Arc<Status>,
    publisher: Publisher,
    store: Arc<dyn Store>,
    bids: Arc<dyn BidStore>,
    wakeups: Arc<dyn BidWakeups>,
    /// The node's metrics (a listed bid counts as a submitted bid).
    metrics: Arc<Metrics>,
    /// Known tenants (a slug is looked up once; unknown ones are asked
    /// again, as a tenant may be created later).
    tenants: Mutex<HashMap<String, ()>>,
    /// How long a source's keys are kept: re-reading an entry older than
    /// this may no longer find its key.
    key_window: Duration,
    /// The node's Redis key prefix (leases, node-level dead letters).
    prefix: String,
    /// This node's id (its lease).
    node: String,
}

/// Why a batch was not handed on (it is read again).
#[derive(Debug, thiserror::Error)]
pub enum Fault {
    /// The store refused or did not answer.
    #[error("store: {0}")]
    Store(#[from] crate::store::Error),
    /// The source's Redis.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The source's PostgreSQL.
    #[error("postgres: {0}")]
    Postgres(#[from] sqlx::Error),
    /// Something else, in words.
    #[error("{0}")]
    Other(String),
}

impl Ctx {
    fn spec(&self) -> &Spec {
        &self.status.spec
    }

    fn shadow(&self) -> bool {
        self.spec().mode == SourceMode::Shadow
    }

    /// Whether a tenant exists.
    async fn known(&self, tenant: &str) -> Result<bool, Fault> {
        if self
            .tenants
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(tenant)
        {
            return Ok(true);
        }
        let found = self.store.tenant(tenant).await?.is_some();
        if found {
            self.tenants
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(tenant.to_string(), ());
        }
        Ok(found)
    }

    /// The store key of an item's idempotency key: with a space, which no
    /// `Idempotency-Key` header holds, so a client's key never meets a
    /// source's.
    fn store_key(&self, key: &str) -> String {
        format!("src {} {key}", self.spec().name)
    }

    /// The dead letter of a message: on `tenant:{slug}~deadletters`.
    fn dead_letter(&self, tenant: &str, item: &Item, reason: &str) -> NewEvent {
        let raw = String::from_utf8_lossy(&item.raw[..item.raw.len().min(RAW_KEPT)]).into_owned();
        let data = serde_json::json!({
            "source": self.spec().name,
            "origin": item.origin,
            "reason": reason,
            "raw": raw,
            "truncated": item.raw.len() > RAW_KEPT,
        });
        NewEvent {
            tenant: tenant.to_string(),
            topic: dead_letter_topic(tenant),
            kind: DEAD_LETTER_KIND.into(),
            data: data.to_string(),
            retain: false,
        }
    }

    /// Hands a batch on, in order: each item's event (or dead letter) is
    /// committed (under its key, if it has one) before this returns `Ok`;
    /// only then may the kind acknowledge the batch. A message whose tenant
    /// is unknown (and so has no dead-letter topic) goes to the node-level
    /// dead letters (`node_dead`). In shadow mode nothing is published:
    /// each would-be event is recorded.
    pub async fn commit(
        &self,
        items: Vec<Item>,
        node_dead: &dyn NodeDeadLetters,
    ) -> Result<(), Fault> {
        self.status.m.read.add(items.len() as u64);
        // Decide each item's event first (tenant look-ups), then submit them
        // all at once, in order, so they share the store's group commit.
        let mut writes: Vec<(Option<String>, NewEvent, bool)> = Vec::with_capacity(items.len());
        for item in &items {
            let (tenant_ok, reason) = match &item.mapped {
                Ok(m) => match self.known(&m.tenant).await? {
                    true => (true, None),
                    false => (false, Some(format!("unknown tenant {:?}", m.tenant))),
                },
                Err(r) => (false, Some(r.clone())),
            };
            match (&item.mapped, reason) {
                (Ok(m), None) if tenant_ok => {
                    if self.shadow() {
                        self.record_shadow(m);
                        continue;
                    }
                    let e = NewEvent {
                        tenant: m.tenant.clone(),
                        topic: m.topic.clone(),
                        kind: m.kind.clone(),
                        data: m.data.clone(),
                        retain: self.spec().mapping.retain,
                    };
                    writes.push((item.key.clone(), e, false));
                }
                (_, reason) => {
                    let reason = reason.unwrap_or_default();
                    self.status.m.dead.inc();
                    // The tenant this message names, if it names one that exists.
                    let tenant = match self.tenant_of(item).await? {
                        Some(t) => t,
                        None => {
                            if !self.shadow() {
                                node_dead
                                    .dead_letter(
                                        &self.spec().name,
                                        &item.origin,
                                        &reason,
                                        &item.raw,
                                    )
                                    .await?;
                            }
                            tracing::warn!(source = %self.spec().name, origin = %item.origin, %reason,
                                "source message dead-lettered (no tenant)");
                            continue;
                        }
                    };
                    tracing::debug!(source = %self.spec().name, origin = %item.origin, %reason,
                        "source message dead-lettered");
                    if self.shadow() {
                        continue;
                    }
                    writes.push((
                        item.key.clone(),
                        self.dead_letter(&tenant, item, &reason),
                        true,
                    ));
                }
            }
        }
        let since_ms = crate::event::now_ms() - self.key_window.as_millis() as i64;
        let mut pending: FuturesOrdered<_> = writes
            .into_iter()
            .map(|(key, event, dead)| {
                let publisher = self.publisher.clone();
                let key = key.map(|k| PublishKey {
                    tenant: event.tenant.clone(),
                    hash: hash(&[k.as_bytes()]),
                    key: self.store_key(&k),
                    since_ms,
                });
                async move {
                    let stored = match key {
                        Some(key) => match publisher.publish_keyed(key, vec![event]).await? {
                            Keyed::New(s) => s.len(),
                            Keyed::Repeated(..) => 0,
                        },
                        None => publisher.publish(vec![event]).await?.len(),
                    };
                    Ok::<_, crate::store::Error>((stored, dead))
                }
            })
            .collect();
        let mut first_error = None;
        while let Some(r) = pending.next().await {
            match r {
                Ok((n, false)) => self.status.m.published.add(n as u64),
                Ok((_, true)) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// The existing tenant a bad message belongs to, if the mapping can
    /// tell: its tenant template rendered (a literal tenant always can).
    async fn tenant_of(&self, item: &Item) -> Result<Option<String>, Fault> {
        let t = match &item.mapped {
            Ok(m) => Some(m.tenant.clone()),
            Err(_) => {
                let msg = serde_json::from_slice::<serde_json::Value>(&item.raw).ok();
                let caps: Vec<&str> = Vec::new();
                self.spec()
                    .mapping
                    .tenant
                    .literal()
                    .map(str::to_string)
                    .or_else(|| {
                        msg.as_ref()
                            .and_then(|m| self.spec().mapping.tenant.render(&caps, Some(m)).ok())
                    })
            }
        };
        match t {
            Some(t) if crate::event::validate_slug(&t).is_ok() && self.known(&t).await? => {
                Ok(Some(t))
            }
            _ => Ok(None),
        }
    }

    fn record_shadow(&self, m: &Mapped) {
        self.status.m.published.inc();
        let mut s = self.status.shadow.lock().unwrap_or_else(|p| p.into_inner());
        let full = s.topics.len() >= SHADOW_TOPICS;
        let k = (m.tenant.clone(), m.topic.clone());
        let k = if full && !s.topics.contains_key(&k) {
            (m.tenant.clone(), "*".to_string())
        } else {
            k
        };
        let entry = s.topics.entry(k).or_default();
        entry.0 += 1;
        if entry.1.len() < SHADOW_EXAMPLES {
            let data = serde_json::from_str::<serde_json::Value>(&m.data).unwrap_or_default();
            entry
                .1
                .push(serde_json::json!({"type": m.kind, "data": data}));
        }
    }
}

/// The dead-letter topic of a tenant.
pub fn dead_letter_topic(tenant: &str) -> String {
    crate::event::Derived::DeadLetters.of(&format!("tenant:{tenant}"))
}

/// A hex SHA-256 of the parts.
fn hash(parts: &[&[u8]]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Where a bad message with no known tenant goes: kept by the source's own
/// system (for Redis, a capped stream next to the lease), never dropped.
#[async_trait::async_trait]
pub trait NodeDeadLetters: Send + Sync {
    /// Keeps it; `Ok` once it is kept.
    async fn dead_letter(
        &self,
        source: &str,
        origin: &str,
        reason: &str,
        raw: &[u8],
    ) -> Result<(), Fault>;
}

// ---------------------------------------------------------------------------
// The kinds and the runner
// ---------------------------------------------------------------------------

/// One kind of source. `run` reads while `owned` is not cancelled (this
/// node holds the source's lease), hands each batch to `ctx.commit` and
/// acknowledges it only after that returned `Ok`; it returns on
/// cancellation, or with the error that stopped it (the runner records it,
/// waits and runs it again, so a kind need not retry by itself).
#[async_trait::async_trait]
trait Source: Send + Sync + 'static {
    async fn run(&self, ctx: &Ctx, owned: &CancellationToken) -> Result<(), Fault>;
}

/// What starting the sources needs.
pub struct Deps {
    /// Appends events.
    pub publisher: Publisher,
    /// Tenants.
    pub store: Arc<dyn Store>,
    /// Bids.
    pub bids: Arc<dyn BidStore>,
    /// Wakes a product's bid worker.
    pub wakeups: Arc<dyn BidWakeups>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// How long a source's keys are kept.
    pub key_window: Duration,
    /// The node's Redis key prefix.
    pub prefix: String,
    /// This node's id.
    pub node: String,
}

/// How long a lease lasts without a refresh (a dead owner's source is taken
/// over within this, plus a refresh period).
const LEASE: Duration = Duration::from_secs(5);
/// A failed source is started again after this.
const RETRY: Duration = Duration::from_secs(1);

/// Starts every configured source on tasks of their own.
pub fn start(specs: &[Spec], deps: Deps, stop: CancellationToken) -> Sources {
    let mut all = Vec::with_capacity(specs.len());
    for spec in specs {
        let m = deps.metrics.source(&spec.name);
        let status = Arc::new(Status {
            spec: spec.clone(),
            state: Mutex::new(State::Starting),
            last_error: Mutex::new(None),
            shadow: Mutex::new(Shadow::default()),
            m,
        });
        let ctx = Arc::new(Ctx {
            status: status.clone(),
            publisher: deps.publisher.clone(),
            store: deps.store.clone(),
            bids: deps.bids.clone(),
            wakeups: deps.wakeups.clone(),
            metrics: deps.metrics.clone(),
            tenants: Mutex::new(HashMap::new()),
            key_window: deps.key_window,
            prefix: deps.prefix.clone(),
            node: deps.node.clone(),
        });
        let source: Arc<dyn Source> = match spec.kind {
            Kind::RedisStream => Arc::new(redis_stream::RedisStream),
            Kind::RedisPubsub => Arc::new(redis_pubsub::RedisPubsub),
            Kind::RedisListBids => Arc::new(redis_list::RedisListBids),
            Kind::PostgresOutbox => Arc::new(postgres_outbox::PostgresOutbox),
            Kind::NatsJetstream => Arc::new(nats::NatsJetstream),
        };
        tokio::spawn(runner(source, ctx, stop.clone()));
        all.push(status);
    }
    Sources { all: Arc::new(all) }
}

/// Runs one source for as long as the node does: takes the lease, runs the
/// kind while it holds it, and again after a failure.
async fn runner(source: Arc<dyn Source>, ctx: Arc<Ctx>, stop: CancellationToken) {
    let status = ctx.status.clone();
    let name = status.spec.name.clone();
    loop {
        if stop.is_cancelled() {
            break;
        }
        // A node without Redis (embedded mode) is the only one: no lease.
        let lease = match status.spec.lease_url.as_deref() {
            None => None,
            Some(url) => {
                match lease::Lease::connect(url, &ctx.prefix, &name, &ctx.node, LEASE).await {
                    Ok(l) => Some(l),
                    Err(e) => {
                        status.failed(&format!("cannot connect to the lease's Redis: {e}"));
                        tracing::warn!(source = %name, error = %e, "source cannot connect");
                        pause(&stop, RETRY).await;
                        continue;
                    }
                }
            }
        };
        if let Some(lease) = &lease {
            match lease.acquire().await {
                Ok(true) => {}
                Ok(false) => {
                    status.set(State::Standby);
                    pause(&stop, LEASE / 5).await;
                    continue;
                }
                Err(e) => {
                    status.failed(&format!("lease: {e}"));
                    pause(&stop, RETRY).await;
                    continue;
                }
            }
        }
        let owned = stop.child_token();
        let keeper = lease.clone().map(|l| tokio::spawn(l.keep(owned.clone())));
        status.set(State::Running);
        tracing::info!(source = %name, "source running on this node");
        let result = source.run(&ctx, &owned).await;
        owned.cancel();
        if let Some(k) = keeper {
            let _ = k.await;
        }
        if let Some(lease) = &lease {
            lease.release().await;
        }
        match result {
            Ok(()) if stop.is_cancelled() => break,
            Ok(()) => status.set(State::Standby),
            Err(e) => {
                status.failed(&e.to_string());
                tracing::warn!(source = %name, error = %e, "source failed; starting it again");
                pause(&stop, RETRY).await;
            }
        }
    }
    status.set(State::Stopped);
}

async fn pause(stop: &CancellationToken, d: Duration) {
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = tokio::time::sleep(d) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(json: serde_json::Value) -> Result<Vec<Spec>, String> {
        let c: Vec<SourceConfig> = serde_json::from_value(json).map_err(|e| e.to_string())?;
        check(&c, Some("redis://127.0.0.1:6379"))
    }

    #[test]
    fn a_config_error_names_the_source_and_the_field() {
        let e = cfg(
            serde_json::json!([{"name": "s", "kind": "redis-pubsub", "pattern": "sse:product:*",
            "tenant": "acme", "topic": "product:{2}", "type": "bid"}]),
        )
        .expect_err("two captures asked of one");
        assert!(e.contains("source \"s\"") && e.contains("`topic`"), "{e}");
        let e = cfg(serde_json::json!([{"name": "s", "kind": "kafka"}])).expect_err("kind");
        assert!(e.contains("kind"), "{e}");
        let e = cfg(
            serde_json::json!([{"name": "b", "kind": "redis-list-bids", "key": "bids:pending",
            "tenant": "acme", "mode": "shadow"}]),
        )
        .expect_err("shadow list");
        assert!(e.contains("shadow"), "{e}");
        assert!(cfg(
            serde_json::json!([{"name": "s", "kind": "redis-stream", "key": "k",
            "tenant": "acme", "topic": "match:{/payload/matchId}", "preset": "event-payload"}])
        )
        .is_ok());
        let e = cfg(
            serde_json::json!([{"name": "s", "kind": "redis-stream", "key": "k",
            "tenant": "acme", "topic": "t:1", "type": "a", "surprise": 1}]),
        )
        .expect_err("unknown field");
        assert!(e.contains("surprise"), "{e}");
    }

    #[test]
    fn outbox_and_jetstream_configs_are_checked() {
        let ok = cfg(serde_json::json!([{"name": "o", "kind": "postgres-outbox",
            "database_url": "postgres://app@db/shop"}]))
        .expect("the outbox preset gives tenant, topic and type");
        assert_eq!(ok[0].table, "switchyard_outbox");
        assert_eq!(ok[0].lease_url.as_deref(), Some("redis://127.0.0.1:6379"));
        let e = cfg(serde_json::json!([{"name": "o", "kind": "postgres-outbox"}]))
            .expect_err("no database");
        assert!(e.contains("database_url"), "{e}");
        let e = cfg(serde_json::json!([{"name": "o", "kind": "postgres-outbox",
            "database_url": "postgres://db/x", "table": "x; drop table y"}]))
        .expect_err("table");
        assert!(e.contains("`table`"), "{e}");
        let e = cfg(serde_json::json!([{"name": "o", "kind": "postgres-outbox",
            "database_url": "postgres://db/x", "preset": "debezium"}]))
        .expect_err("debezium rows name no tenant");
        assert!(e.contains("`tenant`"), "{e}");
        let e = cfg(serde_json::json!([{"name": "o", "kind": "postgres-outbox",
            "database_url": "postgres://db/x", "mode": "shadow"}]))
        .expect_err("shadow outbox");
        assert!(e.contains("shadow"), "{e}");
        assert!(
            cfg(serde_json::json!([{"name": "n", "kind": "nats-jetstream",
            "stream": "ORDERS", "pattern": "orders.*", "tenant": "acme",
            "topic": "order:{1}", "type": "order.updated"}]))
            .is_ok()
        );
        let e = cfg(serde_json::json!([{"name": "n", "kind": "nats-jetstream",
            "stream": "ORDERS", "pattern": "orders.>", "tenant": "acme",
            "topic": "order:x", "type": "t"}]))
        .expect_err("`>`");
        assert!(e.contains("`pattern`"), "{e}");
        let e = cfg(serde_json::json!([{"name": "n", "kind": "nats-jetstream",
            "stream": "ORDERS", "pattern": "orders.*", "tenant": "acme",
            "topic": "order:{1}", "type": "t", "redis_url": "redis://x"}]))
        .expect_err("redis_url");
        assert!(e.contains("redis_url"), "{e}");
        let e = cfg(
            serde_json::json!([{"name": "s", "kind": "redis-stream", "key": "k",
            "tenant": "acme", "topic": "t:1", "type": "a", "table": "x"}]),
        )
        .expect_err("table on a stream");
        assert!(e.contains("postgres-outbox"), "{e}");
    }
}
