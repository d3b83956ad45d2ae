//! The values the store's traits take and give (tenants, pages of the log,
//! messages, idempotency keys), and the steps of an append both backends
//! share (ids, per-tenant counts, the last retained event per topic).

use std::borrow::Borrow;

use crate::event::{NewEvent, Seq, StoredEvent};

/// A tenant (also as the admin API answers it).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Tenant {
    /// URL-safe identifier.
    #[schema(min_length = 1, max_length = 63, pattern = "^[a-z0-9][a-z0-9-]*$")]
    pub slug: String,
    /// Display name.
    pub name: String,
    /// Creation time: milliseconds since the Unix epoch.
    pub created_at: i64,
}

/// A topic's retained data: what a new subscriber gets as its `snapshot`.
#[derive(Debug, Clone)]
pub struct Retained {
    /// The data's compact JSON text.
    pub data: String,
    /// Id of the event that set it.
    pub seq: Seq,
    /// When it was set, ms since the epoch.
    pub ts: i64,
}

/// What the store knows about one topic besides its events.
#[derive(Debug, Clone)]
pub struct TopicState {
    /// The topic.
    pub topic: String,
    /// Highest id retention has removed from this topic (0: none).
    pub trimmed: Seq,
    /// Retained data, if any.
    pub retained: Option<Retained>,
}

/// One consistent read of a tenant's log for some topics.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// Events after the cursor, in id order, at most `limit`.
    pub events: Vec<StoredEvent>,
    /// The tenant's highest id at the time of the read.
    pub head: Seq,
    /// State of those requested topics that have any.
    pub topics: Vec<TopicState>,
}

/// A stored direct message (also as the API answers it).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Message {
    /// Unique id (across tenants).
    pub id: i64,
    /// Sender's user id.
    pub from: String,
    /// Recipient's user id.
    pub to: String,
    /// The product it is about, if any.
    #[schema(required = true)]
    pub product_id: Option<String>,
    /// The text.
    pub body: String,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
}

/// A message to store.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// Tenant slug.
    pub tenant: String,
    /// Sender.
    pub from: String,
    /// Recipient.
    pub to: String,
    /// The product it is about.
    pub product_id: Option<String>,
    /// The text.
    pub body: String,
}

/// A notification the shaper made of a message, published with it.
#[derive(Debug, Clone)]
pub struct Notification {
    /// Whose `user:` topic it goes to.
    pub recipient: String,
    /// Event type.
    pub kind: String,
    /// Event data (the store adds `message_id`).
    pub data: serde_json::Map<String, serde_json::Value>,
}

/// The events announcing a stored message: its notifications, then the
/// recipient's new unread count (retained, so it is their `snapshot`).
pub(crate) fn message_events(
    tenant: &str,
    msg: &Message,
    notes: &[Notification],
    unread: u64,
) -> Vec<NewEvent> {
    let mut events: Vec<NewEvent> = notes
        .iter()
        .map(|n| {
            let mut data = n.data.clone();
            data.insert("message_id".into(), msg.id.into());
            NewEvent {
                tenant: tenant.to_string(),
                topic: format!("user:{}", n.recipient),
                kind: n.kind.clone(),
                data: serde_json::Value::Object(data).to_string(),
                retain: false,
            }
        })
        .collect();
    events.push(unread_event(tenant, &msg.to, unread));
    events
}

/// The retained `unread` event of a user.
pub(crate) fn unread_event(tenant: &str, user: &str, unread: u64) -> NewEvent {
    NewEvent {
        tenant: tenant.to_string(),
        topic: format!("user:{user}"),
        kind: "unread".into(),
        data: serde_json::json!({ "unread": unread }).to_string(),
        retain: true,
    }
}

/// Groups a batch by tenant, in slug order: every backend bumps the counters
/// of a multi-tenant batch in the same order, so concurrent appends from
/// several nodes cannot deadlock.
pub(crate) fn tenant_counts<E: Borrow<NewEvent>>(events: &[E]) -> Vec<(&str, i64)> {
    let mut counts: std::collections::BTreeMap<&str, i64> = Default::default();
    for e in events {
        *counts.entry(e.borrow().tenant.as_str()).or_default() += 1;
    }
    counts.into_iter().collect()
}

