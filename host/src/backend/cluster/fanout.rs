//! `RedisFanout`: cluster mode's bus, Redis Streams sharded by tenant.
//!
//! A tenant belongs to one of `SWITCHYARD_BUS_SHARDS` shards (S) by a stable
//! hash of its name that load balancers can compute too ([`shard_of`]), so
//! its events stay in one stream, in commit order. After a commit, the publishing node delivers to its own hub
//! at once and queues the events for a relay task, which appends them as one
//! entry per shard to that shard's stream (approximately capped): with one
//! shard `{prefix}:fanout`, as before shards existed, else
//! `{prefix}:fanout:{S.i.n}`, whose hash tag is chosen so the shards' slots
//! spread evenly over a Redis Cluster's 16,384 (so over its masters, which
//! hold even ranges of slots). With several independent servers in
//! `REDIS_URL`, shard `i` is on server `i mod n`.
//!
//! A node reads only the shards of the tenants it has streams of: the hub
//! tells it when a tenant's first subscriber comes and its last goes
//! ([`TenantInterest`]). A shard's reader starts at the shard's newest entry
//! and then asks the hub for a tail check, so what was committed before it
//! took its place is read from the store; it stops [`LINGER`] after its last
//! tenant left (a reconnecting client does not make it start over). Each
//! reader remembers its position across reconnects and hands other nodes'
//! events to the hub, which puts them in id order and fills gaps from
//! Postgres: an entry lost with a Redis restart or failover, or trimmed
//! before a slow node read it, delays an event but never loses it.
//!
//! Entry fields: `n` (publishing node id), `b` (events, one per line, each
//! `seq \t tenant \t topic \t type \t json`; names are validated to hold no
//! tab or newline and compact JSON holds no raw control character) and `t`
//! (each line's commit time in ms, comma-separated, for the commit → delivery
//! lag; an entry without it is read as before).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::streams::{StreamReadOptions, StreamReadReply};
use redis::AsyncCommands;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::conn::{slot, BusServer, RedisConn, SLOTS};
use crate::bus::hub::{Hub, TenantInterest};
use crate::bus::Fanout;
use crate::event::StoredEvent;
use crate::metrics::Metrics;

/// Approximate length cap of each shard's stream.
const STREAM_MAXLEN: usize = 100_000;
/// How long one `XREAD` blocks.
const BLOCK_MS: usize = 2_000;
/// How long a shard is still read after its last tenant's last stream here
/// closed.
pub const LINGER: Duration = Duration::from_secs(30);
/// Most bytes the relay puts in one round of appends.
const RELAY_BYTES: usize = 256 * 1024;

/// The shard of a tenant: the key nginx's `hash $arg_tenant` directive
/// computes (`(crc32(tenant) >> 16) & 0x7fff`, as Cache::Memcached did),
/// modulo the shard count. Not `std`'s hasher, whose output may change
/// between Rust releases (every node, of every version, must agree), and
/// this one so a load balancer can compute it: nginx's `hash` over N
/// upstreams, or HAProxy's `crc32,div(65536),and(32767),mod(N)`, sends a
/// tenant to upstream `shard mod N` when N divides the shard count, so each
/// upstream's nodes read only their own shards (`deploy/lb/`).
pub fn shard_of(tenant: &str, shards: u16) -> u16 {
    let key = (crc32fast::hash(tenant.as_bytes()) >> 16) & 0x7fff;
    (key % u32::from(shards.max(1))) as u16
}

/// The stream key of each shard. One shard keeps the unsharded key. With
/// more, shard `i`'s hash tag is the first `S.i.n` (n = 0, 1, …) whose slot
/// falls in the `i`-th of S equal ranges of the 16,384 slots.
pub fn shard_keys(prefix: &str, shards: u16) -> Vec<String> {
    if shards <= 1 {
        return vec![format!("{prefix}:fanout")];
    }
    let s = u32::from(shards);
    (0..s)
        .map(|i| {
            let lo = i * u32::from(SLOTS) / s;
            let hi = (i + 1) * u32::from(SLOTS) / s;
            let tag = (0u32..)
                .map(|n| format!("{s}.{i}.{n}"))
                .find(|tag| (lo..hi).contains(&u32::from(slot(tag))))
                .expect("some tag hashes into every range");
            format!("{prefix}:fanout:{{{tag}}}")
        })
        .collect()
}

/// Redis Stream fan-out.
pub struct RedisFanout {
    hub: Hub,
    /// Per server, its relay (shard `i` on server `i mod n`).
    relays: Vec<mpsc::UnboundedSender<Lines>>,
    shards: u16,
}

