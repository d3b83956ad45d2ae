//! Plugin versions and slot state in the system of record, so a change made
//! on one node reaches every node (each polls `revs`).

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::Error;

/// A slot's stored state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotRow {
    /// Tenant slug, or `""` for the default of every tenant.
    pub tenant: String,
    /// Slot name.
    pub slot: String,
    /// Active version (content hash); `None`: the built-in rule.
    pub active: Option<String>,
    /// Where the active version came from (`file:…`, `admin`, `bundled`, `rollback`, ...).
    pub origin: Option<String>,
    /// When it became active, ms since the epoch.
    pub active_at: Option<i64>,
    /// Candidate running in shadow.
    pub shadow: Option<String>,
    /// Earlier active versions, newest first.
    pub history: Vec<String>,
    /// The plugin's configuration.
    pub config: BTreeMap<String, String>,
    /// Bumped on every change.
    pub rev: i64,
}

/// One component a slot was given (an upload, a watched-dir file, a bundled
/// one), as the slot's upload history shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[schema(as = PluginUpload)]
pub struct UploadRow {
    /// Its place in the history (0 before it is stored).
    pub id: i64,
    /// When, ms since the epoch.
    pub at: i64,
    /// Tenant slug, `""` for the default slot.
    pub tenant: String,
    /// Slot name.
    pub slot: String,
    /// The component's content hash.
    pub hash: String,
    /// `upload` (the admin API), `watched` (the plugins dir) or `bundled`.
    pub origin: String,
    /// Who: `admin` (the admin token) or `operator:{subject}`; null for
    /// the watched dir and a bundled component.
    #[schema(required = true)]
    pub actor: Option<String>,
    /// The operator's message (`X-Switchyard-Message` or `?message=`).
    #[schema(required = true)]
    pub message: Option<String>,
    /// `active` or `shadow`.
    pub mode: String,
    /// `installed` or `refused`.
    pub outcome: String,
    /// Why it was refused.
    #[schema(required = true)]
    pub error: Option<String>,
}

/// Uploads kept per slot.
pub const UPLOADS_KEPT: i64 = 200;

/// A change to a slot, computed from its current row; an `Err` aborts it.
pub type SlotChange = Box<dyn FnOnce(SlotRow) -> Result<SlotRow, Refusal> + Send>;

/// Why a slot change does not apply to the row as it is (no earlier version,
/// no candidate, ...): the store answers it as a `Conflict`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub &'static str);

/// A stored message and the notifications published for it, for
/// `plugin replay` of a notification shaper.
#[derive(Debug, Clone)]
pub struct RecordedMessage {
    /// Tenant slug.
    pub tenant: String,
    /// The message.
    pub message: super::Message,
    /// What was sent: `(recipient, kind, data)` of every event of a `user:`
    /// topic whose data names this `message_id` (still in the log), in id order.
    pub sent: Vec<(String, String, serde_json::Map<String, serde_json::Value>)>,
}

/// A stream request as recorded for `plugin replay` of a stream authorizer.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// Tenant slug.
    pub tenant: String,
    /// The request, in the JSON of recorded cases (`stream_request_json`).
    pub request: String,
    /// What was decided, in the same JSON as a case's output.
    pub decision: String,
    /// The version that decided (`stream-authorizer@{hash}` or `builtin`).
    pub decided_by: String,
}

/// Events of `user:` topics that may announce messages created at or after
/// `since` (event times and message times come from the same clock, within
/// a transaction of each other).
pub(super) const SENT_SLACK_MS: i64 = 60_000;

/// Matches notification events (`(topic, payload)`) to `messages` by the
/// `message_id` in their data.
pub(super) fn attach_sent(messages: &mut [RecordedMessage], events: Vec<(String, String)>) {
    let by_id: std::collections::HashMap<i64, usize> = messages
        .iter()
        .enumerate()
        .map(|(i, m)| (m.message.id, i))
        .collect();
    for (topic, payload) in events {
        let Ok(serde_json::Value::Object(mut event)) = serde_json::from_str(&payload) else {
            continue;
        };
        let Some(serde_json::Value::Object(mut data)) = event.remove("data") else {
            continue;
        };
        let Some(i) = data
            .get("message_id")
            .and_then(serde_json::Value::as_i64)
            .and_then(|id| by_id.get(&id))
        else {
            continue;
        };
        data.remove("message_id");
        let kind = event
            .get("type")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_string();
        let recipient = topic.strip_prefix("user:").unwrap_or(&topic).to_string();
        messages[*i].sent.push((recipient, kind, data));
    }
}

