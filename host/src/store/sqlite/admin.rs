//! `AdminStore` on SQLite (rusqlite): the audit log on the rare writes'
//! connection, reads on the read connections.

use async_trait::async_trait;
use rusqlite::{params, Row};

use super::SqliteStore;
use crate::event::Seq;
use crate::store::admin::*;
use crate::store::Error;

const AUDIT_COLS: &str = "id, at, actor, action, tenant, slot, hash, message";

fn audit_row(r: &Row<'_>) -> rusqlite::Result<AuditEntry> {
    Ok(AuditEntry {
        id: r.get(0)?,
        at: r.get(1)?,
        actor: r.get(2)?,
        action: r.get(3)?,
        tenant: r.get(4)?,
        slot: r.get(5)?,
        hash: r.get(6)?,
        message: r.get(7)?,
    })
}

#[async_trait]
impl AdminStore for SqliteStore {
    async fn audit(&self, e: NewAudit) -> Result<AuditEntry, Error> {
        self.write(move |tx| {
            let at = crate::event::now_ms();
            tx.prepare_cached(
                "INSERT INTO audit_log (at, actor, action, tenant, slot, hash, message) \
                 VALUES (?, ?, ?, ?, ?, ?, ?)",
            )?
            .execute(params![
                at, e.actor, e.action, e.tenant, e.slot, e.hash, e.message
            ])?;
            Ok(AuditEntry {
                id: tx.last_insert_rowid(),
                at,
                actor: e.actor,
                action: e.action,
                tenant: e.tenant,
                slot: e.slot,
                hash: e.hash,
                message: e.message,
            })
        })
        .await
    }

    async fn audit_log(
        &self,
        tenant: Option<&str>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, Error> {
        let tenant = tenant.map(str::to_string);
        self.readers
            .with(move |c| {
                Ok(c.prepare_cached(&format!(
                    "SELECT {AUDIT_COLS} FROM audit_log \
                     WHERE (?1 IS NULL OR tenant = ?1) AND id < ?2 ORDER BY id DESC LIMIT ?3"
                ))?
                .query_map(
                    params![tenant, before.unwrap_or(i64::MAX), limit as i64],
                    audit_row,
                )?
                .collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }

    async fn topic_list(
        &self,
        tenant: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<TopicRow>, Error> {
        let (tenant, after) = (tenant.to_string(), after.to_string());
        self.readers
            .with(move |c| {
                let names = |sql: &str| -> Result<Vec<String>, Error> {
                    Ok(c.prepare_cached(sql)?
                        .query_map(params![tenant, after, limit as i64], |r| r.get(0))?
                        .collect::<Result<Vec<String>, _>>()?)
                };
                let names = merge_names(names(TOPIC_NAMES)?, names(STATE_NAMES)?, limit);
                let mut figures = c.prepare_cached(TOPIC_FIGURES)?;
                let mut out = Vec::with_capacity(names.len());
                for topic in names {
                    let occupancy = crate::event::Derived::Occupancy.of(&topic);
                    let row = figures.query_row(params![tenant, topic, occupancy], |r| {
                        Ok(TopicRow {
                            head: r.get::<_, Option<i64>>(0)?.map(|s| s as Seq),
                            retained: r.get::<_, Option<bool>>(1)?.unwrap_or(false),
                            retained_seq: r.get::<_, Option<i64>>(2)?.map(|s| s as Seq),
                            trimmed: r.get::<_, Option<i64>>(3)?.unwrap_or(0) as Seq,
                            occupancy: r.get(4)?,
                            topic: String::new(),
                        })
                    })?;
                    out.push(TopicRow { topic, ..row });
                }
                Ok(out)
            })
            .await
    }
}
