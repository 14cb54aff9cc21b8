use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::{LocMemBackend, LocMemConfig};
use crate::backend::{Backend, BackendStats, KeyRules, KeyStream};
use crate::error::Result;
use crate::timeout::{Expiry, Ttl};

/// A process-local copy of a shared backend's hot entries, kept for a short time: reads that
/// hit it skip the network round trip (configured with `near_ttl=SECONDS` on any cache URL).
///
/// Trade-off, by design: a value written or deleted by *another* process may be read here up to
/// `near_ttl` later. This process's own writes, deletes, `incr` and `touch` update or drop its
/// local copy at once, so it always reads its own writes. Expiry, TTLs, key listing and stats
/// come from the shared backend.
#[derive(Debug)]
pub struct NearCache {
    near: LocMemBackend,
    far: Arc<dyn Backend>,
    ttl: Duration,
}

/// Entries kept locally when `near_max_entries` is not given.
pub const DEFAULT_NEAR_MAX_ENTRIES: u64 = 10_000;

impl NearCache {
    /// Local copies of `far`'s entries, each kept at most `ttl`, at most `max_entries` of them.
    pub fn new(far: Arc<dyn Backend>, ttl: Duration, max_entries: u64) -> Self {
        NearCache {
            near: LocMemBackend::private(LocMemConfig {
                max_entries: Some(max_entries),
                // Copies are cheap to lose: evict one at a time rather than Django's third.
                cull_frequency: u32::MAX,
                ..LocMemConfig::default()
            }),
            far,
            ttl,
        }
    }

    /// This process's copy of `key`, if it has a live one (served while the shared backend's
    /// circuit breaker is open).
    pub(crate) fn local_copy(&self, key: &str) -> Option<Bytes> {
        self.near.get_now(key)
    }

    /// The shared backend behind the local copies.
    pub fn far(&self) -> &Arc<dyn Backend> {
        &self.far
    }

    /// The local expiry for a value the shared backend keeps for `expiry`.
    fn local(&self, expiry: Expiry) -> Expiry {
        match expiry {
            Expiry::After(d) if d < self.ttl => Expiry::After(d),
            _ => Expiry::After(self.ttl),
        }
    }

    async fn remember(&self, key: &str, value: Bytes, expiry: Expiry) {
        // The local copy is an optimisation: locmem cannot fail, and if it could, the shared
        // backend would still hold the truth.
        let _ = self.near.set(key, value, self.local(expiry)).await;
    }

    async fn forget(&self, key: &str) {
        let _ = self.near.delete(key).await;
    }
}

#[async_trait]
impl Backend for NearCache {
    fn name(&self) -> &'static str {
        self.far.name()
    }

    fn inner(&self) -> Option<&dyn Backend> {
        Some(&*self.far)
    }

    fn key_rules(&self) -> KeyRules {
        self.far.key_rules()
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        if let Some(value) = self.near.get(key).await? {
            return Ok(Some(value));
        }
        let value = self.far.get(key).await?;
        if let Some(value) = &value {
            self.remember(key, value.clone(), Expiry::After(self.ttl))
                .await;
        }
        Ok(value)
    }

    async fn set(&self, key: &str, value: Bytes, expiry: Expiry) -> Result<()> {
        // Drop the local copy first: if the shared write fails, no stale copy survives it.
        self.forget(key).await;
        self.far.set(key, value.clone(), expiry).await?;
        self.remember(key, value, expiry).await;
        Ok(())
    }

    async fn add(&self, key: &str, value: Bytes, expiry: Expiry) -> Result<bool> {
        let added = self.far.add(key, value.clone(), expiry).await?;
        if added {
            self.remember(key, value, expiry).await;
        } else {
            // Someone else's value won: read it from the shared backend next time.
            self.forget(key).await;
        }
        Ok(added)
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        self.forget(key).await;
        self.far.delete(key).await
    }

    async fn touch(&self, key: &str, expiry: Expiry) -> Result<bool> {
        self.forget(key).await;
        self.far.touch(key, expiry).await
    }

    async fn incr(&self, key: &str, delta: i64) -> Result<i64> {
        self.forget(key).await;
        self.far.incr(key, delta).await
    }

    async fn ttl(&self, key: &str) -> Result<Ttl> {
        self.far.ttl(key).await
    }

    async fn clear(&self, prefix: Option<&str>) -> Result<()> {
        self.near.clear(prefix).await?;
        self.far.clear(prefix).await
    }

    fn scan(&self, pattern: &str) -> KeyStream {
        self.far.scan(pattern)
    }

    async fn stats(&self) -> Result<BackendStats> {
        let mut stats = self.far.stats().await?;
        let near = self.near.stats().await?;
        stats.extra.push((
            "near_entries".to_owned(),
            near.entries.unwrap_or_default().to_string(),
        ));
        stats
            .extra
            .push(("near_ttl".to_owned(), format!("{:?}", self.ttl)));
        Ok(stats)
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Bytes>>> {
        let mut values = self.near.get_many(keys).await?;
        let missing: Vec<String> = keys
            .iter()
            .zip(&values)
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| k.clone())
            .collect();
        if missing.is_empty() {
            return Ok(values);
        }
        let mut fetched = self.far.get_many(&missing).await?.into_iter();
        for (slot, key) in values.iter_mut().zip(keys) {
            if slot.is_none() {
                *slot = fetched.next().flatten();
                if let Some(value) = slot {
                    self.remember(key, value.clone(), Expiry::After(self.ttl))
                        .await;
                }
            }
        }
        Ok(values)
    }

    async fn set_many(&self, entries: Vec<(String, Bytes)>, expiry: Expiry) -> Result<()> {
        for (key, _) in &entries {
            self.forget(key).await;
        }
        self.far.set_many(entries.clone(), expiry).await?;
        for (key, value) in entries {
            self.remember(&key, value, expiry).await;
        }
        Ok(())
    }

    async fn delete_many(&self, keys: &[String]) -> Result<u64> {
        for key in keys {
            self.forget(key).await;
        }
        self.far.delete_many(keys).await
    }

    async fn has_key(&self, key: &str) -> Result<bool> {
        if self.near.has_key(key).await? {
            return Ok(true);
        }
        self.far.has_key(key).await
    }

    async fn close(&self) -> Result<()> {
        self.far.close().await
    }
}
