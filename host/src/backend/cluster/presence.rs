//! `RedisPresence`: presence counted in Redis, cluster-wide.
//!
//! Per topic, under `{prefix}:presence:{tenant}:{topic}`:
//!
//! - `:conns`, a sorted set of the topic's streams (`{node}-{id}\n{user}`,
//!   the user empty for an anonymous stream) scored by lease expiry, which
//!   the node refreshes with its stream leases (every 10 s, to 30 s ahead),
//!   so a dead node's streams drop out when their leases expire;
//! - `:users`, a hash user -> streams of that user on the topic;
//! - `:tick`, a key set `NX PX interval` by the one decision of an interval;
//! - `:last`, the counts last appended (`streams,users`; missing: zero).
//!
//! Redis operations, each one script call (one round trip):
//!
//! - join: `ZADD conns`, `PEXPIRE conns`, and for a user `HINCRBY users +1`,
//!   `PEXPIRE users`;
//! - leave: `ZREM conns`, and only if it removed the stream, for a user
//!   `HINCRBY users -1` (`HDEL` at zero);
//! - decision, per topic and interval on one node: `SET tick NX PX`, then
//!   `ZRANGEBYSCORE conns` of expired leases (each `ZREM` and, for a user,
//!   `HINCRBY -1`/`HDEL`), `ZCARD conns`, `HLEN users`, `GET last` and, when
//!   the counts changed, `SET last` (`DEL last` at zero).
//!
//! The refresh is pipelined: per live stream and topic `ZADD XX` and
//! `PEXPIRE` of `conns` and `users`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::ConnectionManager;

use super::conn::RedisConn;
use crate::presence::{Change, Counts, Decision, Entry, Left, PresenceStore, Unavailable};

/// How long a stream's presence lives without refresh (as a cap lease).
const LEASE: Duration = Duration::from_secs(30);
/// How long a topic's keys outlive their last refresh.
const KEY_TTL_MS: i64 = 60_000;
/// Most due leaves one call pops.
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
// members), leave member
// Returns nil, or 'joined:{v}' / 'truncated:{v}'.
const JOIN: &str = r#"
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
if ARGV[3] == '' then return false end
local n = redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
redis.call('PEXPIRE', KEYS[2], ARGV[4])
if n ~= 1 or ARGV[5] == '' then return false end
if redis.call('ZREM', KEYS[6], ARGV[6]) == 1 then return false end
if redis.call('EXISTS', KEYS[4]) == 1 then return false end
if redis.call('HEXISTS', KEYS[3], ARGV[3]) == 1 then return false end
if redis.call('HLEN', KEYS[3]) >= tonumber(ARGV[5]) then
  redis.call('DEL', KEYS[3])
  redis.call('SET', KEYS[4], '1', 'PX', ARGV[4])
  return 'truncated:' .. next_v(KEYS[5])
end
redis.call('HSET', KEYS[3], ARGV[3], '1')
redis.call('PEXPIRE', KEYS[3], ARGV[4])
return 'joined:' .. next_v(KEYS[5])
"#;

// A user's count on a topic goes down by one (KEYS: users, members,
// truncated, leaves; user, due, leave member); at zero a member's leave is
// queued for its due time, and an empty topic is no longer truncated.
const USER_DOWN: &str = r#"
local function user_down(users, members, truncated, leaves, user, due, leave)
  if redis.call('HINCRBY', users, user, -1) > 0 then return end
  redis.call('HDEL', users, user)
  if due ~= '' and redis.call('HEXISTS', members, user) == 1 then
    redis.call('ZADD', leaves, due, leave)
  end
  if redis.call('HLEN', users) == 0 then
    redis.call('DEL', truncated)
  end
end
"#;

// KEYS: conns, users, members, truncated, leaves
// ARGV: member, user ('' if none), due ('' without members), leave member
const LEAVE: &str = r#"
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then
  return 0
end
if ARGV[2] ~= '' then
  user_down(KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[2], ARGV[3], ARGV[4])
end
return 1
"#;

// KEYS: conns, users, tick, last, members, truncated, leaves
// ARGV: now_ms, interval_ms, due ('' without members), leave member prefix
// Returns nil when another decision holds the interval, 'same' when the
// counts are the last appended, else the new counts 'streams,users'.
const DECIDE: &str = r#"
if not redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[2]) then
  return false
end
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
for _, m in ipairs(gone) do
  redis.call('ZREM', KEYS[1], m)
  local user = string.match(m, '\n(.*)$')
  if user and user ~= '' then
    user_down(KEYS[2], KEYS[5], KEYS[6], KEYS[7], user, ARGV[3], ARGV[4] .. user)
  end
