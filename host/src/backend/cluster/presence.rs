//! `RedisPresence`: presence counted in Redis, cluster-wide.
//!
//! Per topic, under `{prefix}:presence:{{tenant}:{topic}}:` (one hash tag,
//! so every script's keys are in one slot of a Redis Cluster):
//!
//! - `conns`, a sorted set of the topic's streams (`{node}-{id}\n{user}`,
//!   the user empty for an anonymous stream) scored by lease expiry, which
//!   the node refreshes with its stream leases (every 10 s, to 30 s ahead),
//!   so a dead node's streams drop out when their leases expire;
//! - `users`, a hash user -> streams of that user on the topic;
//! - `members`, `truncated`, `v`: the member set announced (user -> the
//!   data it joined with), the cap passed, the last transition's `v`;
//! - `check`, a key set `NX PX` by the one consistency check of a period;
//! - `leaves`, a sorted set of members whose last stream closed, by due
//!   time (now plus the linger);
//! - `tick`, a key set `NX PX interval` by the one decision of an interval;
//! - `sweep`, a key set `NX PX 50` by the one sweep running;
//! - `last`, the counts last appended (`streams,users`; missing: zero).
//!
//! And one index, `{prefix}:presence:topics`, a sorted set of topics
//! (`{tenant}\n{topic}`) by when they are next swept: a topic is added when
//! a stream joins it (and again with every lease refresh), brought forward
//! to a leave's due time, and swept at least every [`SWEEP_EVERY`] while it
//! has streams, leaves or members. Every live node polls the index each
//! presence tick; a due topic is swept by one of them (`sweep`): its
//! expired leases are dropped (a member among them is queued to leave after
//! the linger), its due leaves are taken out (each a `member.left`, decided
//! in the script, so once), and the topic is decided again by that node.
//! So a dead node's members leave within the linger plus the lease expiry
//! plus the sweep period, decided once. The index is only written by single
//! commands, never inside a script with a topic's keys.
//!
//! Redis operations, each one script call (one round trip) plus, where
//! said, one index command sent alongside:
//!
//! - join: `ZADD conns`, `PEXPIRE conns`, and for a user `HINCRBY users +1`,
//!   `PEXPIRE users`; index `ZADD NX`;
//! - leave: `ZREM conns`, and only if it removed the stream, for a user
//!   `HINCRBY users -1` (`HDEL` at zero, then `ZADD leaves` for a member);
//!   for a member, index `ZADD LT` of the due time;
//! - decision, per topic and interval on one node: `SET tick NX PX`, then
//!   `ZRANGEBYSCORE conns` of expired leases (each `ZREM` and, for a user,
//!   `HINCRBY -1`/`HDEL`), `ZCARD conns`, `HLEN users`, `GET last` and, when
//!   the counts changed, `SET last` (`DEL last` at zero);
//! - sweep, per node and tick: index `ZRANGEBYSCORE`; per due topic on one
//!   node, the sweep script and index `ZADD XX` (or `ZREM` once empty);
//! - consistency check, per topic keeping members and period on one node:
//!   `SET check NX PX`, the `v` (`TIME`, `GET`, `SET`), `EXISTS truncated`,
//!   `HGETALL members`.
//!
//! A signed-in stream also joins and leaves its tenant's place
//! (`presence::TENANT_WIDE`, for `user.online` / `user.offline`): one more
//! join and leave script per stream, on one hash tag per tenant.
//!
//! The refresh is pipelined: per live stream and topic `ZADD XX` and
//! `PEXPIRE` of `conns`, `users`, `members`, and index `ZADD NX`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::conn::{Conn, RedisConn};
use crate::presence::{
    Change, Counts, Decision, Entry, Held, Left, Membership, PresenceStore, Swept, Unavailable,
};

/// How long a stream's presence lives without refresh (as a cap lease).
pub const LEASE: Duration = Duration::from_secs(30);
/// A topic with streams, leaves or members is swept at least this often.
pub const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// How long one sweep of a topic keeps others off it.
const SWEEP_LOCK_MS: u64 = 50;
/// How long a topic's keys outlive their last refresh.
const KEY_TTL_MS: i64 = 60_000;
/// Most due topics one poll takes, and most leaves one sweep takes out.
const POP: usize = 200;

