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
//! Members (opt-in per topic pattern): `member.joined` on `T~members` when
//! a user's first stream on `T` opens, `member.left` when the last one has
//! closed and the linger passed without a new one; per user, not per
//! connection, each transition decided once where the count lives (this
//! process, or one Redis script) and appended once by the node that
//! decided it. The member data are the configured claims of the user's
//! verified token, never query parameters. Past the topic's cap of members
//! one `members.truncated` and counts only, until the topic empties. The
//! retained state of `T~members` is the member set, which the store folds
//! from these events as it appends them (`event::MemberSet`), so a
//! `snapshot` of it is the set at the stream's cursor.
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
    /// How long a user whose last stream on a topic closed stays a member.
    pub linger: Duration,
    /// How often the members topic of a topic with streams here is checked
    /// against the presence store (one node per topic and period).
    pub check: Duration,
    /// Topic patterns whose occupancy is kept (`None`: every topic).
    pub occupancy: Option<Vec<String>>,
    /// Topic patterns (`product:*`, `global`) whose members are announced.
    pub members: Vec<String>,
    /// Claims of a member's token that are its member data.
    pub claims: Vec<String>,
    /// Most members announced per topic.
    pub max_members: usize,
}

impl Settings {
    /// Whether `topic`'s members are announced.
    pub fn members_of(&self, topic: &str) -> bool {
        crate::auth::publish::allows(&self.members, topic)
    }

    /// Whether `topic`'s streams are counted at all: its occupancy is kept
    /// or its members announced (a topic neither of these names costs
    /// nothing on open and close).
    pub fn tracks(&self, topic: &str) -> bool {
        self.occupancy
            .as_ref()
            .is_none_or(|p| crate::auth::publish::allows(p, topic))
            || self.members_of(topic)
    }

    /// The member data of a verified token's claims (a JSON object's text):
    /// the configured claims it has.
    pub fn member_claims(
        &self,
        token_claims: Option<&str>,
    ) -> serde_json::Map<String, serde_json::Value> {
        let mut out = serde_json::Map::new();
        let Some(serde_json::Value::Object(all)) =
            token_claims.and_then(|c| serde_json::from_str(c).ok())
        else {
            return out;
        };
        for name in &self.claims {
            if let Some(v) = all.get(name) {
                out.insert(name.clone(), v.clone());
            }
        }
        out
    }
}

/// A topic's counts.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize, utoipa::ToSchema,
)]
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
    Changed {
        /// The counts now.
        counts: Counts,
        /// The counts last appended before (zero before any).
        was: Counts,
    },
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

/// A member transition a join decided, with its `v` (see
/// [`crate::event::MemberSet`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The user's first stream on the topic: it joins.
    Joined(u64),
    /// One user more than the cap: the set is given up until the topic
    /// empties.
    Truncated(u64),
}

/// A member whose linger ran out: it leaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Left {
    /// Tenant slug.
    pub tenant: String,
    /// The base topic.
    pub topic: String,
    /// The user.
    pub user: String,
    /// The transition's `v`.
    pub v: u64,
}

/// A stream's user as a member of a topic whose members are kept.
#[derive(Debug, Clone, Copy)]
pub struct Membership<'a> {
    /// The topic's cap of members.
    pub cap: usize,
    /// The member data the user joins with (a JSON object: the configured
    /// claims of its token).
    pub claims: &'a str,
}

/// The member set a store holds for a topic, for the consistency check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Held {
    /// Each member, with the data it joined with (JSON object text).
    pub members: Vec<(String, String)>,
    /// The cap was passed.
    pub truncated: bool,
    /// A `v` above every transition decided for the topic so far.
    pub v: u64,
}

/// What a sweep found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Swept {
    /// Members whose linger ran out: they leave.
    pub leaves: Vec<Left>,
    /// Topics (tenant, topic) to decide again.
    pub topics: Vec<(String, String)>,
}

/// The presence store could not be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("presence counts are unavailable")]
pub struct Unavailable;

