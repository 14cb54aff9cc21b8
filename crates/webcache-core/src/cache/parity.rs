//! Smaller django-redis parity on the typed API: `set` only if present (`xx`), `expire_at`,
//! `persist` and `delete_pattern`, on every backend. (django-redis's `iter_keys` is
//! [`Cache::keys`], already a stream.)

use std::time::SystemTime;

use futures::StreamExt;
use serde::Serialize;

use super::Cache;
use crate::error::Result;
use crate::timeout::Timeout;

/// How many keys [`Cache::delete_pattern`] removes per backend call.
const DELETE_BATCH: usize = 500;

impl Cache {
    /// Stores `value` under `key` only if the key holds a value (django-redis's
    /// `set(..., xx=True)`, Redis's `SET XX`); returns whether it stored it.
    ///
    /// Not atomic: the presence check and the write are two backend calls, so a key deleted
    /// (or expiring) between them is written anyway. Use it for "refresh what is cached", not
    /// as a lock.
    pub async fn set_if_present<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        timeout: impl Into<Timeout>,
    ) -> Result<bool> {
        if !self.has_key(key).await? {
            return Ok(false);
        }
        self.set(key, value, timeout).await?;
        Ok(true)
    }

    /// Makes `key` expire at `when` (django-redis's `expire_at`); returns `false` when the key
    /// is missing. A time already past removes the key now.
    pub async fn expire_at(&self, key: &str, when: SystemTime) -> Result<bool> {
        let left = when.duration_since(SystemTime::now()).unwrap_or_default();
        self.touch(key, Timeout::After(left)).await
    }

    /// Makes `key` never expire (django-redis's `persist`); returns `false` when the key is
    /// missing.
    pub async fn persist(&self, key: &str) -> Result<bool> {
        self.touch(key, Timeout::Forever).await
    }

    /// Removes every key of this cache's prefix and version that matches the glob `pattern`
    /// (django-redis's `delete_pattern`); returns how many were removed. Needs a backend that
    /// can list keys and the default key function, as [`keys`](Self::keys); keys of other
    /// versions and other prefixes are never touched.
    pub async fn delete_pattern(&self, pattern: &str) -> Result<u64> {
        let mut keys = self.keys(pattern).chunks(DELETE_BATCH);
        let mut removed = 0;
        while let Some(batch) = keys.next().await {
            let batch = batch.into_iter().collect::<Result<Vec<String>>>()?;
            removed += self.delete_many(&batch).await?;
        }
        Ok(removed)
    }
}