impl RedisFanout {
    fn relay(&self, lines: Lines) {
        let _ = self.relays[usize::from(lines.shard) % self.relays.len()].send(lines);
    }
}

/// Encoded events of one shard, and their commit times.
struct Lines {
    shard: u16,
    body: String,
    ts: String,
}

impl Lines {
    fn new(shard: u16) -> Lines {
        Lines {
            shard,
            body: String::new(),
            ts: String::new(),
        }
    }

    fn push(&mut self, e: &StoredEvent) {
        use std::fmt::Write;
        if !self.body.is_empty() {
            self.body.push('\n');
            self.ts.push(',');
        }
        encode(e, &mut self.body);
        let _ = write!(self.ts, "{}", e.ts);
    }

    fn append(&mut self, other: Lines) {
        if self.body.is_empty() {
            *self = other;
            return;
        }
        self.body.push('\n');
        self.body.push_str(&other.body);
        self.ts.push(',');
        self.ts.push_str(&other.ts);
    }
}

impl RedisFanout {
    /// Starts the relay, and the readers of the shards of the tenants the
    /// hub has subscribers of, as they come and go.
    pub fn start(
        redis: RedisConn,
        shards: u16,
        hub: Hub,
        metrics: Arc<Metrics>,
        node: String,
        stop: CancellationToken,
    ) -> RedisFanout {
        let shards = shards.max(1);
        let keys = shard_keys(&redis.prefix, shards);
        let servers: Vec<BusServer> = (0..shards)
            .map(|i| redis.bus_servers[usize::from(i) % redis.bus_servers.len()].clone())
            .collect();
        // A relay per server: one that does not answer holds up only its
        // own shards' appends.
        let relays = (0..redis.bus_servers.len())
            .map(|_| {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(relay(
                    rx,
                    servers.clone(),
                    keys.clone(),
                    node.clone(),
                    metrics.clone(),
                ));
                tx
            })
            .collect();
        let (itx, irx) = mpsc::unbounded_channel();
        hub.watch_tenants(Arc::new(Interest { tx: itx, shards }));
        tokio::spawn(
            Readers {
                servers,
                keys,
                node,
                hub: hub.clone(),
                metrics,
                stop,
                tenants: vec![0; usize::from(shards)],
                running: HashMap::new(),
            }
            .run(irx),
        );
        RedisFanout {
            hub,
            relays,
            shards,
        }
    }
}

impl Fanout for RedisFanout {
    fn publish(&self, events: &[StoredEvent]) {
        self.hub.deliver(events.to_vec());
        if self.shards == 1 {
            let mut lines = Lines::new(0);
            for e in events {
                lines.push(e);
            }
            self.relay(lines);
            return;
        }
        // A batch is usually one tenant's: a few shards at most.
        let mut by_shard: Vec<Lines> = Vec::new();
        for e in events {
            let s = shard_of(&e.tenant, self.shards);
            match by_shard.iter_mut().find(|l| l.shard == s) {
                Some(l) => l.push(e),
                None => {
                    let mut l = Lines::new(s);
                    l.push(e);
                    by_shard.push(l);
                }
            }
        }
        for l in by_shard {
            self.relay(l);
        }
    }
}

fn encode(e: &StoredEvent, out: &mut String) {
    use std::fmt::Write;
    let _ = write!(
        out,
        "{}\t{}\t{}\t{}\t{}",
        e.seq, e.tenant, e.topic, e.kind, e.json
    );
}

fn decode(line: &str, ts: i64) -> Option<StoredEvent> {
    let mut parts = line.splitn(5, '\t');
    let seq = parts.next()?.parse().ok()?;
    let tenant = parts.next()?;
    let topic = parts.next()?;
    let kind = parts.next()?;
    let json = parts.next()?;
    Some(StoredEvent {
        seq,
        tenant: tenant.into(),
        topic: topic.into(),
        kind: kind.into(),
        json: json.into(),
        ts,
    })
}

/// An entry's events, each with its commit time (now, for an entry written
/// without times).
fn decode_entry(body: &str, ts: Option<&str>) -> Vec<StoredEvent> {
    let now = crate::event::now_ms();
    let mut times = ts.into_iter().flat_map(|t| t.split(','));
    body.lines()
        .filter_map(|line| {
            let t = times.next().and_then(|t| t.parse().ok()).unwrap_or(now);
            decode(line, t)
        })
        .collect()
}