end
local counts = redis.call('ZCARD', KEYS[1]) .. ',' .. redis.call('HLEN', KEYS[2])
local last = redis.call('GET', KEYS[4]) or '0,0'
if last == counts then
  return 'same'
end
if counts == '0,0' then
  redis.call('DEL', KEYS[4])
else
  redis.call('SET', KEYS[4], counts)
end
return counts
"#;

// KEYS: leaves; ARGV: now_ms, key prefix ('{prefix}:presence:'), most
// Pops due leaves: each is removed by exactly one caller, and is a
// member.left only if the user has no stream on the topic and was a
// member. The topic's keys are named from the leave ('{tenant}\n{topic}\n
// {user}'): one Redis server, not a Redis Cluster.
// Returns tenant, topic, user, v for each leave.
const POP_DUE: &str = r#"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
local out = {}
for _, m in ipairs(due) do
  redis.call('ZREM', KEYS[1], m)
  local tenant, topic, user = string.match(m, '^([^\n]*)\n([^\n]*)\n(.*)$')
  if tenant then
    local base = ARGV[2] .. tenant .. ':' .. topic .. ':'
    if redis.call('HEXISTS', base .. 'users', user) == 0
      and redis.call('HDEL', base .. 'members', user) == 1 then
      table.insert(out, tenant)
      table.insert(out, topic)
      table.insert(out, user)
      table.insert(out, next_v(base .. 'v'))
    end
  end
end
return out
"#;

/// This node's streams on topics, by (connection, conns key): the member
/// and the keys its refresh extends (member, conns, users).
type Live = Arc<Mutex<HashMap<(u64, String), [String; 3]>>>;

/// Presence in Redis.
pub struct RedisPresence {
    conn: ConnectionManager,
    prefix: String,
    join: redis::Script,
    leave: redis::Script,
    decide: redis::Script,
    pop_due: redis::Script,
    /// This node's streams on topics.
    live: Live,
}

impl RedisPresence {
    /// Presence under `{prefix}:presence:`, refreshed until `stop`.
    pub fn start(redis: &RedisConn, stop: tokio_util::sync::CancellationToken) -> RedisPresence {
        let live: Live = Arc::default();
        tokio::spawn(refresh(redis.conn.clone(), live.clone(), stop));
        RedisPresence {
            conn: redis.conn.clone(),
            prefix: redis.prefix.clone(),
            join: redis::Script::new(&format!("{NEXT_V}{JOIN}")),
            leave: redis::Script::new(&format!("{USER_DOWN}{LEAVE}")),
            decide: redis::Script::new(&format!("{USER_DOWN}{DECIDE}")),
            pop_due: redis::Script::new(&format!("{NEXT_V}{POP_DUE}")),
            live,
        }
    }

    fn key(&self, tenant: &str, topic: &str, part: &str) -> String {
        format!("{}:presence:{tenant}:{topic}:{part}", self.prefix)
    }

    fn leaves(&self) -> String {
        format!("{}:presence:leaves", self.prefix)
    }

    /// A queued leave: the topic's keys are named from it.
    fn leave_member(tenant: &str, topic: &str, user: &str) -> String {
        format!("{tenant}\n{topic}\n{user}")
    }

    fn member(e: &Entry<'_>) -> String {
        format!(
            "{}-{}\n{}",
            super::caps::process_tag(),
            e.conn,
            e.user.unwrap_or("")
        )
    }
}

#[async_trait::async_trait]
impl PresenceStore for RedisPresence {
    async fn join(
        &self,
        e: Entry<'_>,
        members: Option<usize>,
    ) -> Result<Option<Change>, Unavailable> {
        let conns = self.key(e.tenant, e.topic, "conns");
        let users = self.key(e.tenant, e.topic, "users");
        let member = Self::member(&e);
        let expiry = crate::event::now_ms() + LEASE.as_millis() as i64;
        let user = e.user.unwrap_or("");
        let mut c = self.conn.clone();
        let r: redis::RedisResult<Option<String>> = self
            .join
            .key(&conns)
            .key(&users)
            .key(self.key(e.tenant, e.topic, "members"))
            .key(self.key(e.tenant, e.topic, "truncated"))
            .key(self.key(e.tenant, e.topic, "v"))
            .key(self.leaves())
            .arg(expiry)
            .arg(&member)
            .arg(user)
            .arg(KEY_TTL_MS)
            .arg(members.map(|m| m.to_string()).unwrap_or_default())
            .arg(Self::leave_member(e.tenant, e.topic, user))
            .invoke_async(&mut c)
            .await;
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
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((e.conn, conns.clone()), [member, conns, users]);
        Ok(change)
    }