// The next `v` of a topic (KEYS[v]): microseconds of the Redis clock, and
// above the last, so it rises whichever node decides.
const NEXT_V: &str = r#"
local function next_v(key)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local last = tonumber(redis.call('GET', key) or '0')
  local v = math.max(now, last + 1)
  local text = string.format('%.0f', v)
  redis.call('SET', key, text, 'PX', 86400000)
  return text
end
"#;

// KEYS: conns, users, members, truncated, v, leaves
// ARGV: expiry_ms, member, user ('' if none), key ttl, cap ('' without
// members), member data
// Returns nil, or 'joined:{v}' / 'truncated:{v}'.
const JOIN: &str = r#"
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
if ARGV[3] == '' then return false end
local n = redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
redis.call('PEXPIRE', KEYS[2], ARGV[4])
if n ~= 1 or ARGV[5] == '' then return false end
if redis.call('ZREM', KEYS[6], ARGV[3]) == 1 then return false end
if redis.call('EXISTS', KEYS[4]) == 1 then return false end
if redis.call('HEXISTS', KEYS[3], ARGV[3]) == 1 then return false end
if redis.call('HLEN', KEYS[3]) >= tonumber(ARGV[5]) then
  redis.call('DEL', KEYS[3])
  redis.call('SET', KEYS[4], '1', 'PX', ARGV[4])
  return 'truncated:' .. next_v(KEYS[5])
end
redis.call('HSET', KEYS[3], ARGV[3], ARGV[6])
redis.call('PEXPIRE', KEYS[3], ARGV[4])
return 'joined:' .. next_v(KEYS[5])
"#;

// KEYS: members, truncated, v, check; ARGV: period ms
// The member set as decided, with a fresh `v`, for the consistency check;
// nil when the topic was checked within the period.
const HELD: &str = r#"
if not redis.call('SET', KEYS[4], '1', 'NX', 'PX', ARGV[1]) then
  return false
end
local v = next_v(KEYS[3])
return {v, tostring(redis.call('EXISTS', KEYS[2])), redis.call('HGETALL', KEYS[1])}
"#;

// A user's count on a topic goes down by one (KEYS: users, members,
// truncated, leaves; user, due); at zero a member's leave is queued for
// its due time, and an empty topic is no longer truncated. Returns 1 when
// a leave was queued.
const USER_DOWN: &str = r#"
local function user_down(users, members, truncated, leaves, user, due)
  if redis.call('HINCRBY', users, user, -1) > 0 then return 0 end
  redis.call('HDEL', users, user)
  local queued = 0
  if due ~= '' and redis.call('HEXISTS', members, user) == 1 then
    redis.call('ZADD', leaves, due, user)
    redis.call('PEXPIRE', leaves, 86400000)
    queued = 1
  end
  if redis.call('HLEN', users) == 0 then
    redis.call('DEL', truncated)
  end
  return queued
end
"#;

// KEYS: conns, users, members, truncated, leaves
// ARGV: member, user ('' if none), due ('' without members)
const LEAVE: &str = r#"
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then
  return 0
end
if ARGV[2] ~= '' then
  user_down(KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[2], ARGV[3])
end
return 1
"#;

// Drops a topic's expired leases (KEYS: conns, users, members, truncated,
// leaves; now, due). Returns how many, and whether a leave was queued.
const DROP_EXPIRED: &str = r#"
local function drop_expired(conns, users, members, truncated, leaves, now, due)
  local gone = redis.call('ZRANGEBYSCORE', conns, '-inf', now)
  local queued = 0
  for _, m in ipairs(gone) do
    redis.call('ZREM', conns, m)
    local user = string.match(m, '\n(.*)$')
    if user and user ~= '' then
      if user_down(users, members, truncated, leaves, user, due) == 1 then
        queued = 1
      end
    end
  end
  return #gone, queued
end
"#;

// KEYS: conns, users, tick, last, members, truncated, leaves
// ARGV: now_ms, interval_ms, due ('' without members)
// Returns {'lost', ..} when another decision holds the interval, else
// {'same' or the new counts 'streams,users', whether a leave was queued,
// the counts last appended before}.
const DECIDE: &str = r#"
if not redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[2]) then
  return {'lost', '0', ''}
