//! `RedisFanout`: cluster mode's bus, sharded pub/sub by tenant.
//!
//! A tenant belongs to one of `SWITCHYARD_BUS_SHARDS` shards (S) by a stable
//! hash of its name that load balancers can compute too ([`shard_of`]), so
//! its events stay on one channel, in commit order. After a commit, the
//! publishing node delivers to its own hub at once and queues the events
//! for its relay (one per Redis server), which sends them as one message per
//! shard (`SPUBLISH`) to that shard's channel: with one shard
//! `{prefix}:fanout`, else `{prefix}:fanout:{S.i.n}`, whose hash tag is
//! chosen so the shards' slots spread evenly over a Redis Cluster's 16,384
//! (so over its masters, which hold even ranges of slots). With several
//! independent servers in `REDIS_URL`, shard `i` is on server `i mod n`.
//!
//! Why pub/sub and not a Redis Stream (what the bus was until the shards
//! came): measured with the bus's traffic, a stream entry read by 3 or 6
//! readers (`XADD`, `XREAD BLOCK`) cost Redis 3.0–3.2× the CPU of a
//! published message (docs/benchmarks.md, "The sharded bus"), and exactness
//! is the hubs' either way: Postgres is the record, a stream's entries were
//! lost with a failover or trimmed past a slow reader too.
//!
//! A node reads only the shards of the tenants it has streams of: the hub
//! tells it when a tenant's first subscriber comes and its last goes
//! ([`TenantInterest`]). Each server's subscriber `SSUBSCRIBE`s a shard when
//! its first tenant comes and `SUNSUBSCRIBE`s [`LINGER`] after its last left
//! (a reconnecting client does not make it start over); after every
//! (re)subscription it asks the hub for a tail check, so what was committed
//! while it was not subscribed is read from the store. It hands other
//! nodes' events to the hub, which puts them in id order and fills gaps
//! from Postgres: a message lost with a disconnection, a failover or a
//! subscriber Redis cut off for being slow delays an event but never loses
//! it.
//!
//! A message: the publishing node's id, a line of each event's commit time
//! in ms (comma-separated, for the commit → delivery lag), then the events,
//! one per line, each `seq \t tenant \t topic \t type \t json` (names are
//! validated to hold no tab or newline and compact JSON holds no raw
//! control character).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::conn::{slot, BusServer, RedisConn, SLOTS};
use crate::bus::hub::{Hub, TenantInterest};
use crate::bus::Fanout;
use crate::event::StoredEvent;
use crate::metrics::Metrics;

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
        let subscribers = redis
            .bus_servers
            .iter()
            .map(|server| {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(subscriber(
                    server.clone(),
                    keys.clone(),
                    node.clone(),
                    hub.clone(),
                    metrics.clone(),
                    stop.clone(),
                    rx,
                ));
                tx
            })
            .collect();
        let (itx, irx) = mpsc::unbounded_channel();
        hub.watch_tenants(Arc::new(Interest { tx: itx, shards }));
        tokio::spawn(
            Readers {
                subscribers,
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
                let mut payload =
                    String::with_capacity(node.len() + lines.ts.len() + lines.body.len() + 2);
                payload.push_str(node);
                payload.push('\n');
                payload.push_str(&lines.ts);
                payload.push('\n');
                payload.push_str(&lines.body);
                redis::cmd("SPUBLISH")
                    .arg(key)
                    .arg(payload)
                    .query_async::<i64>(&mut conn)
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

/// What a server's subscriber is asked.
enum Sub {
    /// Subscribe to a shard.
    Add(u16),
    /// Unsubscribe from a shard.
    Remove(u16),
}

/// The shards this node reads, subscribed and unsubscribed as the hub's
/// tenants come and go.
struct Readers {
    /// Per server, its subscriber (shard `i` on server `i mod n`).
    subscribers: Vec<mpsc::UnboundedSender<Sub>>,
    stop: CancellationToken,
    /// Per shard, its tenants with subscribers here.
    tenants: Vec<u32>,
    /// The shards read, and since when each has had no tenant here.
    running: HashMap<u16, Option<Instant>>,
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

    fn send(&self, sub: Sub) {
        let shard = match sub {
            Sub::Add(s) | Sub::Remove(s) => s,
        };
        let _ = self.subscribers[usize::from(shard) % self.subscribers.len()].send(sub);
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
            Some(idle) => *idle = empty.then(Instant::now),
            None if !empty => {
                self.running.insert(shard, None);
                self.send(Sub::Add(shard));
            }
            None => {}
        }
    }

    fn stop_idle(&mut self) {
        let idle: Vec<u16> = self
            .running
            .iter()
            .filter(|(_, idle)| idle.is_some_and(|since| since.elapsed() >= LINGER))
            .map(|(s, _)| *s)
            .collect();
        for shard in idle {
            self.running.remove(&shard);
            self.send(Sub::Remove(shard));
        }
    }
}

/// One server's subscriber: `SSUBSCRIBE`s the shards asked for on a
/// connection of its own (on a Redis Cluster, the cluster client's, which
/// sends each to the shard's master and subscribes again after a failover
/// or a resharding), hands other nodes' events to the hub, and after every
/// (re)subscription asks the hub for a tail check: whatever was published
/// while it was not subscribed is read from the store. Every second it
/// asks each subscribed shard's owner a cheap question (`EXISTS` of the
/// shard's name), so a connection that went quiet because its server died
/// is noticed and made again.
async fn subscriber(
    server: BusServer,
    keys: Vec<String>,
    node: String,
    hub: Hub,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
    mut asked: mpsc::UnboundedReceiver<Sub>,
) {
    let by_channel: HashMap<&str, u16> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (k.as_str(), i as u16))
        .collect();
    let counters: HashMap<u16, crate::metrics::ShardCounters> = HashMap::new();
    let mut counters = counters;
    let mut active: std::collections::BTreeSet<u16> = Default::default();
    let mut backoff = Duration::from_millis(100);
    'connect: loop {
        let (ptx, mut pushes) = mpsc::unbounded_channel::<redis::PushInfo>();
        let conn = tokio::select! {
            _ = stop.cancelled() => return,
            c = server.dedicated.subscriber(ptx) => c,
        };
        let mut conn = match conn {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "fan-out subscriber cannot reach Redis");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        for shard in &active {
            if let Err(e) = ssubscribe(&mut conn, &keys[usize::from(*shard)], true).await {
                tracing::warn!(error = %e, "fan-out subscriber lost Redis; reconnecting");
                continue 'connect;
            }
        }
        backoff = Duration::from_millis(100);
        if !active.is_empty() {
            hub.check_tail();
        }
        let mut probe = tokio::time::interval(Duration::from_secs(1));
        probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                a = asked.recv() => match a {
                    None => return,
                    Some(Sub::Add(shard)) => {
                        if active.insert(shard) {
                            let c = counters
                                .entry(shard)
                                .or_insert_with(|| metrics.bus_shard(shard));
                            c.reading.set(1);
                            if let Err(e) = ssubscribe(&mut conn, &keys[usize::from(shard)], true).await {
                                tracing::warn!(shard, error = %e, "fan-out subscriber lost Redis; reconnecting");
                                continue 'connect;
                            }
                            hub.check_tail();
                        }
                    }
                    Some(Sub::Remove(shard)) => {
                        if active.remove(&shard) {
                            if let Some(c) = counters.get(&shard) {
                                c.reading.set(0);
                            }
                            let _ = ssubscribe(&mut conn, &keys[usize::from(shard)], false).await;
                        }
                    }
                },
                push = pushes.recv() => match push {
                    None => continue 'connect,
                    Some(p) => match p.kind {
                        redis::PushKind::SMessage | redis::PushKind::Message => {
                            let mut data = p.data.into_iter();
                            let (Some(channel), Some(payload)) = (data.next(), data.next()) else {
                                continue;
                            };
                            let (Ok(channel), Ok(payload)) = (
                                redis::from_redis_value::<String>(&channel),
                                redis::from_redis_value::<String>(&payload),
                            ) else {
                                continue;
                            };
                            let Some(&shard) = by_channel.get(channel.as_str()) else {
                                continue;
                            };
                            let c = counters
                                .entry(shard)
                                .or_insert_with(|| metrics.bus_shard(shard));
                            c.messages.inc();
                            c.bytes.add((channel.len() + payload.len()) as u64);
                            let Some((from, rest)) = payload.split_once('\n') else {
                                continue;
                            };
                            let Some((ts, body)) = rest.split_once('\n') else {
                                continue;
                            };
                            let events = decode_entry(body, Some(ts));
                            if let Some(first) = events.first() {
                                c.lag_ms.set((crate::event::now_ms() - first.ts).max(0));
                            }
                            if from != node {
                                hub.deliver(events);
                            }
                        }
                        // The server unsubscribed us: the shard's slot
                        // moved (a resharding or a failover). Subscribe again
                        // (the cluster client finds the new owner), and read
                        // what was published meanwhile from the store.
                        redis::PushKind::SUnsubscribe => {
                            let channel = p
                                .data
                                .first()
                                .and_then(|c| redis::from_redis_value::<String>(c).ok());
                            let Some(&shard) = channel.as_deref().and_then(|c| by_channel.get(c)) else {
                                continue;
                            };
                            if !active.contains(&shard) {
                                continue;
                            }
                            tracing::info!(shard, "fan-out shard moved; subscribing again");
                            if let Err(e) = ssubscribe(&mut conn, &keys[usize::from(shard)], true).await {
                                tracing::warn!(shard, error = %e, "fan-out subscriber lost Redis; reconnecting");
                                continue 'connect;
                            }
                            hub.check_tail();
                        }
                        redis::PushKind::Disconnection => {
                            tracing::warn!("fan-out subscriber lost Redis; reconnecting");
                            hub.check_tail();
                            continue 'connect;
                        }
                        _ => {}
                    },
                },
                _ = probe.tick() => {
                    for shard in &active {
                        let r: redis::RedisResult<i64> = redis::cmd("EXISTS")
                            .arg(&keys[usize::from(*shard)])
                            .query_async(&mut conn)
                            .await;
                        if let Err(e) = r {
                            // The server (or a master) went away: subscribe
                            // again on a fresh connection; what was published
                            // meanwhile the tail check reads.
                            tracing::warn!(shard, error = %e, "fan-out subscriber lost Redis; reconnecting");
                            hub.check_tail();
                            continue 'connect;
                        }
                    }
                }
            }
        }
    }
}

/// `SSUBSCRIBE` (or `SUNSUBSCRIBE`) one shard's channel.
async fn ssubscribe(
    conn: &mut super::conn::Conn,
    channel: &str,
    on: bool,
) -> redis::RedisResult<()> {
    redis::cmd(if on { "SSUBSCRIBE" } else { "SUNSUBSCRIBE" })
        .arg(channel)
        .exec_async(conn)
        .await
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