/// Appends one server's queued events, one entry per shard per round, the
/// round's appends to different shards at once.
async fn relay(
    mut rx: mpsc::UnboundedReceiver<Lines>,
    servers: Vec<BusServer>,
    keys: Vec<String>,
    node: String,
    metrics: Arc<Metrics>,
) {
    let mut failing = false;
    while let Some(first) = rx.recv().await {
        let mut size = first.body.len();
        let mut round: Vec<Lines> = vec![first];
        while size < RELAY_BYTES {
            match rx.try_recv() {
                Ok(more) => {
                    size += more.body.len();
                    match round.iter_mut().find(|l| l.shard == more.shard) {
                        Some(l) => l.append(more),
                        None => round.push(more),
                    }
                }
                Err(_) => break,
            }
        }
        let appends = round.into_iter().map(|lines| {
            let shard = usize::from(lines.shard);
            let mut conn = servers[shard].conn.clone();
            let key = &keys[shard];
            let node = &node;
            async move {
                redis::cmd("XADD")
                    .arg(key)
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(STREAM_MAXLEN)
                    .arg("*")
                    .arg("n")
                    .arg(node)
                    .arg("b")
                    .arg(&lines.body)
                    .arg("t")
                    .arg(&lines.ts)
                    .query_async::<String>(&mut conn)
                    .await
            }
        });
        let results = futures_util::future::join_all(appends).await;
        let error = results.into_iter().find_map(Result::err);
        match error {
            None if failing => {
                failing = false;
                tracing::info!("fan-out publishing to Redis recovered");
            }
            None => {}
            Some(e) => {
                metrics.fanout_publish_errors.inc();
                // Other nodes' tail checks deliver these from the store, and
                // whatever queued meanwhile too: it is dropped rather than
                // kept for a Redis that is gone or cut off (each attempt
                // waits for the response timeout), so a long outage neither
                // grows this queue nor delays the events after it.
                while rx.try_recv().is_ok() {
                    metrics.fanout_publish_errors.inc();
                }
                if !failing {
                    tracing::warn!(error = %e, "fan-out publish to Redis failed; other nodes will catch up from the store");
                    failing = true;
                }
            }
        }
    }
}

/// The hub's tenants, as shard joins and leaves.
struct Interest {
    tx: mpsc::UnboundedSender<(u16, bool)>,
    shards: u16,
}

impl TenantInterest for Interest {
    fn changed(&self, tenant: &str, present: bool) {
        let _ = self.tx.send((shard_of(tenant, self.shards), present));
    }
}

/// The shards' readers, started and stopped as the hub's tenants come and
/// go.
struct Readers {
    servers: Vec<BusServer>,
    keys: Vec<String>,
    node: String,
    hub: Hub,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
    /// Per shard, its tenants with subscribers here.
    tenants: Vec<u32>,
    /// The running readers: their stop, and since when their shard has had
    /// no tenant here.
    running: HashMap<u16, (CancellationToken, Option<Instant>)>,
}

impl Readers {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<(u16, bool)>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return,
                change = rx.recv() => match change {
                    Some((shard, present)) => self.change(shard, present),
                    None => return,
                },
                _ = tick.tick() => self.stop_idle(),
            }
        }
    }

    fn change(&mut self, shard: u16, present: bool) {
        let n = &mut self.tenants[usize::from(shard)];
        if present {
            *n += 1;
        } else {
            *n = n.saturating_sub(1);
        }
        let empty = *n == 0;
        match self.running.get_mut(&shard) {
            Some((_, idle)) => *idle = empty.then(Instant::now),
            None if !empty => {
                let stop = self.stop.child_token();
                let i = usize::from(shard);
                tokio::spawn(reader(
                    shard,
                    self.servers[i].clone(),
                    self.keys[i].clone(),
                    self.node.clone(),
                    self.hub.clone(),
                    self.metrics.clone(),
                    stop.clone(),
                ));
                self.running.insert(shard, (stop, None));
            }
            None => {}
        }
    }

    fn stop_idle(&mut self) {
        self.running.retain(|_, (stop, idle)| {
            let keep = idle.is_none_or(|since| since.elapsed() < LINGER);
            if !keep {
                stop.cancel();
            }
            keep
        });
    }
}

