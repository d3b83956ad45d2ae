//! `PluginStore` on SQLite (rusqlite): reads on the store's read
//! connections, changes on its rare writes' connection.

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension, Row};

use super::{message_row, SqliteStore, MESSAGE_COLS};
use crate::store::plugins::*;
use crate::store::Error;

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

    async fn record_upload(&self, u: UploadRow) -> Result<(), Error> {
        self.write(move |tx| {
            tx.prepare_cached(
                "INSERT INTO plugin_uploads (at, tenant, slot, hash, origin, actor, message, mode, outcome, error) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )?
            .execute(params![
                u.at, u.tenant, u.slot, u.hash, u.origin, u.actor, u.message, u.mode, u.outcome,
                u.error
            ])?;
            tx.prepare_cached(
                "DELETE FROM plugin_uploads WHERE tenant = ?1 AND slot = ?2 AND id <= \
                 (SELECT id FROM plugin_uploads WHERE tenant = ?1 AND slot = ?2 \
                  ORDER BY id DESC LIMIT 1 OFFSET ?3)",
            )?
            .execute(params![u.tenant, u.slot, UPLOADS_KEPT])?;
            Ok(())
        })
        .await
    }

    async fn plugin_uploads(
        &self,
        tenant: &str,
        slot: &str,
        limit: usize,
    ) -> Result<Vec<UploadRow>, Error> {
        let (tenant, slot) = (tenant.to_string(), slot.to_string());
        self.readers
            .with(move |c| {
                Ok(c.prepare_cached(&format!(
                    "SELECT {UPLOAD_COLS} FROM plugin_uploads WHERE tenant = ? AND slot = ? \
                         ORDER BY id DESC LIMIT ?"
                ))?
                .query_map(params![tenant, slot, limit as i64], |r| {
                    Ok(UploadRow {
                        id: r.get(0)?,
                        at: r.get(1)?,
                        tenant: r.get(2)?,
                        slot: r.get(3)?,
                        hash: r.get(4)?,
                        origin: r.get(5)?,
                        actor: r.get(6)?,
                        message: r.get(7)?,
                        mode: r.get(8)?,
                        outcome: r.get(9)?,
                        error: r.get(10)?,
                    })
                })?
                .collect::<Result<_, _>>()?)
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
