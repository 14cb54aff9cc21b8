//! Culling: the background deletion of expired rows and the `max_entries` bound.

use std::sync::Weak;
use std::time::Duration;

use webcache_core::Result;

use crate::backend::{now_ms, Inner};
use crate::pool::{q, with_pool, Pool};

pub(crate) async fn cull_periodically(inner: Weak<Inner>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        // Holding only a weak reference between runs lets the cache be dropped.
        let Some(inner) = inner.upgrade() else { return };
        match inner.delete_expired().await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(table = %inner.table, "deleted {n} expired cache rows"),
            Err(e) => {
                tracing::warn!(table = %inner.table, error = &e as &dyn std::error::Error, "deleting expired cache rows failed")
            }
        }
    }
}

impl Inner {
    pub(crate) async fn delete_expired(&self) -> Result<u64> {
        let sql = q(&self.sql.delete_expired);
        with_pool!(&self.pool, p => sqlx::query(sql).bind(now_ms()).execute(p).await.map(|r| r.rows_affected()))
            .map_err(|e| self.error("deleting expired rows", e))
    }

    /// Culls before a write of `incoming` new rows (0 after a batch already written), as Django
    /// does: when the table holds more than `max_entries` rows, expired rows go, then
    /// 1/`cull_frequency` of the others, soonest expiry first (Django: first in key order), and
    /// at least enough that the table ends with at most `max_entries + 1` rows; with
    /// `cull_frequency = 0` the whole table goes. `kept` (the key being written) is never
    /// culled. A failure is logged, not returned: the write goes ahead.
    pub(crate) async fn make_room(&self, kept: &str, incoming: u64) {
        let Some(max) = self.max_entries else { return };
        if let Err(e) = self.cull(max, kept, incoming).await {
            tracing::warn!(table = %self.table, error = &e as &dyn std::error::Error, "culling the cache table failed");
        }
    }

    async fn cull(&self, max: u64, kept: &str, incoming: u64) -> Result<()> {
        let sql = q(&self.sql.count);
        let rows: i64 = with_pool!(&self.pool, p => sqlx::query_scalar(sql).fetch_one(p).await)
            .map_err(|e| self.error("counting rows", e))?;
        let rows = u64::try_from(rows).unwrap_or(0);
        // Django's trigger: more rows than the bound before this write (a single write into a
        // table of exactly `max_entries` rows does not cull).
        if rows.saturating_add(incoming) <= max.saturating_add(1) && rows <= max {
            return Ok(());
        }
        let culled = if self.cull_frequency == 0 {
            // As Django: the whole table goes, expired or not.
            let sql = q(&self.sql.cull_all);
            with_pool!(&self.pool, p => sqlx::query(sql).bind(kept).execute(p).await.map(|r| r.rows_affected()))
        } else {
            let remaining = rows.saturating_sub(self.delete_expired().await?);
            let needed = (remaining + incoming).saturating_sub(max.saturating_add(1));
            if remaining <= max && needed == 0 {
                return Ok(());
            }
            let count = (remaining / u64::from(self.cull_frequency)).max(needed);
            let sql = q(&self.sql.cull);
            let count = i64::try_from(count).unwrap_or(i64::MAX);
            with_pool!(&self.pool, p => sqlx::query(sql).bind(kept).bind(count).execute(p).await.map(|r| r.rows_affected()))
        }
        .map_err(|e| self.error("culling", e))?;
        tracing::debug!(table = %self.table, rows, culled, "culled the cache table");
        Ok(())
    }
}
