//! The system of record: tenants and the event log, behind one trait with a
//! SQLite implementation (embedded mode) and a Postgres one (cluster mode).
//!
//! The store is also the sequencer. Appending bumps the tenant's `last_seq`
//! inside the same transaction as the inserts, so event ids are gapless and
//! in commit order: if id N is visible, every id below it is too. Fan-out and
//! replay lean on that.
//!
//! One driver per database: SQLite through rusqlite, every call on a blocking
//! thread (`sqlite_writer.rs` for batches and the rare writes,
//! `sqlite_reader.rs` for reads), and Postgres through sqlx. Each table's
//! rows are mapped once per backend.

pub(crate) mod batch;
pub mod bids;
#[cfg(test)]
mod contract;
mod migrate;
pub mod plugins;
pub mod postgres;
mod postgres_bids;
pub mod sqlite;
mod sqlite_bids;
mod sqlite_reader;
mod sqlite_writer;

use std::borrow::Borrow;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;

use crate::event::{NewEvent, Seq, StoredEvent};

/// Store failures. Drivers' errors are kept only as sources (for the log):
/// what a client may be shown is each variant's own words.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database does not answer (connection refused, pool timeout, ...).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The tenant does not exist.
    #[error("unknown tenant {0:?}")]
    UnknownTenant(String),
    /// An idempotency key of a publish was used before for another request.
    #[error("{KEY_REUSED}")]
    KeyReused,
    /// A keyed write found its key taken by a write committed meanwhile;
    /// run again, it sees the key.
    #[error("an idempotency key was stored concurrently; retried")]
    KeyRaced,
    /// The write does not apply to the data as it is.
    #[error("{0}")]
    Conflict(#[source] ConflictReason),
    /// Migrations could not be applied.
    #[error("migration {version} failed: {source}")]
    Migration {
        /// The migration.
        version: i64,
        /// The cause (the driver's error).
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Any other database error (the driver's, as the source).
    #[error("database error")]
    Database(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A fault of the server itself.
    #[error("internal store error: {0}")]
    Internal(String),
}

/// Why a write conflicts with what is stored; its text is safe to show a
/// client.
#[derive(Debug, thiserror::Error)]
pub enum ConflictReason {
    /// A tenant with this slug exists.
    #[error("tenant {0:?} already exists")]
    TenantExists(String),
    /// A bid's idempotency key was used by this bidder for another bid.
    #[error("this idempotency key was already used for another bid")]
    BidKeyReused,
    /// A plugin slot change does not apply to the slot as it is.
    #[error("{0}")]
    Slot(#[from] plugins::Refusal),
    /// A product kept changing under its decision rounds.
    #[error("the product changed during {0} decision rounds in a row")]
    RoundsContended(u32),
    /// Some other unique key exists (the driver's error as the source).
    #[error("a unique key already exists")]
    Duplicate(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_) => Error::Unavailable(e.to_string()),
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                Error::Conflict(ConflictReason::Duplicate(Box::new(e)))
            }
            _ => Error::Database(Box::new(e)),
        }
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode as C;
        match e.sqlite_error_code() {
            Some(C::DatabaseBusy | C::DatabaseLocked | C::CannotOpen | C::DiskFull)
            | Some(C::SystemIoFailure) => Error::Unavailable(e.to_string()),
            Some(C::ConstraintViolation) => Error::Conflict(ConflictReason::Duplicate(Box::new(e))),
            _ => Error::Database(Box::new(e)),
        }
    }
}

/// Where committed events go (the fan-out): told once per write, after its
/// commit, with the events it appended.
pub trait Committed: Send + Sync + 'static {
    /// `events` were committed (in id order within a tenant).
    fn committed(&self, events: &[StoredEvent]);
}

/// The end of a store's commit path: every write that appends events (the
/// batch's writes, a cluster decision round) hands them here after its
/// commit, before it answers. It is connected once, when the fan-out exists
/// (`Publisher::start`); until then committed events go nowhere but the log,
/// where the fan-out's tail check finds them.
#[derive(Clone, Default)]
pub struct Commits(Arc<OnceLock<Arc<dyn Committed>>>);

impl Commits {
    /// Connects the commit path to `sink`; `false` if it already was (to
    /// another sink, which keeps it).
    pub fn connect(&self, sink: Arc<dyn Committed>) -> bool {
        self.0.set(sink).is_ok()
    }

