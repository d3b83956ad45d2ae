//! `PluginStore` on Postgres (sqlx).

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::Row;

use super::{message_row, PostgresStore};
use crate::store::plugins::*;
use crate::store::Error;

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

/// Rows of the tenants still here: a moved tenant's old copy (`moved_at`)
/// stays for a grace period after its move (`moving.rs`), and its rows are
/// the other database's to list.
const HERE: &str = "tenant NOT IN (SELECT slug FROM tenants WHERE moved_at IS NOT NULL)";

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
        if self.fenced {
            let tenants: std::collections::BTreeSet<&str> =
                batch.iter().map(|r| r.tenant.as_str()).collect();
            super::guard(&mut tx, &tenants.into_iter().collect::<Vec<_>>()).await?;
        }
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

    async fn record_upload(&self, u: UploadRow) -> Result<(), Error> {
        let mut tx = self.pool.begin().await?;
        if self.fenced {
            super::guard(&mut tx, &[&u.tenant]).await?;
        }
        sqlx::query(
            "INSERT INTO plugin_uploads (at, tenant, slot, hash, origin, actor, message, mode, outcome, error) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(u.at)
        .bind(&u.tenant)
        .bind(&u.slot)
        .bind(&u.hash)
        .bind(&u.origin)
        .bind(&u.actor)
        .bind(&u.message)
        .bind(&u.mode)
        .bind(&u.outcome)
        .bind(&u.error)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM plugin_uploads WHERE tenant = $1 AND slot = $2 AND id <= \
             (SELECT id FROM plugin_uploads WHERE tenant = $1 AND slot = $2 \
              ORDER BY id DESC LIMIT 1 OFFSET $3)",
        )
        .bind(&u.tenant)
        .bind(&u.slot)
        .bind(UPLOADS_KEPT)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn plugin_uploads(
        &self,
        tenant: &str,
        slot: &str,
        limit: usize,
    ) -> Result<Vec<UploadRow>, Error> {
        let rows = sqlx::query(&format!(
            "SELECT {UPLOAD_COLS} FROM plugin_uploads WHERE tenant = $1 AND slot = $2 \
             ORDER BY id DESC LIMIT $3"
        ))
        .bind(tenant)
        .bind(slot)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            out.push(UploadRow {
                id: r.try_get("id")?,
                at: r.try_get("at")?,
                tenant: r.try_get("tenant")?,
                slot: r.try_get("slot")?,
                hash: r.try_get("hash")?,
                origin: r.try_get("origin")?,
                actor: r.try_get("actor")?,
                message: r.try_get("message")?,
                mode: r.try_get("mode")?,
                outcome: r.try_get("outcome")?,
                error: r.try_get("error")?,
            });
        }
        Ok(out)
    }

    async fn plugin_slots(&self) -> Result<Vec<SlotRow>, Error> {
        let rows = sqlx::query(&format!("SELECT {COLS} FROM plugin_slots WHERE {HERE}"))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(row).collect::<Result<_, _>>()?)
    }

    async fn plugin_revs(&self) -> Result<Vec<(String, String, i64)>, Error> {
        Ok(sqlx::query_as(&format!(
            "SELECT tenant, slot, rev FROM plugin_slots WHERE {HERE}"
        ))
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
        if self.fenced {
            super::guard(&mut tx, &[tenant]).await?;
        }
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