    async fn leave(&self, e: Entry<'_>, linger: Option<Duration>) {
        let conns = self.key(e.tenant, e.topic, "conns");
        let Some([member, conns, users]) = self
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(e.conn, conns))
        else {
            return;
        };
        let user = e.user.unwrap_or("");
        let due = linger
            .map(|l| (crate::event::now_ms() + l.as_millis() as i64).to_string())
            .unwrap_or_default();
        let mut c = self.conn.clone();
        let r: redis::RedisResult<i64> = self
            .leave
            .key(&conns)
            .key(&users)
            .key(self.key(e.tenant, e.topic, "members"))
            .key(self.key(e.tenant, e.topic, "truncated"))
            .key(self.leaves())
            .arg(&member)
            .arg(user)
            .arg(due)
            .arg(Self::leave_member(e.tenant, e.topic, user))
            .invoke_async(&mut c)
            .await;
        if let Err(err) = r {
            // The lease expires by itself.
            tracing::warn!(error = %err, "cannot count a stream out of a topic's presence");
        }
    }

    async fn due_leaves(&self) -> Vec<Left> {
        let mut c = self.conn.clone();
        let r: redis::RedisResult<Vec<String>> = self
            .pop_due
            .key(self.leaves())
            .arg(crate::event::now_ms())
            .arg(format!("{}:presence:", self.prefix))
            .arg(POP)
            .invoke_async(&mut c)
            .await;
        match r {
            Ok(flat) => flat
                .chunks_exact(4)
                .filter_map(|l| {
                    Some(Left {
                        tenant: l[0].clone(),
                        topic: l[1].clone(),
                        user: l[2].clone(),
                        v: l[3].parse().ok()?,
                    })
                })
                .collect(),
            Err(err) => {
                tracing::warn!(error = %err, "cannot read due member leaves from Redis");
                Vec::new()
            }
        }
    }

    async fn decide(
        &self,
        tenant: &str,
        topic: &str,
        interval: Duration,
        linger: Duration,
    ) -> Decision {
        let mut c = self.conn.clone();
        let r: redis::RedisResult<Option<String>> = self
            .decide
            .key(self.key(tenant, topic, "conns"))
            .key(self.key(tenant, topic, "users"))
            .key(self.key(tenant, topic, "tick"))
            .key(self.key(tenant, topic, "last"))
            .key(self.key(tenant, topic, "members"))
            .key(self.key(tenant, topic, "truncated"))
            .key(self.leaves())
            .arg(crate::event::now_ms())
            .arg(interval.as_millis().max(1) as u64)
            .arg((crate::event::now_ms() + linger.as_millis() as i64).to_string())
            .arg(format!("{tenant}\n{topic}\n"))
            .invoke_async(&mut c)
            .await;
        match r {
            Ok(None) => Decision::Lost,
            Ok(Some(s)) if s == "same" => Decision::Unchanged,
            Ok(Some(s)) => match s.split_once(',').and_then(|(a, b)| {
                Some(Counts {
                    streams: a.parse().ok()?,
                    users: b.parse().ok()?,
                })
            }) {
                Some(c) => Decision::Changed(c),
                None => Decision::Unchanged,
            },
            Err(err) => {
                tracing::warn!(error = %err, "cannot decide a topic's occupancy in Redis");
                Decision::Lost
            }
        }
    }

    async fn forget(&self, tenant: &str, topic: &str) {
        let mut c = self.conn.clone();
        let _: redis::RedisResult<()> = redis::cmd("DEL")
            .arg(self.key(tenant, topic, "last"))
            .query_async(&mut c)
            .await;
    }
}

/// Extends this node's presence leases every third of their life.
async fn refresh(conn: ConnectionManager, live: Live, stop: tokio_util::sync::CancellationToken) {
    let every = LEASE / 3;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let leases: Vec<[String; 3]> = live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        let expiry = crate::event::now_ms() + LEASE.as_millis() as i64;
        for chunk in leases.chunks(500) {
            let mut pipe = redis::pipe();
            for [member, conns, users] in chunk {
                pipe.cmd("ZADD")
                    .arg(conns)
                    .arg("XX")
                    .arg(expiry)
                    .arg(member)
                    .ignore();
                pipe.cmd("PEXPIRE").arg(conns).arg(KEY_TTL_MS).ignore();
                pipe.cmd("PEXPIRE").arg(users).arg(KEY_TTL_MS).ignore();
            }
            let mut c = conn.clone();
            if let Err(e) = pipe.query_async::<()>(&mut c).await {
                tracing::warn!(error = %e, "cannot refresh presence leases");
                break;
            }
        }
    }
}