/// Plugin storage.
#[async_trait]
pub trait PluginStore: Send + Sync + 'static {
    /// The latest `limit` messages (of one tenant, or all), oldest first,
    /// each with the notifications published for it.
    async fn recorded_messages(
        &self,
        tenant: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RecordedMessage>, Error>;
    /// Stores stream requests, keeping the latest `keep` of each tenant.
    async fn record_stream_requests(
        &self,
        batch: Vec<RecordedRequest>,
        keep: usize,
    ) -> Result<(), Error>;
    /// The latest `limit` recorded stream requests (of one tenant, or all),
    /// oldest first.
    async fn recorded_stream_requests(
        &self,
        tenant: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RecordedRequest>, Error>;
    /// Records a component a slot was given, keeping the latest
    /// [`UPLOADS_KEPT`] of the slot.
    async fn record_upload(&self, row: UploadRow) -> Result<(), Error>;
    /// A slot's latest `limit` uploads, newest first.
    async fn plugin_uploads(
        &self,
        tenant: &str,
        slot: &str,
        limit: usize,
    ) -> Result<Vec<UploadRow>, Error>;
    /// Every slot row.
    async fn plugin_slots(&self) -> Result<Vec<SlotRow>, Error>;
    /// `(tenant, slot, rev)` of every row: cheap enough to poll.
    async fn plugin_revs(&self) -> Result<Vec<(String, String, i64)>, Error>;
    /// A version's component bytes.
    async fn plugin_wasm(&self, hash: &str) -> Result<Option<Vec<u8>>, Error>;
    /// Stores `wasm` (if given) and applies `change` to the slot's row in one
    /// transaction, bumping `rev`; versions no slot refers to any more are
    /// deleted. A refused change is `Conflict`.
    async fn plugin_update(
        &self,
        tenant: &str,
        slot: &str,
        wasm: Option<(&str, &[u8])>,
        change: SlotChange,
    ) -> Result<SlotRow, Error>;
}

// One argument per column, in the order of `COLS`.
#[allow(clippy::too_many_arguments)]
pub(super) fn row_from(
    tenant: String,
    slot: String,
    active: Option<String>,
    origin: Option<String>,
    active_at: Option<i64>,
    shadow: Option<String>,
    history: String,
    config: String,
    rev: i64,
) -> SlotRow {
    SlotRow {
        tenant,
        slot,
        active,
        origin,
        active_at,
        shadow,
        history: serde_json::from_str(&history).unwrap_or_default(),
        config: serde_json::from_str(&config).unwrap_or_default(),
        rev,
    }
}

pub(super) fn texts(row: &SlotRow) -> (String, String) {
    (
        serde_json::to_string(&row.history).expect("strings serialize"),
        serde_json::to_string(&row.config).expect("strings serialize"),
    )
}

pub(super) const UPLOAD_COLS: &str =
    "id, at, tenant, slot, hash, origin, actor, message, mode, outcome, error";

pub(super) const COLS: &str =
    "tenant, slot, active, origin, active_at, shadow, history, config, rev";
pub(super) const GC: &str = "DELETE FROM plugin_versions WHERE hash NOT IN \
    (SELECT active FROM plugin_slots WHERE active IS NOT NULL \
     UNION SELECT shadow FROM plugin_slots WHERE shadow IS NOT NULL)";

/// The earliest message time per tenant of `messages`: where to start
/// looking for the events announcing them.
pub(super) fn since_by_tenant(messages: &[RecordedMessage]) -> BTreeMap<String, i64> {
    let mut since: BTreeMap<String, i64> = BTreeMap::new();
    for m in messages {
        let t = since.entry(m.tenant.clone()).or_insert(i64::MAX);
        *t = (*t).min(m.message.created_at);
    }
    since
}