/// The retained events of a batch that set a topic's state, with their
/// stored form: only the last one per topic (what an upsert of each in turn
/// would leave), so the state is written once per topic and batch.
pub(crate) fn retained_last<'a, E: Borrow<NewEvent>>(
    events: &'a [E],
    stored: &'a [StoredEvent],
) -> Vec<(&'a NewEvent, &'a StoredEvent)> {
    let mut last: std::collections::HashMap<(&str, &str), usize> = Default::default();
    let mut out: Vec<(&NewEvent, &StoredEvent)> = Vec::new();
    for (new, e) in events.iter().map(Borrow::borrow).zip(stored) {
        if !new.retain {
            continue;
        }
        match last.entry((new.tenant.as_str(), new.topic.as_str())) {
            std::collections::hash_map::Entry::Occupied(slot) => out[*slot.get()] = (new, e),
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(out.len());
                out.push((new, e));
            }
        }
    }
    out
}

/// A topic's retained state as a batch writes it.
pub(crate) struct RetainedWrite<'a> {
    pub tenant: &'a str,
    pub topic: &'a str,
    pub data: std::borrow::Cow<'a, str>,
    pub seq: crate::event::Seq,
    pub ts: i64,
}

fn folds(topic: &str) -> bool {
    crate::event::derived(topic).is_some_and(|(_, d)| d == crate::event::Derived::Members)
}

/// The topics of a batch whose retained state is a fold of their events
/// (`T~members`: the member set) rather than the last event's data: the
/// backend reads their current state first, in the batch's transaction.
pub(crate) fn folded_topics<E: Borrow<NewEvent>>(events: &[E]) -> Vec<(&str, &str)> {
    let mut out: Vec<(&str, &str)> = events
        .iter()
        .map(Borrow::borrow)
        .filter(|e| e.retain && folds(&e.topic))
        .map(|e| (e.tenant.as_str(), e.topic.as_str()))
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The retained state each topic of a batch is left with: the last
/// retained event's data, or for a folded topic the fold of its current
/// state (`prev`, read by the backend) and the batch's events in id order.
pub(crate) fn retained_writes<'a, E: Borrow<NewEvent>>(
    events: &'a [E],
    stored: &'a [StoredEvent],
    prev: &std::collections::HashMap<(String, String), String>,
) -> Vec<RetainedWrite<'a>> {
    retained_last(events, stored)
        .into_iter()
        .map(|(new, e)| {
            let data = if folds(&new.topic) {
                let of_topic = events
                    .iter()
                    .map(Borrow::borrow)
                    .filter(|n| n.retain && n.tenant == new.tenant && n.topic == new.topic)
                    .map(|n| (n.kind.as_str(), n.data.as_str()));
                let state = prev
                    .get(&(new.tenant.clone(), new.topic.clone()))
                    .map(String::as_str);
                std::borrow::Cow::Owned(crate::event::MemberSet::fold(state, of_topic))
            } else {
                std::borrow::Cow::Borrowed(new.data.as_str())
            };
            RetainedWrite {
                tenant: &new.tenant,
                topic: &new.topic,
                data,
                seq: e.seq,
                ts: e.ts,
            }
        })
        .collect()
}

/// Assigns ids: `lasts` holds each tenant's counter after the bump.
pub(crate) fn assign_seqs<E: Borrow<NewEvent>>(
    events: &[E],
    counts: &[(&str, i64)],
    lasts: &[i64],
    ts: i64,
) -> Vec<StoredEvent> {
    let mut next: std::collections::HashMap<&str, (i64, std::sync::Arc<str>)> = counts
        .iter()
        .zip(lasts)
        .map(|((t, n), last)| (*t, (last - n + 1, std::sync::Arc::from(*t))))
        .collect();
    events
        .iter()
        .map(|e| {
            let e = e.borrow();
            let slot = next
                .get_mut(e.tenant.as_str())
                .expect("every tenant of the batch was counted");
            let seq = slot.0 as Seq;
            slot.0 += 1;
            StoredEvent {
                seq,
                tenant: slot.1.clone(),
                topic: e.topic.clone(),
                kind: e.kind.clone(),
                json: crate::event::event_json(seq, &e.tenant, &e.topic, &e.kind, &e.data, ts),
                ts,
            }
        })
        .collect()
}

/// An idempotency key of a publish request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishKey {
    /// The tenant it belongs to (a batch's: its first event's).
    pub tenant: String,
    /// The client's `Idempotency-Key`.
    pub key: String,
    /// A hash of the request, to tell a retry from another request.
    pub hash: String,
    /// Keys created before this (ms) are expired.
    pub since_ms: i64,
}

/// What an append under an idempotency key did.
#[derive(Debug, Clone)]
pub enum Keyed {
    /// Stored now.
    New(Vec<StoredEvent>),
    /// The key was used before for the same request: the ids answered then
    /// and the time of its first event; nothing was stored.
    Repeated(Vec<Seq>, i64),
}

/// The message of a reused key with another request.
pub const KEY_REUSED: &str =
    "this Idempotency-Key was already used for another request; use a new key for a new request";