end
local _, queued = drop_expired(KEYS[1], KEYS[2], KEYS[5], KEYS[6], KEYS[7], ARGV[1], ARGV[3])
local counts = redis.call('ZCARD', KEYS[1]) .. ',' .. redis.call('HLEN', KEYS[2])
local last = redis.call('GET', KEYS[4]) or '0,0'
if last == counts then
  return {'same', tostring(queued), last}
end
if counts == '0,0' then
  redis.call('DEL', KEYS[4])
else
  redis.call('SET', KEYS[4], counts)
end
return {counts, tostring(queued), last}
"#;

// KEYS: conns, users, members, truncated, v, leaves, sweep, last
// ARGV: now_ms, due ('' without members), lock ms, most leaves, every ms
// One sweep of a topic: expired leases dropped, due leaves taken out (a
// member.left only if the user has no stream on the topic and was a
// member, decided here, so once). Returns nil when another sweep holds
// the topic, else {decide again ('0'/'1'), next sweep ('' once nothing is
// left to sweep), user, v, user, v, ...}.
const SWEEP: &str = r#"
if not redis.call('SET', KEYS[7], '1', 'NX', 'PX', ARGV[3]) then
  return false
end
local now = tonumber(ARGV[1])
local dropped = drop_expired(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[6], ARGV[1], ARGV[2])
local out = {'0', ''}
local due = redis.call('ZRANGEBYSCORE', KEYS[6], '-inf', ARGV[1], 'LIMIT', 0, ARGV[4])
for _, user in ipairs(due) do
  redis.call('ZREM', KEYS[6], user)
  if redis.call('HEXISTS', KEYS[2], user) == 0
    and redis.call('HDEL', KEYS[3], user) == 1 then
    table.insert(out, user)
    table.insert(out, next_v(KEYS[5]))
  end
end
local streams = redis.call('ZCARD', KEYS[1])
local stale = streams == 0 and redis.call('EXISTS', KEYS[8]) == 1
if dropped > 0 or stale then out[1] = '1' end
local next = now + tonumber(ARGV[5])
local first = redis.call('ZRANGE', KEYS[6], 0, 0, 'WITHSCORES')
if first[2] then next = math.min(next, tonumber(first[2])) end
local lease = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if lease[2] then next = math.min(next, tonumber(lease[2]) + 1) end
if streams > 0 or stale or first[2] or redis.call('HLEN', KEYS[3]) > 0 then
  out[2] = string.format('%.0f', next)
end
return out
"#;

/// This node's streams on topics, by (connection, conns key): the member
/// and the keys its refresh extends (member, conns, users, members), and
/// the topic's entry in the index.
type Live = Arc<Mutex<HashMap<(u64, String), [String; 5]>>>;

/// Presence in Redis.
pub struct RedisPresence {
    conn: Conn,
    prefix: String,
    join: redis::Script,
    leave: redis::Script,
    decide: redis::Script,
    sweep: redis::Script,
    held: redis::Script,
    /// This node's streams on topics.
    live: Live,
}

impl RedisPresence {
    /// Presence under `{prefix}:presence:`, refreshed until `stop`.
    pub fn start(redis: &RedisConn, stop: tokio_util::sync::CancellationToken) -> RedisPresence {
        let live: Live = Arc::default();
        let index = format!("{}:presence:topics", redis.prefix);
        tokio::spawn(refresh(redis.clone(), live.clone(), index, stop));
        RedisPresence {
            conn: redis.conn.clone(),
            prefix: redis.prefix.clone(),
            join: redis::Script::new(&format!("{NEXT_V}{JOIN}")),
            leave: redis::Script::new(&format!("{USER_DOWN}{LEAVE}")),
            decide: redis::Script::new(&format!("{USER_DOWN}{DROP_EXPIRED}{DECIDE}")),
            sweep: redis::Script::new(&format!("{NEXT_V}{USER_DOWN}{DROP_EXPIRED}{SWEEP}")),
            held: redis::Script::new(&format!("{NEXT_V}{HELD}")),
            live,
        }
    }

