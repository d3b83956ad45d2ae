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
const SENT_SLACK_MS: i64 = 60_000;

/// Matches notification events (`(topic, payload)`) to `messages` by the
/// `message_id` in their data.
fn attach_sent(messages: &mut [RecordedMessage], events: Vec<(String, String)>) {
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
fn row_from(
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

fn texts(row: &SlotRow) -> (String, String) {
    (
        serde_json::to_string(&row.history).expect("strings serialize"),
        serde_json::to_string(&row.config).expect("strings serialize"),
    )
}

const COLS: &str = "tenant, slot, active, origin, active_at, shadow, history, config, rev";
const GC: &str = "DELETE FROM plugin_versions WHERE hash NOT IN \
    (SELECT active FROM plugin_slots WHERE active IS NOT NULL \
     UNION SELECT shadow FROM plugin_slots WHERE shadow IS NOT NULL)";

/// The earliest message time per tenant of `messages`: where to start
/// looking for the events announcing them.
fn since_by_tenant(messages: &[RecordedMessage]) -> BTreeMap<String, i64> {
    let mut since: BTreeMap<String, i64> = BTreeMap::new();
    for m in messages {
        let t = since.entry(m.tenant.clone()).or_insert(i64::MAX);
        *t = (*t).min(m.message.created_at);
    }
    since
}

/// SQLite implementation (rusqlite): reads on the store's read connections,
/// changes on its rare writes' connection.
mod sqlite_impl {
    use super::*;
    use crate::store::sqlite::{message_row, SqliteStore, MESSAGE_COLS};
    use rusqlite::{params, OptionalExtension, Row};

    /// A row of `SELECT {COLS}`.
    fn row(r: &Row<'_>) -> rusqlite::Result<SlotRow> {
        Ok(row_from(
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
            r.get(6)?,
            r.get(7)?,
            r.get(8)?,
        ))
    }

    #[async_trait]
    impl PluginStore for SqliteStore {
        async fn recorded_messages(
            &self,
            tenant: Option<&str>,
            limit: usize,
        ) -> Result<Vec<RecordedMessage>, Error> {
            let tenant = tenant.map(str::to_string);
            self.readers
                .with(move |c| {
                    let mut out = c
                        .prepare_cached(&format!(
                            "SELECT {MESSAGE_COLS}, tenant FROM messages \
                             WHERE (?1 IS NULL OR tenant = ?1) ORDER BY id DESC LIMIT ?2"
                        ))?
                        .query_map(params![tenant, limit as i64], |r| {
                            Ok(RecordedMessage {
                                message: message_row(r)?,
                                tenant: r.get(6)?,
                                sent: Vec::new(),
                            })
                        })?
                        .collect::<Result<Vec<_>, _>>()?;
                    out.reverse();
                    for (tenant, since) in since_by_tenant(&out) {
                        let events = c
                            .prepare_cached(
                                "SELECT topic, payload FROM events WHERE tenant = ? AND ts >= ? \
                                 AND topic LIKE 'user:%' AND type <> 'unread' ORDER BY seq",
                            )?
                            .query_map(params![tenant, since - SENT_SLACK_MS], |r| {
                                Ok((r.get(0)?, r.get(1)?))
                            })?
                            .collect::<Result<Vec<_>, _>>()?;
                        attach_sent(&mut out, events);
                    }
                    Ok(out)
                })
                .await
        }

        async fn record_stream_requests(
            &self,
            batch: Vec<RecordedRequest>,
            keep: usize,
        ) -> Result<(), Error> {
            self.write(move |tx| {
                let now = crate::event::now_ms();
                let mut tenants = std::collections::BTreeSet::new();
                for r in &batch {
                    tx.prepare_cached(
                        "INSERT INTO stream_requests (tenant, request, decision, decided_by, recorded_at) \
                         VALUES (?, ?, ?, ?, ?)",
                    )?
                    .execute(params![r.tenant, r.request, r.decision, r.decided_by, now])?;
                    tenants.insert(r.tenant.as_str());
                }
                for tenant in tenants {
                    tx.prepare_cached(
                        "DELETE FROM stream_requests WHERE tenant = ?1 AND id <= \
                         (SELECT id FROM stream_requests WHERE tenant = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
                    )?
                    .execute(params![tenant, keep as i64])?;
                }
                Ok(())
            })
            .await
        }

        async fn recorded_stream_requests(
            &self,
            tenant: Option<&str>,
            limit: usize,
        ) -> Result<Vec<RecordedRequest>, Error> {
            let tenant = tenant.map(str::to_string);
            self.readers
                .with(move |c| {
                    let mut out = c
                        .prepare_cached(
                            "SELECT tenant, request, decision, decided_by FROM stream_requests \
                             WHERE (?1 IS NULL OR tenant = ?1) ORDER BY id DESC LIMIT ?2",
                        )?
                        .query_map(params![tenant, limit as i64], |r| {
                            Ok(RecordedRequest {
                                tenant: r.get(0)?,
                                request: r.get(1)?,
                                decision: r.get(2)?,
                                decided_by: r.get(3)?,
                            })
                        })?
                        .collect::<Result<Vec<_>, _>>()?;
                    out.reverse();
                    Ok(out)
                })
                .await
        }

        async fn plugin_slots(&self) -> Result<Vec<SlotRow>, Error> {
            self.readers
                .with(|c| {
                    Ok(
                        c.prepare_cached(&format!("SELECT {COLS} FROM plugin_slots"))?
                            .query_map([], row)?
                            .collect::<Result<_, _>>()?,
                    )
                })
                .await
        }

        async fn plugin_revs(&self) -> Result<Vec<(String, String, i64)>, Error> {
            self.readers
                .with(|c| {
                    Ok(
                        c.prepare_cached("SELECT tenant, slot, rev FROM plugin_slots")?
                            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                            .collect::<Result<_, _>>()?,
                    )
                })
                .await
        }

        async fn plugin_wasm(&self, hash: &str) -> Result<Option<Vec<u8>>, Error> {
            let hash = hash.to_string();
            self.readers
                .with(move |c| {
                    Ok(
                        c.prepare_cached("SELECT wasm FROM plugin_versions WHERE hash = ?")?
                            .query_row([hash], |r| r.get(0))
                            .optional()?,
                    )
                })
                .await
        }

        async fn plugin_update(
            &self,
            tenant: &str,
            slot: &str,
            wasm: Option<(&str, &[u8])>,
            change: SlotChange,
        ) -> Result<SlotRow, Error> {
            let (tenant, slot) = (tenant.to_string(), slot.to_string());
            let wasm = wasm.map(|(hash, bytes)| (hash.to_string(), bytes.to_vec()));
            self.write(move |tx| {
                let now = crate::event::now_ms();
                if let Some((hash, bytes)) = wasm {
                    tx.execute(
                        "INSERT INTO plugin_versions (hash, wasm, created_at) VALUES (?, ?, ?) \
                         ON CONFLICT (hash) DO NOTHING",
                        params![hash, bytes, now],
                    )?;
                }
                let current = tx
                    .query_row(
                        &format!("SELECT {COLS} FROM plugin_slots WHERE tenant = ? AND slot = ?"),
                        params![tenant, slot],
                        row,
                    )
                    .optional()?
                    .unwrap_or_else(|| SlotRow {
                        tenant: tenant.clone(),
                        slot: slot.clone(),
                        ..SlotRow::default()
                    });
                let rev = current.rev + 1;
                let mut next = change(current).map_err(|r| Error::Conflict(r.into()))?;
                next.rev = rev;
                let (history, config) = texts(&next);
                tx.execute(
                    "INSERT INTO plugin_slots (tenant, slot, active, origin, active_at, shadow, history, config, rev, updated_at) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
                     ON CONFLICT (tenant, slot) DO UPDATE SET active = excluded.active, origin = excluded.origin, \
                     active_at = excluded.active_at, shadow = excluded.shadow, history = excluded.history, \
                     config = excluded.config, rev = excluded.rev, updated_at = excluded.updated_at",
                    params![
                        tenant,
                        slot,
                        next.active,
                        next.origin,
                        next.active_at,
                        next.shadow,
                        history,
                        config,
                        rev,
                        now
                    ],
                )?;
                gc(tx)?;
                Ok(next)
            })
            .await
        }
    }

    /// Deletes versions no slot refers to; history entries keep their bytes
    /// too (rollback needs them).
    fn gc(tx: &rusqlite::Transaction<'_>) -> Result<(), Error> {
        let histories = tx
            .prepare_cached("SELECT history FROM plugin_slots")?
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        let kept: Vec<String> = histories
            .iter()
            .flat_map(|h| serde_json::from_str::<Vec<String>>(h).unwrap_or_default())
            .collect();
        let kept = serde_json::to_string(&kept).expect("strings serialize");
        tx.execute(
            &format!("{GC} AND hash NOT IN (SELECT value FROM json_each(?))"),
            [kept],
        )?;
        Ok(())
    }
}

mod postgres_impl {
    use super::*;
    use crate::store::postgres::{message_row, PostgresStore};
    use sqlx::postgres::PgRow;
    use sqlx::Row;

    fn row(r: &PgRow) -> Result<SlotRow, sqlx::Error> {
        Ok(row_from(
            r.try_get("tenant")?,
            r.try_get("slot")?,
            r.try_get("active")?,
            r.try_get("origin")?,
            r.try_get("active_at")?,
            r.try_get("shadow")?,
            r.try_get("history")?,
            r.try_get("config")?,
            r.try_get("rev")?,
        ))
    }

    #[async_trait]
    impl PluginStore for PostgresStore {
        async fn recorded_messages(
            &self,
            tenant: Option<&str>,
            limit: usize,
        ) -> Result<Vec<RecordedMessage>, Error> {
            let rows = sqlx::query(
                "SELECT id, tenant, sender, recipient, product_id, body, created_at FROM messages \
                 WHERE ($1::text IS NULL OR tenant = $1) ORDER BY id DESC LIMIT $2",
            )
            .bind(tenant)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
            let mut out = rows
                .iter()
                .map(|r| {
                    Ok(RecordedMessage {
                        tenant: r.try_get("tenant")?,
                        message: message_row(r)?,
                        sent: Vec::new(),
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()?;
            out.reverse();
            for (tenant, since) in since_by_tenant(&out) {
                let events: Vec<(String, String)> = sqlx::query_as(
                    "SELECT topic, payload FROM events WHERE tenant = $1 AND ts >= $2 \
                     AND topic LIKE 'user:%' AND type <> 'unread' ORDER BY seq",
                )
                .bind(&tenant)
                .bind(since - SENT_SLACK_MS)
                .fetch_all(&self.pool)
                .await?;
                attach_sent(&mut out, events);
            }
            Ok(out)
        }

        async fn record_stream_requests(
            &self,
            batch: Vec<RecordedRequest>,
            keep: usize,
        ) -> Result<(), Error> {
            let mut tx = self.pool.begin().await?;
            let now = crate::event::now_ms();
            let mut tenants = std::collections::BTreeSet::new();
            for r in &batch {
                sqlx::query(
                    "INSERT INTO stream_requests (tenant, request, decision, decided_by, recorded_at) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&r.tenant)
                .bind(&r.request)
                .bind(&r.decision)
                .bind(&r.decided_by)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                tenants.insert(r.tenant.as_str());
            }
            for tenant in tenants {
                sqlx::query(
                    "DELETE FROM stream_requests WHERE tenant = $1 AND id <= \
                     (SELECT id FROM stream_requests WHERE tenant = $1 ORDER BY id DESC LIMIT 1 OFFSET $2)",
                )
                .bind(tenant)
                .bind(keep as i64)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(())
        }

        async fn recorded_stream_requests(
            &self,
            tenant: Option<&str>,
            limit: usize,
        ) -> Result<Vec<RecordedRequest>, Error> {
            let rows: Vec<(String, String, String, String)> = sqlx::query_as(
                "SELECT tenant, request, decision, decided_by FROM stream_requests \
                 WHERE ($1::text IS NULL OR tenant = $1) ORDER BY id DESC LIMIT $2",
            )
            .bind(tenant)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
            Ok(rows
                .into_iter()
                .rev()
                .map(|(tenant, request, decision, decided_by)| RecordedRequest {
                    tenant,
                    request,
                    decision,
                    decided_by,
                })
                .collect())
        }

        async fn plugin_slots(&self) -> Result<Vec<SlotRow>, Error> {
            let rows = sqlx::query(&format!("SELECT {COLS} FROM plugin_slots"))
                .fetch_all(&self.pool)
                .await?;
            Ok(rows.iter().map(row).collect::<Result<_, _>>()?)
        }

        async fn plugin_revs(&self) -> Result<Vec<(String, String, i64)>, Error> {
            Ok(sqlx::query_as("SELECT tenant, slot, rev FROM plugin_slots")
                .fetch_all(&self.pool)
                .await?)
        }

        async fn plugin_wasm(&self, hash: &str) -> Result<Option<Vec<u8>>, Error> {
            Ok(
                sqlx::query_scalar("SELECT wasm FROM plugin_versions WHERE hash = $1")
                    .bind(hash)
                    .fetch_optional(&self.pool)
                    .await?,
            )
        }

        async fn plugin_update(
            &self,
            tenant: &str,
            slot: &str,
            wasm: Option<(&str, &[u8])>,
            change: SlotChange,
        ) -> Result<SlotRow, Error> {
            let mut tx = self.pool.begin().await?;
            let now = crate::event::now_ms();
            if let Some((hash, bytes)) = wasm {
                sqlx::query(
                    "INSERT INTO plugin_versions (hash, wasm, created_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (hash) DO NOTHING",
                )
                .bind(hash)
                .bind(bytes)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            // The row may not exist yet: create it first, then lock it, so two
            // nodes changing one slot apply their changes one after the other.
            sqlx::query(
                "INSERT INTO plugin_slots (tenant, slot, rev, updated_at) VALUES ($1, $2, 0, $3) \
                 ON CONFLICT (tenant, slot) DO NOTHING",
            )
            .bind(tenant)
            .bind(slot)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let current = sqlx::query(&format!(
                "SELECT {COLS} FROM plugin_slots WHERE tenant = $1 AND slot = $2 FOR UPDATE"
            ))
            .bind(tenant)
            .bind(slot)
            .fetch_one(&mut *tx)
            .await?;
            let current = row(&current)?;
            let rev = current.rev + 1;
            let mut next = change(current).map_err(|r| Error::Conflict(r.into()))?;
            next.rev = rev;
            let (history, config) = texts(&next);
            sqlx::query(
                "UPDATE plugin_slots SET active = $3, origin = $4, active_at = $5, shadow = $6, \
                 history = $7, config = $8, rev = $9, updated_at = $10 WHERE tenant = $1 AND slot = $2",
            )
            .bind(tenant)
            .bind(slot)
            .bind(&next.active)
            .bind(&next.origin)
            .bind(next.active_at)
            .bind(&next.shadow)
            .bind(history)
            .bind(config)
            .bind(rev)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            sqlx::query(&format!(
                "{GC} AND hash NOT IN (SELECT jsonb_array_elements_text(history::jsonb) FROM plugin_slots)"
            ))
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(next)
        }
    }
}