/// Where streams on topics are counted.
#[async_trait::async_trait]
pub trait PresenceStore: Send + Sync + 'static {
    /// A stream opened on a topic. With `member` (the topic keeps
    /// members), a user's first stream there is a member transition,
    /// decided here.
    async fn join(
        &self,
        e: Entry<'_>,
        member: Option<Membership<'_>>,
    ) -> Result<Option<Change>, Unavailable>;
    /// The stream closed. With `linger`, a member whose last stream this
    /// was leaves once the linger passes without a new one.
    async fn leave(&self, e: Entry<'_>, linger: Option<Duration>);
    /// Members whose linger ran out, each handed to one caller only, and
    /// topics whose counts changed without a stream of this node (a dead
    /// node's leases expired: a member among them leaves after `linger`).
    async fn sweep(&self, linger: Duration) -> Swept;
    /// Decides, at most once per `interval` per topic across every node,
    /// whether the topic's counts changed since the last ones appended;
    /// streams whose lease expired are counted out (a member among them
    /// leaves after `linger`).
    async fn decide(
        &self,
        tenant: &str,
        topic: &str,
        interval: Duration,
        linger: Duration,
    ) -> Decision;
    /// The counts decided were not appended: let the next decision append
    /// whatever the counts are then.
    async fn forget(&self, tenant: &str, topic: &str);
    /// The topic's member set as decided here, read at once with a fresh
    /// `v`, for the consistency check; `None` when the topic was checked
    /// within `period` (by any node), so one node checks it per period.
    async fn held(
        &self,
        tenant: &str,
        topic: &str,
        period: Duration,
    ) -> Result<Option<Held>, Unavailable>;
}

/// A topic, by tenant.
type Key = (String, String);

/// The place every stream of a signed-in user also takes, per tenant, so a
/// user's first stream of the tenant and the last one gone (plus the
/// linger) are decided like a member's join and leave: `user.online` and
/// `user.offline` on the tenant's lifecycle topic. No topic is named so.
pub const TENANT_WIDE: &str = "~tenant";

/// A tenant's lifecycle topic.
pub fn lifecycle_topic(tenant: &str) -> String {
    Derived::Lifecycle.of(&format!("tenant:{tenant}"))
}

fn lifecycle_event(tenant: &str, kind: &str, data: serde_json::Value) -> NewEvent {
    NewEvent {
        tenant: tenant.to_string(),
        topic: lifecycle_topic(tenant),
        kind: kind.into(),
        data: data.to_string(),
        retain: false,
    }
}