    /// A topic's key: every key of a topic has the same hash tag.
    pub(crate) fn key(&self, tenant: &str, topic: &str, part: &str) -> String {
        format!("{}:presence:{{{tenant}:{topic}}}:{part}", self.prefix)
    }

    fn index(&self) -> String {
        format!("{}:presence:topics", self.prefix)
    }

    /// A topic's entry in the index.
    fn indexed(tenant: &str, topic: &str) -> String {
        format!("{tenant}\n{topic}")
    }

    fn member(e: &Entry<'_>) -> String {
        format!(
            "{}-{}\n{}",
            super::caps::process_tag(),
            e.conn,
            e.user.unwrap_or("")
        )
    }

    /// Brings a topic's next sweep forward to `at` (adding it if absent).
    async fn sweep_by(&self, tenant: &str, topic: &str, at: i64) {
        let mut c = self.conn.clone();
        let r: redis::RedisResult<()> = redis::cmd("ZADD")
            .arg(self.index())
            .arg("LT")
            .arg(at)
            .arg(Self::indexed(tenant, topic))
            .query_async(&mut c)
            .await;
        if let Err(err) = r {
            tracing::warn!(error = %err, "cannot index a presence topic in Redis");
        }
    }

    /// Sweeps one due topic; `None` when another sweep held it.
    async fn sweep_topic(
        &self,
        tenant: &str,
        topic: &str,
        linger: Duration,
    ) -> Option<(bool, Vec<Left>)> {
        let now = crate::event::now_ms();
        let k = |part| self.key(tenant, topic, part);
        let mut c = self.conn.clone();
        let r: redis::RedisResult<Option<Vec<String>>> = self
            .sweep
            .key(k("conns"))
            .key(k("users"))
            .key(k("members"))
            .key(k("truncated"))
            .key(k("v"))
            .key(k("leaves"))
            .key(k("sweep"))
            .key(k("last"))
            .arg(now)
            .arg((now + linger.as_millis() as i64).to_string())
            .arg(SWEEP_LOCK_MS)
            .arg(POP)
            .arg(SWEEP_EVERY.as_millis() as u64)
            .invoke_async(&mut c)
            .await;
        let out = match r {
            Ok(Some(out)) if out.len() >= 2 => out,
            Ok(_) => return None,
            Err(err) => {
                tracing::warn!(error = %err, "cannot sweep a topic's presence in Redis");
                return None;
            }
        };
        let entry = Self::indexed(tenant, topic);
        let r: redis::RedisResult<()> = match out[1].parse::<i64>() {
            Ok(next) => {
                redis::cmd("ZADD")
                    .arg(self.index())
                    .arg("XX")
                    .arg(next)
                    .arg(&entry)
                    .query_async(&mut c)
                    .await
            }
            // Nothing left: a join racing this is indexed again by its
            // node's next refresh.
            Err(_) => {
                redis::cmd("ZREM")
                    .arg(self.index())
                    .arg(&entry)
                    .query_async(&mut c)
                    .await
            }
        };
        if let Err(err) = r {
            tracing::warn!(error = %err, "cannot index a presence topic in Redis");
        }
        let leaves = out[2..]
            .chunks_exact(2)
            .filter_map(|l| {
                Some(Left {
                    tenant: tenant.to_string(),
                    topic: topic.to_string(),
                    user: l[0].clone(),
                    v: l[1].parse().ok()?,
                })
            })
            .collect();
        Some((out[0] == "1", leaves))
    }
}

