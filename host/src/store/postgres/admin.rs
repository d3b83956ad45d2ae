//! `AdminStore` on Postgres (sqlx): one audit log for every node.

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::Row;

use super::PostgresStore;
use crate::event::Seq;
use crate::store::admin::*;
use crate::store::Error;

fn audit_row(r: &PgRow) -> Result<AuditEntry, sqlx::Error> {
    Ok(AuditEntry {
        id: r.try_get("id")?,
        at: r.try_get("at")?,
        actor: r.try_get("actor")?,
        action: r.try_get("action")?,
        tenant: r.try_get("tenant")?,
        slot: r.try_get("slot")?,
        hash: r.try_get("hash")?,
        message: r.try_get("message")?,
    })
}

#[async_trait]
impl AdminStore for PostgresStore {
    async fn audit(&self, e: NewAudit) -> Result<AuditEntry, Error> {
        let row = sqlx::query(
            "INSERT INTO audit_log (at, actor, action, tenant, slot, hash, message) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             RETURNING id, at, actor, action, tenant, slot, hash, message",
        )
        .bind(crate::event::now_ms())
        .bind(&e.actor)
        .bind(&e.action)
        .bind(&e.tenant)
        .bind(&e.slot)
        .bind(&e.hash)
        .bind(&e.message)
        .fetch_one(&self.pool)
        .await?;
        Ok(audit_row(&row)?)
    }

    async fn audit_log(
        &self,
        tenant: Option<&str>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, Error> {
        let rows = sqlx::query(
            "SELECT id, at, actor, action, tenant, slot, hash, message FROM audit_log \
             WHERE ($1::text IS NULL OR tenant = $1) AND id < $2 ORDER BY id DESC LIMIT $3",
        )
        .bind(tenant)
        .bind(before.unwrap_or(i64::MAX))
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(audit_row).collect::<Result<_, _>>()?)
    }

    async fn topic_list(
        &self,
        tenant: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<TopicRow>, Error> {
        let names = |sql: &'static str| async move {
            sqlx::query_scalar::<_, String>(&dollars(sql))
                .bind(tenant)
                .bind(after)
                .bind(limit as i64)
                .fetch_all(&self.pool)
                .await
        };
        let names = merge_names(names(TOPIC_NAMES).await?, names(STATE_NAMES).await?, limit);
        let figures = dollars(TOPIC_FIGURES);
        let mut out = Vec::with_capacity(names.len());
        for topic in names {
            let occupancy = crate::event::Derived::Occupancy.of(&topic);
            let r = sqlx::query(&figures)
                .bind(tenant)
                .bind(&topic)
                .bind(&occupancy)
                .fetch_one(&self.pool)
                .await?;
            out.push(TopicRow {
                head: r.try_get::<Option<i64>, _>(0)?.map(|s| s as Seq),
                retained: r.try_get::<Option<bool>, _>(1)?.unwrap_or(false),
                retained_seq: r.try_get::<Option<i64>, _>(2)?.map(|s| s as Seq),
                trimmed: r.try_get::<Option<i64>, _>(3)?.unwrap_or(0) as Seq,
                occupancy: r.try_get(4)?,
                topic,
            });
        }
        Ok(out)
    }
}
