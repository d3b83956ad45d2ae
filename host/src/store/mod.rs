//! The system of record: tenants and the event log, behind one trait with a
//! SQLite implementation (embedded mode) and a Postgres one (cluster mode).
//!
//! The store is also the sequencer. Appending bumps the tenant's `last_seq`
//! inside the same transaction as the inserts, so event ids are gapless and
//! in commit order: if id N is visible, every id below it is too. Fan-out and
//! replay lean on that.
//!
//! One driver per database: SQLite through rusqlite, every call on a blocking
//! thread (`sqlite/writer.rs` for batches and the rare writes,
//! `sqlite/reader.rs` for reads), and Postgres through sqlx. Each table's
//! rows are mapped once per backend.

pub mod admin;
pub(crate) mod batch;
pub mod bids;
#[cfg(test)]
mod contract;
mod migrate;
pub mod placed;
pub mod plugins;
pub mod postgres;
pub mod sqlite;
mod types;

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;

pub(crate) use types::{
    assign_seqs, folded_topics, message_events, retained_writes, tenant_counts, unread_event,
};
pub use types::{
    Keyed, Message, NewMessage, Notification, Page, PublishKey, Retained, Tenant, TopicState,
    KEY_REUSED,
};

use crate::event::{NewEvent, Seq, StoredEvent};

/// Store failures. Drivers' errors are kept as sources; what a client may
/// be shown is our own words (`public`, and the conflicts' reasons).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database does not answer (connection refused, pool timeout, ...):
    /// the cause (the driver's error, or our own words) as the source, shared
    /// by every write of a batch that failed with it.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] std::sync::Arc<dyn std::error::Error + Send + Sync>),
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
    /// The tenant is being moved out of this database, or was
    /// (`tenants.moved_to`): the database refuses its writes, and reads
    /// past the head it was moved at. The placement layer (`placed`) waits
    /// for the move and runs the call again where the tenant is.
    #[error("tenant {0:?} is being moved to another database")]
    Moved(String),
    /// Migrations could not be applied.
    #[error("migration {version} failed: {source}")]
    Migration {
        /// The migration.
        version: i64,
        /// The cause (the driver's error).
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Any other database error (the driver's, as the source; logs show
    /// its text, response bodies never do: `public`).
    #[error("database error: {0}")]
    Database(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A fault of the server itself.
    #[error("internal store error: {0}")]
    Internal(String),
}

impl Error {
    /// This error as one of the callers that shared a read
    /// (`crate::coalesce`) gets it: the same kind where the kind carries
    /// what the caller acts on, the words otherwise.
    pub fn shared(e: std::sync::Arc<Error>) -> Error {
        std::sync::Arc::try_unwrap(e).unwrap_or_else(|e| match &*e {
            Error::Unavailable(cause) => Error::Unavailable(cause.clone()),
            Error::UnknownTenant(t) => Error::UnknownTenant(t.clone()),
            Error::KeyReused => Error::KeyReused,
            Error::KeyRaced => Error::KeyRaced,
            Error::Moved(t) => Error::Moved(t.clone()),
            other => Error::Internal(other.to_string()),
        })
    }

    /// The database does not answer, because of `cause`.
    pub fn unavailable(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Error {
        Error::Unavailable(std::sync::Arc::from(cause.into()))
    }

    /// What happened in our own words, without a driver's text: for a
    /// response body (`/ready`), where `Display` (for logs) may carry the
    /// driver's message.
    pub fn public(&self) -> String {
        match self {
            Error::Unavailable(_) => "the database is not answering".into(),
            Error::Migration { version, .. } => format!("migration {version} failed"),
            Error::Database(_) => "database error".into(),
            Error::Internal(_) => "internal store error".into(),
            Error::UnknownTenant(_)
            | Error::KeyReused
            | Error::KeyRaced
            | Error::Conflict(_)
            | Error::Moved(_) => self.to_string(),
        }
    }
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
    /// A tenant was to be placed on or moved to a database the deployment
    /// does not have.
    #[error("there is no database {0:?} (SWITCHYARD_DATABASES names them)")]
    UnknownDatabase(String),
    /// A move of the tenant is running (on some node).
    #[error("tenant {0:?} is being moved already")]
    MoveRunning(String),
    /// A unique key exists (in SQLite: any constraint refused the write);
    /// the driver's error is the source.
    #[error("a unique key already exists")]
    Duplicate(#[source] Box<dyn std::error::Error + Send + Sync>),
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

    /// The ids of the events stored under an idempotency key, while the
    /// key is kept (a source's entry → the events it became).
    async fn keyed_ids(&self, tenant: &str, key: &str) -> Result<Option<Vec<Seq>>, Error>;

    /// Removes idempotency keys created before `cutoff_ms`, and sources'
    /// keys (`src {source} …`, see `sources/`) created before
    /// `source_cutoff_ms` (no later than `cutoff_ms`).
    async fn trim_publish_keys(&self, cutoff_ms: i64, source_cutoff_ms: i64) -> Result<u64, Error>;

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