#[async_trait::async_trait]
impl PresenceStore for RedisPresence {
    async fn join(
        &self,
        e: Entry<'_>,
        membership: Option<Membership<'_>>,
    ) -> Result<Option<Change>, Unavailable> {
        let conns = self.key(e.tenant, e.topic, "conns");
        let users = self.key(e.tenant, e.topic, "users");
        let member_set = self.key(e.tenant, e.topic, "members");
        let member = Self::member(&e);
        let expiry = crate::event::now_ms() + LEASE.as_millis() as i64;
        let user = e.user.unwrap_or("");
        let mut c = self.conn.clone();
        let mut ic = self.conn.clone();
        let entry = Self::indexed(e.tenant, e.topic);
        let mut index_cmd = redis::cmd("ZADD");
        index_cmd
            .arg(self.index())
            .arg("NX")
            .arg(crate::event::now_ms() + SWEEP_EVERY.as_millis() as i64)
            .arg(&entry);
        let index = index_cmd.query_async::<()>(&mut ic);
        let mut invocation = self.join.prepare_invoke();
        invocation
            .key(&conns)
            .key(&users)
            .key(&member_set)
            .key(self.key(e.tenant, e.topic, "truncated"))
            .key(self.key(e.tenant, e.topic, "v"))
            .key(self.key(e.tenant, e.topic, "leaves"))
            .arg(expiry)
            .arg(&member)
            .arg(user)
            .arg(KEY_TTL_MS)
            .arg(membership.map(|m| m.cap.to_string()).unwrap_or_default())
            .arg(membership.map(|m| m.claims).unwrap_or("{}"));
        let script = invocation.invoke_async::<Option<String>>(&mut c);
        let (r, indexed) = tokio::join!(script, index);
        let change = match r {
            Ok(None) => None,
            Ok(Some(s)) => match s.split_once(':') {
                Some(("joined", v)) => v.parse().ok().map(Change::Joined),
                Some(("truncated", v)) => v.parse().ok().map(Change::Truncated),
                _ => None,
            },
            Err(err) => {
                tracing::warn!(error = %err, "cannot count a stream's presence in Redis");
                return Err(Unavailable);
            }
        };
        if let Err(err) = indexed {
            tracing::warn!(error = %err, "cannot index a presence topic in Redis");
        }
        self.live.lock().unwrap_or_else(|p| p.into_inner()).insert(
            (e.conn, conns.clone()),
            [member, conns, users, member_set, entry],
        );
        Ok(change)
    }