async fn reader(
    shard: u16,
    server: BusServer,
    key: String,
    node: String,
    hub: Hub,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let m = metrics.bus_shard(shard);
    // Added and taken back (not set): a stopped reader may still be
    // ending while its shard's next one starts.
    m.reading.add(1);
    let reading = m.reading.clone();
    let _reading = scopeguard(move || reading.add(-1));
    let mut last_id = "$".to_string();
    let mut backoff = Duration::from_millis(100);
    loop {
        let conn = tokio::select! {
            _ = stop.cancelled() => return,
            c = server.dedicated.connect(Duration::from_millis(BLOCK_MS as u64 + 3_000)) => c,
        };
        let mut conn = match conn {
            Ok(c) => {
                backoff = Duration::from_millis(100);
                c
            }
            Err(e) => {
                tracing::debug!(shard, error = %e, "fan-out reader cannot reach Redis");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        if last_id == "$" {
            // Start after whatever is there now; the tail check asked for
            // once there covers anything committed before this point.
            let newest: redis::RedisResult<redis::streams::StreamRangeReply> =
                conn.xrevrange_count(&key, "+", "-", 1).await;
            match newest {
                Ok(r) => {
                    last_id = r
                        .ids
                        .first()
                        .map(|e| e.id.clone())
                        .unwrap_or_else(|| "0-0".into());
                    hub.check_tail();
                }
                Err(e) => {
                    tracing::debug!(shard, error = %e, "fan-out reader cannot read its shard");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    continue;
                }
            }
        }
        let opts = StreamReadOptions::default().block(BLOCK_MS).count(1_000);
        loop {
            let keys = [key.as_str()];
            let ids = [last_id.as_str()];
            let read: redis::RedisResult<Option<StreamReadReply>> = tokio::select! {
                _ = stop.cancelled() => return,
                r = conn.xread_options(&keys, &ids, &opts) => r,
            };
            let reply = match read {
                Ok(Some(r)) => r,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(shard, error = %e, "fan-out reader lost Redis; reconnecting");
                    break;
                }
            };
            for stream in reply.keys {
                for entry in stream.ids {
                    m.entries.inc();
                    let body: Option<String> = entry.get("b");
                    let ts: Option<String> = entry.get("t");
                    let from: Option<String> = entry.get("n");
                    m.bytes.add(
                        (entry.id.len()
                            + body.as_ref().map_or(0, String::len)
                            + ts.as_ref().map_or(0, String::len)
                            + from.as_ref().map_or(0, String::len)) as u64,
                    );
                    if let Some(ms) = entry
                        .id
                        .split_once('-')
                        .and_then(|(ms, _)| ms.parse::<i64>().ok())
                    {
                        m.lag_ms.set((crate::event::now_ms() - ms).max(0));
                    }
                    last_id = entry.id;
                    if from.as_deref() == Some(node.as_str()) {
                        continue;
                    }
                    let Some(body) = body else {
                        continue;
                    };
                    hub.deliver(decode_entry(&body, ts.as_deref()));
                }
            }
        }
    }
}

/// Runs `f` when dropped.
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format_round_trips() {
        let e = StoredEvent {
            seq: 42,
            tenant: "acme".into(),
            topic: "product:1".into(),
            kind: "bid.accepted".into(),
            json: r#"{"id":42,"data":{"note":"tab\tand\nnewline"}}"#
                .replace('\t', "\\t")
                .replace('\n', "\\n"),
            ts: 1_700_000_000_123,
        };
        let mut lines = Lines::new(0);
        lines.push(&e);
        lines.push(&StoredEvent {
            seq: 43,
            ..e.clone()
        });
        let back = decode_entry(&lines.body, Some(&lines.ts));
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].seq, 42);
        assert_eq!(back[1].seq, 43);
        assert_eq!(&*back[0].tenant, "acme");
        assert_eq!(back[0].topic, "product:1");
        assert_eq!(back[0].kind, "bid.accepted");
        assert_eq!(back[0].json, e.json);
        assert_eq!(back[0].ts, e.ts);
        // An entry of a node from before commit times were carried.
        let old = decode_entry(&lines.body, None);
        assert_eq!(old.len(), 2);
        assert!(old[0].ts > e.ts);
    }

    #[test]
    fn tenants_spread_over_shards_and_stay_put() {
        assert_eq!(shard_of("acme", 1), 0);
        // A fixed value: a change here would move every deployment's
        // tenants to other shards.
        assert_eq!(shard_of("acme", 16), 4);
        assert_eq!(shard_of("acme", 128), 68);
        let mut counts = [0u32; 16];
        for i in 0..16_000 {
            counts[usize::from(shard_of(&format!("tenant-{i}"), 16))] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn shard_keys_spread_over_the_slots() {
        assert_eq!(shard_keys("sy", 1), vec!["sy:fanout".to_string()]);
        for shards in [2u16, 3, 16, 128] {
            let keys = shard_keys("sy", shards);
            assert_eq!(keys.len(), usize::from(shards));
            for (i, k) in keys.iter().enumerate() {
                let s = u32::from(slot(k));
                let n = u32::from(shards);
                let i = i as u32;
                assert!(
                    s >= i * 16_384 / n && s < (i + 1) * 16_384 / n,
                    "{k} is in slot {s}"
                );
            }
        }
    }
}
