//! What the operator's API reads and writes in the system of record beside
//! the event log: the audit log of admin actions (one log for every node of
//! a deployment) and the listing of a tenant's topics.

use async_trait::async_trait;
use serde::Serialize;
use utoipa::ToSchema;

use super::Error;
use crate::event::Seq;

/// An admin action about to be recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewAudit {
    /// Who: `admin` (the admin token) or `operator:{subject}`.
    pub actor: String,
    /// What, as `area.verb` (`plugin.upload`, `tenant.create`, ...).
    pub action: String,
    /// The tenant acted on, if any (`None`: the default of every tenant, or
    /// no tenant at all).
    pub tenant: Option<String>,
    /// The plugin slot, if any.
    pub slot: Option<String>,
    /// A component's content hash, if any.
    pub hash: Option<String>,
    /// The operator's message, or what the action names (a user, a
    /// service, a mode).
    pub message: Option<String>,
}

/// One recorded admin action, as `GET /admin/audit` answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    /// Rising with each record (the cursor of the next page: `before`).
    pub id: i64,
    /// When: milliseconds since the Unix epoch.
    pub at: i64,
    /// Who: `admin` (the admin token) or `operator:{subject}` (an
    /// identity-provider token granting the operator role).
    pub actor: String,
    /// What: `plugin.upload`, `plugin.promote`, `plugin.rollback`,
    /// `plugin.deactivate`, `plugin.shadow_dropped`, `plugin.configure`,
    /// `tenant.create`, `token.mint` or `streams.disconnect`.
    pub action: String,
    /// The tenant acted on (`null`: the default slot of every tenant, or none).
    #[schema(required = true)]
    pub tenant: Option<String>,
    /// The plugin slot (`null`: none).
    #[schema(required = true)]
    pub slot: Option<String>,
    /// The component's content hash (`null`: none).
    #[schema(required = true)]
    pub hash: Option<String>,
    /// The operator's message, or what the action names.
    #[schema(required = true)]
    pub message: Option<String>,
}

/// One topic of a tenant, as the topic listing answers it (without its
/// subscribers, which the caller adds from the occupancy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicRow {
    /// The topic.
    pub topic: String,
    /// Its newest event's id still in the log (`None`: every event trimmed).
    pub head: Option<Seq>,
    /// Whether it has retained state (a `snapshot`).
    pub retained: bool,
    /// The id of the retained state's event.
    pub retained_seq: Option<Seq>,
    /// The highest id retention removed from it (0: none).
    pub trimmed: Seq,
    /// The retained data of its `T~occupancy` topic, if any (JSON).
    pub occupancy: Option<String>,
}

/// Audit log and topic listing.
#[async_trait]
pub trait AdminStore: Send + Sync + 'static {
    /// Records an admin action; returns it as stored.
    async fn audit(&self, entry: NewAudit) -> Result<AuditEntry, Error>;
    /// Recorded actions, newest first: with id below `before` (all when
    /// `None`), of `tenant` only when given, at most `limit`.
    async fn audit_log(
        &self,
        tenant: Option<&str>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, Error>;
    /// A tenant's topics (not the derived ones) named after `after`, in
    /// name order, at most `limit`: those with events in the log and those
    /// with a row of state (retained, trimmed).
    async fn topic_list(
        &self,
        tenant: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<TopicRow>, Error>;
}

/// The names of a tenant's topics in the log after `?2`, skipping from one
/// distinct name to the next through the `(tenant, topic, seq)` index (a
/// recursive query: one index probe per name, where `SELECT DISTINCT` would
/// read every event of the tenant). Derived topics (`~`) are left out after
/// the skip. Both databases run it as written; `?1` tenant, `?3` limit
/// (`$n` on Postgres).
pub(super) const TOPIC_NAMES: &str = "WITH RECURSIVE names(topic) AS ( \
       SELECT (SELECT topic FROM events WHERE tenant = ?1 AND topic > ?2 ORDER BY topic LIMIT 1) \
       UNION ALL \
       SELECT (SELECT topic FROM events WHERE tenant = ?1 AND topic > names.topic ORDER BY topic LIMIT 1) \
       FROM names WHERE names.topic IS NOT NULL \
     ) \
     SELECT topic FROM names WHERE topic IS NOT NULL AND topic NOT LIKE '%~%' LIMIT ?3";

/// The names of a tenant's topics with a row of state after `?2` (`?1`
/// tenant, `?3` limit).
pub(super) const STATE_NAMES: &str = "SELECT topic FROM topics WHERE tenant = ?1 AND topic > ?2 \
     AND topic NOT LIKE '%~%' ORDER BY topic LIMIT ?3";

/// One topic's figures (`?1` tenant, `?2` topic, `?3` its occupancy topic):
/// head, retained, retained id, trimmed, occupancy data.
pub(super) const TOPIC_FIGURES: &str = "SELECT \
       (SELECT MAX(seq) FROM events WHERE tenant = ?1 AND topic = ?2), \
       (SELECT retained IS NOT NULL FROM topics WHERE tenant = ?1 AND topic = ?2), \
       (SELECT retained_seq FROM topics WHERE tenant = ?1 AND topic = ?2), \
       (SELECT trimmed_seq FROM topics WHERE tenant = ?1 AND topic = ?2), \
       (SELECT retained FROM topics WHERE tenant = ?1 AND topic = ?3)";

/// The first `limit` names of two sorted lists, merged, each once.
pub(super) fn merge_names(a: Vec<String>, b: Vec<String>, limit: usize) -> Vec<String> {
    let mut all: Vec<String> = a.into_iter().chain(b).collect();
    all.sort();
    all.dedup();
    all.truncate(limit);
    all
}

/// `?n` placeholders as Postgres's `$n`.
pub(super) fn dollars(sql: &str) -> String {
    sql.replace("?1", "$1")
        .replace("?2", "$2")
        .replace("?3", "$3")
}