/// This node's presence: joins and leaves of its streams, and the interval
/// that appends occupancy.
#[derive(Clone)]
pub struct Presence {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn PresenceStore>,
    publisher: Publisher,
    /// The log, whose members topics the consistency check reads.
    log: Arc<dyn crate::store::Store>,
    /// Topics whose members topic disagreed with the store at the last
    /// check, with the set's `v` then.
    suspects: Mutex<HashMap<Key, u64>>,
    /// Open streams with places the store did not take when they opened.
    retry: Mutex<Vec<Arc<Joined>>>,
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
        log: Arc<dyn crate::store::Store>,
        stop: CancellationToken,
    ) -> Presence {
        let p = Presence {
            inner: Arc::new(Inner {
                store,
                publisher,
                log,
                suspects: Mutex::default(),
                retry: Mutex::default(),
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
    /// guard is dropped; `claims` are the verified token's (JSON text),
    /// for member data.
    pub async fn join(
        &self,
        tenant: &str,
        topics: Vec<String>,
        user: Option<&str>,
        claims: Option<&str>,
    ) -> Guard {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let conn = NEXT.fetch_add(1, Ordering::Relaxed);
        let settings = &self.inner.settings;
        let topics: Vec<String> = topics.into_iter().filter(|t| settings.tracks(t)).collect();
        let member_data = settings.member_claims(claims);
        let mut places: Vec<(String, bool)> = topics
            .iter()
            .map(|t| (t.clone(), user.is_some() && settings.members_of(t)))
            .collect();
        if user.is_some() {
            places.push((TENANT_WIDE.to_string(), true));
        }
        let stream = Arc::new(Joined {
            conn,
            tenant: tenant.to_string(),
            user: user.map(str::to_string),
            member_text: serde_json::Value::Object(member_data.clone()).to_string(),
            member_data,
            places,
            state: tokio::sync::Mutex::new(JoinState::default()),
        });
        let all: Vec<usize> = (0..stream.places.len()).collect();
        let failed = self.join_places(&stream, &all).await;
        if !failed.is_empty() {
            tracing::warn!(
                tenant,
                "cannot count a stream's presence; retrying while it is open"
            );
            stream.state.lock().await.unjoined = failed;
            self.inner
                .retry
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(stream.clone());
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
            stream,
        }
    }

    /// Joins `stream` to the places `which` (indexes into its places) and
    /// appends the transitions decided: those it could not join.
    async fn join_places(&self, stream: &Joined, which: &[usize]) -> Vec<usize> {
        let settings = &self.inner.settings;
        let tenant = stream.tenant.as_str();
        let user = stream.user.as_deref();
        let joins = which.iter().map(|&i| {
            let (topic, member) = &stream.places[i];
            let membership = match (topic.as_str(), *member) {
                (TENANT_WIDE, _) => Some(Membership {
                    cap: usize::MAX,
                    claims: "{}",
                }),
                (_, true) => Some(Membership {
                    cap: settings.max_members,
                    claims: &stream.member_text,
                }),
                (_, false) => None,
            };
            self.inner.store.join(
                Entry {
                    conn: stream.conn,
                    tenant,
                    topic,
                    user,
                },
                membership,
            )
        });
        let results = futures_util::future::join_all(joins).await;
        let mut events = Vec::new();
        let mut failed = Vec::new();
        for (&i, r) in which.iter().zip(&results) {
            let topic = stream.places[i].0.as_str();
            let (kind, data) = match (r, user) {
                (Err(Unavailable), _) => {
                    failed.push(i);
                    continue;
                }
                (Ok(Some(Change::Joined(v))), Some(user)) if topic == TENANT_WIDE => {
                    events.push(lifecycle_event(
                        tenant,
                        "user.online",
                        serde_json::json!({"user": user, "v": v}),
                    ));
                    continue;
                }
                (Ok(Some(Change::Joined(v))), Some(user)) => (
                    "member.joined",
                    serde_json::json!({
                        "user": user,
                        "claims": &stream.member_data,
                        "v": v,
                    }),
                ),
                (Ok(Some(Change::Truncated(v))), _) => (
                    "members.truncated",
                    serde_json::json!({"max": settings.max_members, "v": v}),
                ),
                _ => continue,
            };
            events.push(member_event(tenant, topic, kind, data));
        }
        self.append_members(events).await;
        failed
    }

    /// Joins again the places of open streams that could not be joined
    /// (the presence store did not answer when they opened); a stream
    /// closed meanwhile is let go.
    async fn retry_joins(&self) {
        let pending: Vec<Arc<Joined>> =
            std::mem::take(&mut *self.inner.retry.lock().unwrap_or_else(|p| p.into_inner()));
        let mut again = Vec::new();
        for stream in pending {
            let mut state = stream.state.lock().await;
            if state.closed {
                continue;
            }
            let unjoined = std::mem::take(&mut state.unjoined);
            state.unjoined = self.join_places(&stream, &unjoined).await;
            let joined: Vec<String> = unjoined
                .iter()
                .filter(|i| !state.unjoined.contains(i))
                .map(|&i| stream.places[i].0.clone())
                .filter(|t| t != TENANT_WIDE)
                .collect();
            self.mark(&stream.tenant, &joined);
            if !state.unjoined.is_empty() {
                drop(state);
                again.push(stream);
            }
        }
        if !again.is_empty() {
            self.inner
                .retry
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(again);
        }
    }

    /// Appends member transitions. One that cannot be appended is lost
    /// (logged): the set then disagrees with the counts until the user's
    /// next transition.
    async fn append_members(&self, events: Vec<NewEvent>) {
        if events.is_empty() {
            return;
        }
        if let Err(e) = self.inner.publisher.publish(events).await {
            tracing::warn!(error = %e, "cannot append member transitions");
        }
    }

    /// Appends `member.left` for every member whose linger ran out, and
    /// marks the topics a sweep found changed.
    async fn sweep(&self) {
        let swept = self.inner.store.sweep(self.inner.settings.linger).await;
        if !swept.topics.is_empty() {
            self.inner
                .dirty
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(swept.topics.into_iter().filter(|(_, t)| t != TENANT_WIDE));
        }
        let events = swept
            .leaves
            .into_iter()
            .map(|l| {
                let data = serde_json::json!({"user": l.user, "v": l.v});
                if l.topic == TENANT_WIDE {
                    lifecycle_event(&l.tenant, "user.offline", data)
                } else {
                    member_event(&l.tenant, &l.topic, "member.left", data)
                }
            })
            .collect();
        self.append_members(events).await;
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
        let mut check = tokio::time::interval(self.inner.settings.check);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = check.tick() => self.check().await,
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
                _ = tick.tick() => {
                    self.retry_joins().await;
                    self.sweep().await;
                    self.decide_dirty().await
                }
            }
        }
    }

    /// The consistency check: the members topic of each topic with streams
    /// here (that keeps members) against the member set the store decided.
    /// A transition the log lacks (its append failed, or its node died
    /// between the decision and the append) or holds in excess makes them
    /// disagree; one that is only on its way does so for milliseconds. So a
    /// disagreement seen at two checks in a row with the log's set
    /// unchanged between them is repaired by a `presence.reset`: the whole
    /// set as the store holds it, with a `v` above every transition decided
    /// before it was read (the fold drops those that arrive later, and
    /// applies those decided after).
    async fn check(&self) {
        let topics: Vec<Key> = {
            let local = self.inner.local.lock().unwrap_or_else(|p| p.into_inner());
            let settings = &self.inner.settings;
            local
                .keys()
                .filter(|(_, t)| settings.members_of(t))
                .cloned()
                .collect()
        };
        self.inner
            .suspects
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k, _| topics.contains(k));
        futures_util::stream::iter(topics)
            .for_each_concurrent(PARALLEL, |(tenant, topic)| async move {
                self.check_topic(&tenant, &topic).await
            })
            .await;
    }

    async fn check_topic(&self, tenant: &str, topic: &str) {
        let inner = &self.inner;
        let name = Derived::Members.of(topic);
        // The log first, then the store: the store's set then holds every
        // transition the log does, and more only if one is missing or on
        // its way.
        let page = match inner
            .log
            .read(tenant, std::slice::from_ref(&name), None, 0)
            .await
        {
            Ok(page) => page,
            Err(e) => {
                tracing::debug!(tenant, error = %e, "cannot read a members topic to check it");
                return;
            }
        };
        let logged: crate::event::MemberSet = page
            .topics
            .iter()
            .find(|t| t.topic == name)
            .and_then(|t| t.retained.as_ref())
            .and_then(|r| serde_json::from_str(&r.data).ok())
            .unwrap_or_default();
        // A little under the period: the next check, on whichever node,
        // is not kept off by this one.
        let period = inner.settings.check.mul_f64(0.9);
        let Ok(Some(held)) = inner.store.held(tenant, topic, period).await else {
            return;
        };
        let key = (tenant.to_string(), topic.to_string());
        {
            let mut suspects = inner.suspects.lock().unwrap_or_else(|p| p.into_inner());
            if agrees(&logged, &held) {
                suspects.remove(&key);
                return;
            }
            if suspects.get(&key) != Some(&logged.v) {
                suspects.insert(key, logged.v);
                return;
            }
            suspects.remove(&key);
        }
        let members = held
            .members
            .into_iter()
            .map(|(user, data)| {
                let claims = match serde_json::from_str(&data) {
                    Ok(serde_json::Value::Object(claims)) => claims,
                    // Data not kept (a member from before it was): the log's.
                    _ => logged
                        .members
                        .iter()
                        .find(|m| m.user == user)
                        .map(|m| m.claims.clone())
                        .unwrap_or_default(),
                };
                crate::event::Member { user, claims }
            })
            .collect();
        let set = crate::event::MemberSet {
            members,
            truncated: held.truncated,
            v: held.v,
        };
        tracing::warn!(
            tenant,
            topic,
            logged = logged.members.len(),
            held = set.members.len(),
            "a members topic disagreed with the presence store at two checks; appending presence.reset"
        );
        let data = serde_json::to_value(&set).unwrap_or_default();
        self.append_members(vec![member_event(tenant, topic, "presence.reset", data)])
            .await;
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
            .decide(
                tenant,
                topic,
                inner.settings.interval,
                inner.settings.linger,
            )
            .await
        {
            Decision::Lost => true,
            Decision::Unchanged => false,
            Decision::Changed { counts, was } => {
                let mut events = vec![NewEvent {
                    tenant: tenant.to_string(),
                    topic: Derived::Occupancy.of(topic),
                    kind: "occupancy".into(),
                    data: serde_json::to_string(&counts).expect("two numbers serialize"),
                    retain: true,
                }];
                // The first stream, or the last one gone, as decided at this
                // interval (a topic occupied and vacated within one interval
                // says neither).
                let lifecycle = match (was.streams, counts.streams) {
                    (0, n) if n > 0 => Some("topic.occupied"),
                    (w, 0) if w > 0 => Some("topic.vacated"),
                    _ => None,
                };
                if let Some(kind) = lifecycle {
                    events.push(lifecycle_event(
                        tenant,
                        kind,
                        serde_json::json!({
                            "topic": topic,
                            "streams": counts.streams,
                            "users": counts.users,
                        }),
                    ));
                }
                match inner.publisher.publish(events).await {
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

/// The events that bring presence topics back to the truth when no stream
/// is open (an embedded node starting: no stream survives a restart), from
/// their retained states (tenant, derived topic, data): `occupancy` of zero
/// (and `topic.vacated` on the tenant's lifecycle topic) where the last one
/// was not, and a `member.left` per member still in a
/// set, each with a `v` just above the set's (below any later transition's,
/// which takes the clock's microseconds).
pub fn reset_events(states: &[(String, String, String)]) -> Vec<NewEvent> {
    let zero = Counts::default();
    let mut out = Vec::new();
    for (tenant, topic, data) in states {
        match crate::event::derived(topic) {
            Some((base, Derived::Occupancy)) => {
                let last: Option<Counts> = serde_json::from_str::<serde_json::Value>(data)
                    .ok()
                    .and_then(|v| {
                        Some(Counts {
                            streams: v.get("streams")?.as_u64()?,
                            users: v.get("users")?.as_u64()?,
                        })
                    });
                if last != Some(zero) {
                    out.push(NewEvent {
                        tenant: tenant.clone(),
                        topic: topic.clone(),
                        kind: "occupancy".into(),
                        data: serde_json::to_string(&zero).expect("two numbers serialize"),
                        retain: true,
                    });
                    out.push(lifecycle_event(
                        tenant,
                        "topic.vacated",
                        serde_json::json!({"topic": base, "streams": 0, "users": 0}),
                    ));
                }
            }
            Some((base, Derived::Members)) => {
                let Ok(set) = serde_json::from_str::<crate::event::MemberSet>(data) else {
                    continue;
                };
                for (i, m) in set.members.iter().enumerate() {
                    out.push(member_event(
                        tenant,
                        base,
                        "member.left",
                        serde_json::json!({"user": m.user, "v": set.v + 1 + i as u64}),
                    ));
                }
            }
            _ => {}
        }
    }
    out
}

/// Whether the log's member set and the store's agree: the same users,
/// with the same data where the store kept it, and the same cap state.
fn agrees(logged: &crate::event::MemberSet, held: &Held) -> bool {
    logged.truncated == held.truncated
        && logged.members.len() == held.members.len()
        && held.members.iter().all(|(user, data)| {
            logged.members.iter().any(|m| {
                m.user == *user
                    && match serde_json::from_str(data) {
                        Ok(serde_json::Value::Object(claims)) => claims == m.claims,
                        _ => true,
                    }
            })
        })
}

fn member_event(tenant: &str, topic: &str, kind: &str, data: serde_json::Value) -> NewEvent {
    NewEvent {
        tenant: tenant.to_string(),
        topic: Derived::Members.of(topic),
        kind: kind.into(),
        data: data.to_string(),
        // The store folds a members topic's retained events into the set.
        retain: true,
    }
}

/// One stream's places in presence: its topics (with whether their
/// members are kept) and, for a signed-in stream, the tenant-wide place.
struct Joined {
    conn: u64,
    tenant: String,
    user: Option<String>,
    /// The member data (the configured claims), and as JSON text.
    member_data: serde_json::Map<String, serde_json::Value>,
    member_text: String,
    places: Vec<(String, bool)>,
    /// Joins retried and the leave at close take turns under this lock, so
    /// a retried join never lands after the stream's leave.
    state: tokio::sync::Mutex<JoinState>,
}

#[derive(Default)]
struct JoinState {
    /// The stream closed: nothing is joined any more.
    closed: bool,
    /// Places not joined yet (indexes into `places`).
    unjoined: Vec<usize>,
}

/// Held while a stream is open; dropping it counts the stream out.
pub struct Guard {
    presence: Presence,
    stream: Arc<Joined>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let presence = self.presence.clone();
        let stream = self.stream.clone();
        let topics: Vec<String> = stream
            .places
            .iter()
            .map(|(t, _)| t.clone())
            .filter(|t| t != TENANT_WIDE)
            .collect();
        {
            let mut local = presence
                .inner
                .local
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            for t in &topics {
                let key = (stream.tenant.clone(), t.clone());
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
            let mut state = stream.state.lock().await;
            state.closed = true;
            let linger = presence.inner.settings.linger;
            let leaves = stream
                .places
                .iter()
                .enumerate()
                .filter(|(i, _)| !state.unjoined.contains(i))
                .map(|(_, (topic, member))| {
                    presence.inner.store.leave(
                        Entry {
                            conn: stream.conn,
                            tenant: &stream.tenant,
                            topic,
                            user: stream.user.as_deref(),
                        },
                        member.then_some(linger),
                    )
                });
            futures_util::future::join_all(leaves).await;
            drop(state);
            presence.mark(&stream.tenant, &topics);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The process's own presence store, made to fail its joins while
    /// `down` is set (as Redis not answering does).
    #[derive(Default)]
    struct Flaky {
        store: MemoryPresence,
        down: std::sync::atomic::AtomicBool,
    }

    #[async_trait::async_trait]
    impl PresenceStore for Flaky {
        async fn join(
            &self,
            e: Entry<'_>,
            member: Option<Membership<'_>>,
        ) -> Result<Option<Change>, Unavailable> {
            if self.down.load(Ordering::SeqCst) {
                return Err(Unavailable);
            }
            self.store.join(e, member).await
        }
        async fn leave(&self, e: Entry<'_>, linger: Option<Duration>) {
            self.store.leave(e, linger).await
        }
        async fn sweep(&self, linger: Duration) -> Swept {
            self.store.sweep(linger).await
        }
        async fn decide(&self, t: &str, topic: &str, i: Duration, l: Duration) -> Decision {
            self.store.decide(t, topic, i, l).await
        }
        async fn forget(&self, tenant: &str, topic: &str) {
            self.store.forget(tenant, topic).await
        }
        async fn held(
            &self,
            tenant: &str,
            topic: &str,
            period: Duration,
        ) -> Result<Option<Held>, Unavailable> {
            self.store.held(tenant, topic, period).await
        }
    }

    /// A stream whose places the presence store did not take when it
    /// opened is joined once the store answers again (its member joins
    /// then, once); one that closed before that is never joined.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stream_the_store_missed_is_joined_when_it_answers() {
        use crate::store::Store;
        let dir =
            std::env::temp_dir().join(format!("switchyard-presence-{}", crate::bids::new_id("t")));
        let log: Arc<dyn Store> = Arc::new(
            crate::store::sqlite::SqliteStore::open(&dir)
                .await
                .expect("open"),
        );
        log.create_tenant("acme", "Acme").await.expect("tenant");
        let flaky = Arc::new(Flaky::default());
        let stop = CancellationToken::new();
        let mut s = settings("room:*", "name");
        s.interval = Duration::from_millis(40);
        s.linger = Duration::ZERO;
        let presence = Presence::start(
            s,
            flaky.clone(),
            Publisher::log_only(log.clone()),
            log.clone(),
            stop.clone(),
        );
        let retained = |topic: &'static str| {
            let log = log.clone();
            async move {
                let page = log
                    .read("acme", &[topic.to_string()], None, 0)
                    .await
                    .expect("read");
                page.topics
                    .into_iter()
                    .find(|t| t.topic == topic)
                    .and_then(|t| t.retained)
                    .map(|r| r.data)
                    .unwrap_or_default()
            }
        };
        let pause = || tokio::time::sleep(Duration::from_millis(400));

        flaky.down.store(true, Ordering::SeqCst);
        let gone = presence
            .join("acme", vec!["room:1".into()], Some("u2"), None)
            .await;
        let open = presence
            .join(
                "acme",
                vec!["room:1".into()],
                Some("u1"),
                Some(r#"{"name":"Ann"}"#),
            )
            .await;
        drop(gone);
        pause().await;
        assert_eq!(retained("room:1~members").await, "", "nobody joined");
        flaky.down.store(false, Ordering::SeqCst);
        pause().await;
        let set: crate::event::MemberSet =
            serde_json::from_str(&retained("room:1~members").await).expect("a set");
        let users: Vec<&str> = set.members.iter().map(|m| m.user.as_str()).collect();
        assert_eq!(users, ["u1"], "the open stream joined, the closed one not");
        assert_eq!(set.members[0].claims["name"], "Ann");
        assert_eq!(
            retained("room:1~occupancy").await,
            r#"{"streams":1,"users":1}"#
        );
        drop(open);
        pause().await;
        let set: crate::event::MemberSet =
            serde_json::from_str(&retained("room:1~members").await).expect("a set");
        assert!(set.members.is_empty(), "{set:?}");
        assert_eq!(
            retained("room:1~occupancy").await,
            r#"{"streams":0,"users":0}"#
        );
        let page = log
            .read("acme", &[lifecycle_topic("acme")], Some(0), 100)
            .await
            .expect("read");
        let mut kinds: Vec<&str> = page.events.iter().map(|e| e.kind.as_str()).collect();
        // The leave and the vacancy are decided apart, in either order.
        kinds[2..].sort();
        assert_eq!(
            kinds,
            [
                "user.online",
                "topic.occupied",
                "topic.vacated",
                "user.offline"
            ]
        );
        stop.cancel();
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn settings(members: &str, claims: &str) -> Settings {
        Settings {
            interval: Duration::from_secs(1),
            linger: Duration::from_secs(5),
            check: Duration::from_secs(15),
            occupancy: None,
            members: crate::auth::publish::split(members),
            claims: crate::auth::publish::split(claims),
            max_members: 1_000,
        }
    }

    #[test]
    fn a_restart_resets_presence_to_nobody() {
        let set = r#"{"members":[{"user":"u1","claims":{}},{"user":"u2","claims":{}}],"truncated":false,"v":10}"#;
        let states = vec![
            (
                "t".to_string(),
                "a~occupancy".to_string(),
                r#"{"streams":2,"users":1}"#.to_string(),
            ),
            (
                "t".to_string(),
                "b~occupancy".to_string(),
                r#"{"streams":0,"users":0}"#.to_string(),
            ),
            ("t".to_string(), "a~members".to_string(), set.to_string()),
        ];
        let got: Vec<(String, String, String)> = reset_events(&states)
            .into_iter()
            .map(|e| (e.topic, e.kind, e.data))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "a~occupancy".into(),
                    "occupancy".into(),
                    r#"{"streams":0,"users":0}"#.into()
                ),
                (
                    "tenant:t~lifecycle".into(),
                    "topic.vacated".into(),
                    r#"{"streams":0,"topic":"a","users":0}"#.into()
                ),
                (
                    "a~members".into(),
                    "member.left".into(),
                    r#"{"user":"u1","v":11}"#.into()
                ),
                (
                    "a~members".into(),
                    "member.left".into(),
                    r#"{"user":"u2","v":12}"#.into()
                ),
            ]
        );
    }

    #[test]
    fn members_are_opted_in_by_pattern() {
        let s = settings("product:*,global", "name");
        assert!(s.members_of("product:p1"));
        assert!(s.members_of("global"));
        assert!(!s.members_of("ticket:1"));
        assert!(!settings("", "name").members_of("product:p1"));
    }

    #[test]
    fn occupancy_is_kept_for_every_topic_unless_narrowed() {
        let all = settings("", "name");
        assert!(all.tracks("feed:1") && all.tracks("global"));
        let narrowed = Settings {
            occupancy: Some(vec!["product:*".into()]),
            ..settings("ticket:*", "name")
        };
        assert!(narrowed.tracks("product:p1"));
        assert!(narrowed.tracks("ticket:7"), "members need the counts");
        assert!(!narrowed.tracks("feed:1"));
        let none = Settings {
            occupancy: Some(Vec::new()),
            ..settings("", "name")
        };
        assert!(!none.tracks("feed:1"));
    }

    #[test]
    fn member_data_are_the_configured_claims_only() {
        let s = settings("", "name,avatar");
        let token = r#"{"sub":"u1","tenant":"t","exp":1,"name":"Ann","email":"a@x"}"#;
        let got = s.member_claims(Some(token));
        assert_eq!(
            serde_json::Value::Object(got),
            serde_json::json!({"name": "Ann"})
        );
        assert!(s.member_claims(None).is_empty());
        assert!(s.member_claims(Some("not json")).is_empty());
    }
}