    /// Hands committed events on.
    pub(crate) fn committed(&self, events: &[StoredEvent]) {
        if let Some(sink) = self.0.get() {
            if !events.is_empty() {
                sink.committed(events);
            }
        }
    }
}

/// A tenant.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Tenant {
    /// URL-safe identifier.
    pub slug: String,
    /// Display name.
    pub name: String,
    /// Creation time, ms since the epoch.
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

/// A stored direct message.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Message {
    /// Unique id (across tenants).
    pub id: i64,
    /// Sender's user id.
    pub from: String,
    /// Recipient's user id.
    pub to: String,
    /// The product it is about, if any.
    pub product_id: Option<String>,
    /// The text.
    pub body: String,
    /// ms since the epoch.
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

/// Everything the core needs from a system of record.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Answers when the database does.
    async fn ping(&self) -> Result<(), Error>;

    /// The end of this store's commit path, where every write's committed
    /// events come out (`BidStore` rounds included).
    fn commits(&self) -> &Commits;

    /// Creates a tenant; `Conflict(TenantExists)` if the slug is taken.
    async fn create_tenant(&self, slug: &str, name: &str) -> Result<Tenant, Error>;

    /// Looks a tenant up.
    async fn tenant(&self, slug: &str) -> Result<Option<Tenant>, Error>;

    /// Every tenant, by slug.
    async fn tenants(&self) -> Result<Vec<Tenant>, Error>;

    /// Appends events in one transaction and returns them with their ids, in
    /// input order. Fails with `UnknownTenant` (appending nothing) if any
    /// event names a tenant that does not exist.
    async fn append(&self, events: Vec<NewEvent>) -> Result<Vec<StoredEvent>, Error>;

    /// A consistent read: events of `topics` with id above `after` (none when
    /// `after` is `None`), the tenant's head and the topics' state.
    async fn read(
        &self,
        tenant: &str,
        topics: &[String],
        after: Option<Seq>,
        limit: usize,
    ) -> Result<Page, Error>;

    /// The newest `limit` events of one topic, oldest first.
    async fn latest(&self, tenant: &str, topic: &str, limit: usize) -> Result<Page, Error>;

    /// Events of every topic of a tenant with `after < id <= upto`, in order
    /// (used to fill fan-out gaps).
    async fn range(&self, tenant: &str, after: Seq, upto: Seq) -> Result<Vec<StoredEvent>, Error>;

    /// Each tenant's highest id.
    async fn heads(&self) -> Result<Vec<(String, Seq)>, Error>;

    /// Keeps the newest `keep` events of a topic, recording what it removed.
    async fn trim_topic(&self, tenant: &str, topic: &str, keep: u64) -> Result<u64, Error>;

    /// Removes events older than `cutoff_ms`, recording what it removed.
    async fn trim_older_than(&self, cutoff_ms: i64) -> Result<u64, Error>;

    /// Appends events under an idempotency key, in one transaction with the
    /// key: the first time they are stored; again with the same request
    /// hash, nothing is stored and the ids stored then are answered; with
    /// another hash, `KeyReused`. Keys created before `key.since_ms` count as
    /// unused.
    async fn append_keyed(&self, key: PublishKey, events: Vec<NewEvent>) -> Result<Keyed, Error>;

    /// Removes idempotency keys created before `cutoff_ms`.
    async fn trim_publish_keys(&self, cutoff_ms: i64) -> Result<u64, Error>;

    /// Stores a message and, in the same transaction, the events announcing
    /// it; returns the message, the recipient's unread count and the events
    /// (which went to the commit path before the answer).
    async fn post_message(
        &self,
        msg: &NewMessage,
        notes: &[Notification],
    ) -> Result<(Message, u64, Vec<StoredEvent>), Error>;

    /// Marks a user's messages read up to `up_to` (never backwards) and
    /// publishes the new unread count; returns it and the event.
    async fn mark_read(
        &self,
        tenant: &str,
        user: &str,
        up_to: i64,
    ) -> Result<(u64, Vec<StoredEvent>), Error>;

    /// Messages to or from a user with id above `after`, oldest first.
    async fn messages(
        &self,
        tenant: &str,
        user: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<Message>, Error>;

    /// A user's unread count.
    async fn unread(&self, tenant: &str, user: &str) -> Result<u64, Error>;

    /// The shared secret `name`, storing `candidate` if there is none yet
    /// (so every node of a cluster ends up with the same one).
    async fn secret(&self, name: &str, candidate: &str) -> Result<String, Error>;
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