    async fn leave(&self, e: Entry<'_>, linger: Option<Duration>) {
        let conns = self.key(e.tenant, e.topic, "conns");
        let Some([member, conns, users, member_set, _]) = self
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(e.conn, conns))
        else {
            return;
        };
        let user = e.user.unwrap_or("");
        let due = linger.map(|l| crate::event::now_ms() + l.as_millis() as i64);
        let mut c = self.conn.clone();
        let r: redis::RedisResult<i64> = self
            .leave
            .key(&conns)
            .key(&users)
            .key(&member_set)
            .key(self.key(e.tenant, e.topic, "truncated"))
            .key(self.key(e.tenant, e.topic, "leaves"))
            .arg(&member)
            .arg(user)
            .arg(due.map(|d| d.to_string()).unwrap_or_default())
            .invoke_async(&mut c)
            .await;
        match r {
            Ok(_) => {
                if let (Some(due), Some(_)) = (due, e.user) {
                    self.sweep_by(e.tenant, e.topic, due).await;
                }
            }
            // The lease expires by itself.
            Err(err) => {
                tracing::warn!(error = %err, "cannot count a stream out of a topic's presence");
            }
        }
    }

    async fn sweep(&self, linger: Duration) -> Swept {
        let mut c = self.conn.clone();
        let due: redis::RedisResult<Vec<String>> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.index())
            .arg("-inf")
            .arg(crate::event::now_ms())
            .arg("LIMIT")
            .arg(0)
            .arg(POP)
            .query_async(&mut c)
            .await;
        let due = match due {
            Ok(due) => due,
            Err(err) => {
                tracing::warn!(error = %err, "cannot read due presence topics from Redis");
                return Swept::default();
            }
        };
        let mut swept = Swept::default();
        for entry in due {
            let Some((tenant, topic)) = entry.split_once('\n') else {
                continue;
            };
            let Some((again, leaves)) = self.sweep_topic(tenant, topic, linger).await else {
                continue;
            };
            if again {
                swept.topics.push((tenant.to_string(), topic.to_string()));
            }
            swept.leaves.extend(leaves);
        }
        swept
    }

    async fn decide(
        &self,
        tenant: &str,
        topic: &str,
        interval: Duration,
        linger: Duration,
    ) -> Decision {
        let mut c = self.conn.clone();
        let due = crate::event::now_ms() + linger.as_millis() as i64;
        let r: redis::RedisResult<Vec<String>> = self
            .decide
            .key(self.key(tenant, topic, "conns"))
            .key(self.key(tenant, topic, "users"))
            .key(self.key(tenant, topic, "tick"))
            .key(self.key(tenant, topic, "last"))
            .key(self.key(tenant, topic, "members"))
            .key(self.key(tenant, topic, "truncated"))
            .key(self.key(tenant, topic, "leaves"))
            .arg(crate::event::now_ms())
            .arg(interval.as_millis().max(1) as u64)
            .arg(due.to_string())
            .invoke_async(&mut c)
            .await;
        let r = match r {
            Ok(r) if r.len() == 3 => r,
            Ok(_) => return Decision::Lost,
            Err(err) => {
                tracing::warn!(error = %err, "cannot decide a topic's occupancy in Redis");
                return Decision::Lost;
            }
        };
        if r[1] == "1" {
            self.sweep_by(tenant, topic, due).await;
        }
        let parse = |s: &str| {
            s.split_once(',').and_then(|(a, b)| {
                Some(Counts {
                    streams: a.parse().ok()?,
                    users: b.parse().ok()?,
                })
            })
        };
        match r[0].as_str() {
            "lost" => Decision::Lost,
            "same" => Decision::Unchanged,
            s => match parse(s) {
                Some(counts) => Decision::Changed {
                    counts,
                    was: parse(&r[2]).unwrap_or_default(),
                },
                None => Decision::Unchanged,
            },
        }
    }

    async fn forget(&self, tenant: &str, topic: &str) {
        let mut c = self.conn.clone();
        let _: redis::RedisResult<()> = redis::cmd("DEL")
            .arg(self.key(tenant, topic, "last"))
            .query_async(&mut c)
            .await;
    }

    async fn held(
        &self,
        tenant: &str,
        topic: &str,
        period: Duration,
    ) -> Result<Option<Held>, Unavailable> {
        let mut c = self.conn.clone();
        let r: redis::RedisResult<Option<(String, String, Vec<String>)>> = self
            .held
            .key(self.key(tenant, topic, "members"))
            .key(self.key(tenant, topic, "truncated"))
            .key(self.key(tenant, topic, "v"))
            .key(self.key(tenant, topic, "check"))
            .arg(period.as_millis().max(1) as u64)
            .invoke_async(&mut c)
            .await;
        let Some((v, truncated, pairs)) = r.map_err(|err| {
            tracing::warn!(error = %err, "cannot read a topic's members from Redis");
            Unavailable
        })?
        else {
            return Ok(None);
        };
        let mut members: Vec<(String, String)> = pairs
            .chunks_exact(2)
            .map(|p| (p[0].clone(), p[1].clone()))
            .collect();
        members.sort();
        Ok(Some(Held {
            members,
            truncated: truncated == "1",
            v: v.parse().map_err(|_| Unavailable)?,
        }))
    }
}

/// Extends this node's presence leases every third of their life, and
/// keeps their topics in the index.
async fn refresh(
    redis: RedisConn,
    live: Live,
    index: String,
    stop: tokio_util::sync::CancellationToken,
) {
    let every = LEASE / 3;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let leases: Vec<[String; 5]> = live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        let now = crate::event::now_ms();
        let expiry = now + LEASE.as_millis() as i64;
        let mut indexed = HashSet::new();
        for chunk in leases.chunks(500) {
            // A topic's keys share a slot; the index is a slot of its own.
            let mut batch = redis.batch();
            for [member, conns, users, members, entry] in chunk {
                batch.add(
                    conns,
                    redis::cmd("ZADD")
                        .arg(conns)
                        .arg("XX")
                        .arg(expiry)
                        .arg(member)
                        .clone(),
                );
                for k in [conns, users, members] {
                    batch.add(k, redis::cmd("PEXPIRE").arg(k).arg(KEY_TTL_MS).clone());
                }
                if indexed.insert(entry.clone()) {
                    batch.add(
                        &index,
                        redis::cmd("ZADD")
                            .arg(&index)
                            .arg("NX")
                            .arg(now + SWEEP_EVERY.as_millis() as i64)
                            .arg(entry)
                            .clone(),
                    );
                }
            }
            if let Err(e) = batch.run(&redis.conn).await {
                tracing::warn!(error = %e, "cannot refresh presence leases");
                break;
            }
        }
    }
}
